"""The base CLIP's zero-shot region classification on COCO val, with its colour and its shape.

base_clip reports its zero-shot accuracy on V3Det val (long-tailed, 120 names). The embedded
corpus's COCO names are "<colour> <shape>" (8 colours x 10 shapes, balanced), which splits a miss
into the part the tower got wrong: RGPT can name no more shapes than its frozen tower holds
(docs/findings.md). Regions are mask-pooled from the whole image at the
CLIP's feature layer, as RGPT and base_clip see them.

    python experiments/clip_zero_shot.py [--clip base_models/clip]
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import torch
from transformers import AutoTokenizer, CLIPModel

from rgpt.config import load_params
from rgpt.data.records import DatasetSplit
from rgpt.data.stages import VALIDATED
from rgpt.embedded.clip import region_images, zero_shot_predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, default=Path("base_models/clip"))
    parser.add_argument("--split", default="coco_val")
    args = parser.parse_args()
    params = load_params()
    torch.set_num_threads(2)
    model = CLIPModel.from_pretrained(args.clip).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.clip)
    split = DatasetSplit.load(VALIDATED, args.split)
    names = [split.categories[k] for k in sorted(split.categories)]
    examples = region_images([split], Path(params.data.root), params.base_models.clip.image_size)
    layer = params.model.vision_feature_layer
    predicted = zero_shot_predictions(model, tokenizer, examples, names, layer)
    labels = [texts[0] for e in examples for texts in e.texts]
    share = lambda right: sum(right) / len(labels)  # noqa: E731
    print(f"{args.split}: {len(labels)} regions, {len(names)} names")
    print(f"exact  {share(p == t for p, t in zip(predicted, labels)):.3f}")
    print(f"colour {share(p.split()[0] == t.split()[0] for p, t in zip(predicted, labels)):.3f}")
    print(f"shape  {share(p.split()[-1] == t.split()[-1] for p, t in zip(predicted, labels)):.3f}")
    confused = Counter(tuple(sorted((p.split()[-1], t.split()[-1]))) for p, t in zip(predicted, labels)
                       if p.split()[-1] != t.split()[-1])
    print("shapes confused most:", ", ".join(f"{a} <-> {b} ({n})" for (a, b), n in confused.most_common(3)))


if __name__ == "__main__":
    main()
