"""Does a trained RGPT read object presence from its image tokens?

POPE asks "Is there a <object> in the image?" about one image at a time. This scores POPE's
questions (the twin's random split, as `rgpt eval pope` asks them) twice: with each question's own
image, and with the image of the question `--shift` places later in the file (another image, whose
objects differ). Printed: accuracy and yes-ratio of the generated answers, and the right answer's
loss (teacher-forced, nats per token) with both images; their difference is the image reliance (0:
the answer does not depend on the image at all).

    python experiments/presence_reliance.py --model models/stage2 --questions 300

Measured on 2 CPU cores (300 random questions, 150 "yes"; ~80 s):

    stage 2 of                                   own image: accuracy  yes-ratio   image reliance
    be39512 (presence after classification)                 0.500      1.000         0.000
    branch presence-apart (a conversation of their own)     0.497      0.003         0.000
    the branch's data, from be39512's stage 1               0.503      0.083         0.000

Neither reads its image: the answer's loss is the same with another image's tokens.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from statistics import fmean

import torch
from PIL import Image

from rgpt.config import load_params
from rgpt.data import layout
from rgpt.data.pope import read_pope
from rgpt.data.templates import IMAGE, load_templates
from rgpt.eval.pope import pope_metrics
from rgpt.model.inference import Request, answer, answer_losses
from rgpt.model.modeling_rgpt import RGPTForConditionalGeneration
from rgpt.model.processing_rgpt import RGPTProcessor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/stage2"))
    parser.add_argument("--split", choices=layout.POPE_SPLITS, default="random")
    parser.add_argument("--questions", type=int, default=300, help="the first N of the split's file")
    parser.add_argument("--shift", type=int, default=7, help="the other image: the question this many later's")
    args = parser.parse_args()
    root = Path(load_params().data.root)
    torch.set_num_threads(2)
    model = RGPTForConditionalGeneration.from_pretrained(args.model).eval()
    processor = RGPTProcessor.from_pretrained(args.model)
    questions = read_pope(root / layout.POPE_QUESTIONS[args.split])[:args.questions]
    suffix = load_templates().prompts.short_answer
    images = []
    for q in questions:
        with Image.open(root / layout.COCO2014_IMAGE_DIRS["val"] / q["image"]) as image:
            images.append(image.convert("RGB"))
    asked = [Request(image, [(f"{IMAGE}\n{q['text']}\n{suffix}", None)]) for q, image in zip(questions, images)]
    other = [replace(r, image=images[(i + args.shift) % len(images)]) for i, r in enumerate(asked)]
    labels = [q["label"] for q in questions]
    right = lambda requests: [replace(r, turns=[(r.turns[0][0], q["label"].capitalize())])  # noqa: E731
                              for r, q in zip(requests, questions)]
    print(f"{len(questions)} {args.split} questions, {sum(label == 'yes' for label in labels)} with answer yes")
    losses = {}
    for name, requests in (("own image", asked), ("another image", other)):
        predictions = answer(model, processor, requests, max_new_tokens=4)
        figures = pope_metrics(predictions, labels)
        losses[name] = answer_losses(model, processor, right(requests))
        print(f"{name:>14}: accuracy {figures['accuracy']:.3f}, yes-ratio {figures['yes_ratio']:.3f}, "
              f"right answer's loss {fmean(losses[name]):.3f} "
              f"(yes questions {fmean(l for l, y in zip(losses[name], labels) if y == 'yes'):.3f}, "
              f"no questions {fmean(l for l, y in zip(losses[name], labels) if y == 'no'):.3f})")
    reliance = fmean(b - a for a, b in zip(losses["own image"], losses["another image"]))
    print(f"image reliance: {reliance:.3f} nats (another image's loss minus the own image's)")


if __name__ == "__main__":
    main()
