"""clip_filter scoring throughput against a raw CLIP forward on the same batches.

A self-made CLIP the size of the embedded one (ViT 96 px / 12-px patches, 3 layers of 128; text
tower 3 layers of 128; random weights: speed does not depend on what it learnt) scores synthetic
RecapD-like captions (~95 words, 7 sentences) of regions on small images, the way the stage does
(`ClipScorer.score`: sentence chunks within the 77-token window, tokenising, pre-processing,
pooling or cropping, cosines). The baseline is the bare forward passes of the same batches with
everything prepared up front: the vision tower on the batch's pixel values and the text tower on
its chunks' token ids. "x raw" is the filter's time over the baseline's: what chunking,
tokenising and pre-processing add. "truncated" scores each caption as one text cut at 77 tokens
(what a filter that ignores the window does): the price of reading every word. Before timing,
every batch's filter scores must equal the cosines made from the baseline's own forwards (pooled
region by region in a plain loop), or the script fails.

    python benchmarks/clip_filter_bench.py [--captions 128 --batch 32 128 --repeats 3 --threads 1]
"""

from __future__ import annotations

import argparse
import platform
import random
import time

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from transformers import CLIPModel

from rgpt.clip_features import text_features
from rgpt.config import ClipParams
from rgpt.embedded.clip import clip_config
from rgpt.embedded.tokenizer import CLIP_TEXT_LENGTH, clip_text_tokenizer, train_tokenizer
from rgpt.model import regions
from rgpt.model.image import to_pixel_values
from rgpt.model.processing_rgpt import region_masks
from rgpt.recap.clip_filter import ClipScorer
from rgpt.recap.images import crop_region

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "pink", "cyan", "white", "grey"]
SHAPES = ["circle", "square", "triangle", "star", "hexagon", "arrow"]


def caption(rng: random.Random) -> str:
    """~95 words in 7 sentences, like the stand-in's region captions."""
    colour, shape, other = rng.choice(COLOURS), rng.choice(SHAPES), f"{rng.choice(COLOURS)} {rng.choice(SHAPES)}"
    return " ".join([
        f"The close-up region shows a medium {colour} {shape} on the left of the image.",
        "This fits the overall scene, where the image shows three objects painted on a grey background.",
        f"Its surface is a flat, evenly painted {colour} with only faint variations in shade.",
        f"It spans roughly {rng.randint(10, 60)} percent of the image's width, which makes it look medium here.",
        f"It is to the left of the {other}, which lies on the right of the picture.",
        f"The {colour} colour stands out clearly against the grey background around it.",
        f"Overall, the {colour} {shape} is clearly defined and easy to recognise."])


def corpus(n: int, seed: int = 0) -> tuple[list[Image.Image], list[list[float]], list[str]]:
    """n regions, two per image, on 96-160 px images."""
    rng = random.Random(seed)
    images, boxes, texts = [], [], []
    for i in range(0, n, 2):
        w, h = rng.randint(96, 160), rng.randint(96, 160)
        image = Image.new("RGB", (w, h), (128, 128, 128))
        draw = ImageDraw.Draw(image)
        for _ in range(min(2, n - i)):
            x, y, s = rng.randint(0, w - 30), rng.randint(0, h - 30), rng.randint(12, 30)
            draw.ellipse([x, y, x + s, y + s], fill=tuple(rng.randint(0, 255) for _ in range(3)))
            images.append(image)
            boxes.append([x, y, s, s])
            texts.append(caption(rng))
    return images, boxes, texts


def tiny_clip() -> tuple[torch.nn.Module, object]:
    texts = [f" {c} {s}" for c in COLOURS for s in SHAPES] + [caption(random.Random(i)) for i in range(50)]
    tokenizer = clip_text_tokenizer(train_tokenizer(texts, 2048, CLIP_TEXT_LENGTH))
    torch.manual_seed(0)
    model = CLIPModel(clip_config(ClipParams(), tokenizer)).eval()
    return model, tokenizer


def best_of_rounds(repeats: int, methods: dict) -> dict[str, float]:
    """Each method's best time over `repeats` rounds; a round runs every method once, so load from
    other work on the machine lands on all of them alike."""
    best = {name: float("inf") for name in methods}
    for _ in range(repeats):
        for name, run in methods.items():
            started = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captions", type=int, default=128)
    parser.add_argument("--batch", type=int, nargs="+", default=[32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = tiny_clip()
    images, boxes, texts = corpus(args.captions)
    size = model.config.vision_config.image_size
    print(f"CLIP ViT {size} px / {model.config.vision_config.patch_size} px patches, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params; {args.captions} captions "
          f"(~{sum(len(t.split()) for t in texts) / len(texts):.0f} words), 2 regions per image; "
          f"cpu, {args.threads} threads, best of {args.repeats}; Python {platform.python_version()}, "
          f"torch {torch.__version__}")
    print(f"{'mode':<6} {'batch':>5} {'method':<22} {'time s':>7} {'captions/s':>11} {'x raw':>6}")
    for mode in ("mask", "crop"):
        scorer = ClipScorer(model, tokenizer, region_input=mode, context=0.0)
        for batch in args.batch:
            spans = [range(s, min(s + batch, len(texts))) for s in range(0, len(texts), batch)]
            prepared = [prepare(scorer, images, boxes, texts, span, mode) for span in spans]
            for span, (pixels, tokens) in zip(spans, prepared):  # same scores, before anything is timed
                ours, _ = scorer.score([images[i] for i in span], [boxes[i] for i in span], [texts[i] for i in span])
                expected = forward_scores(scorer, images, boxes, texts, span, mode, pixels, tokens)
                torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5, msg=lambda m, mode=mode, span=span: (
                    f"{mode} mode, captions {span.start}-{span.stop - 1}: clip_filter's scores are not the raw "
                    f"forward's:\n{m}"))

            @torch.no_grad()
            def raw():  # the two towers' forwards only, on inputs made in advance
                for pixels, tokens in prepared:
                    model.vision_model(pixel_values=pixels)
                    model.get_text_features(**tokens)

            def filtered():
                for span in spans:
                    scorer.score([images[i] for i in span], [boxes[i] for i in span], [texts[i] for i in span])

            @torch.no_grad()
            def truncated():  # one text per caption, cut at 77 tokens: the tail never read
                for span in spans:
                    region = scorer.region_embeddings([images[i] for i in span], [boxes[i] for i in span])
                    text = F.normalize(text_features(model, tokenizer, [texts[i] for i in span]), dim=-1)
                    (region * text).sum(-1)

            methods = {"raw CLIP forward": raw, "clip_filter (ours)": filtered, "truncated to 77 tokens": truncated}
            seconds = best_of_rounds(args.repeats, methods)
            for name in methods:
                print(f"{mode:<6} {batch:>5} {name:<22} {seconds[name]:>7.3f} {len(texts) / seconds[name]:>11.1f} "
                      f"{seconds[name] / seconds['raw CLIP forward']:>6.2f}")


def prepare(scorer: ClipScorer, images, boxes, texts, span, mode: str):
    """A batch's pixel values (its distinct images, or its crops) and its chunks' token ids."""
    size = scorer.model.config.vision_config.image_size
    if mode == "crop":
        pictures = [crop_region(images[i], boxes[i], scorer.context) for i in span]
    else:
        pictures = list({id(images[i]): images[i] for i in span}.values())
    chunks = [c for i in span for c in scorer.chunks(texts[i])]
    tokens = scorer.tokenizer(chunks, padding=True, return_tensors="pt")
    return to_pixel_values(pictures, size), tokens


def tower_output(out) -> torch.Tensor:
    return getattr(out, "pooler_output", out)  # transformers versions differ: a tensor or an output


@torch.no_grad()
def forward_scores(scorer: ClipScorer, images, boxes, texts, span, mode: str, pixels, tokens) -> torch.Tensor:
    """(C,) every chunk's cosine with its region, from the baseline's forwards on `prepare`'s inputs:
    the crop's embedding, or (mask mode) the last layer's patch features averaged under the region's
    box one region at a time, then CLIP's final norm and projection. What `ClipScorer.score` must give."""
    model = scorer.model
    vision = model.vision_model(pixel_values=pixels)
    text = F.normalize(tower_output(model.get_text_features(**tokens)), dim=-1)  # (C, P)
    if mode == "crop":
        region = model.visual_projection(vision.pooler_output)  # (N, P), a crop per region
    else:
        size, patch = model.config.vision_config.image_size, model.config.vision_config.patch_size
        patches = vision.last_hidden_state[:, 1:]  # (B, g * g, D): the scorer's layer, -1
        distinct = list({id(images[i]): None for i in span})  # prepare's image order
        pooled = []
        for i in span:
            weight = regions.resize(region_masks([{"box": list(boxes[i])}], *images[i].size, size),
                                    size // patch).flatten()  # (g * g,)
            pooled.append((patches[distinct.index(id(images[i]))] * weight[:, None]).sum(0) / weight.sum())
        region = model.visual_projection(model.vision_model.post_layernorm(torch.stack(pooled)))
    region = F.normalize(region, dim=-1)
    caption = [k for k, i in enumerate(span) for _ in scorer.chunks(texts[i])]  # (C,) each chunk's caption
    return torch.stack([text[j] @ region[k] for j, k in enumerate(caption)])


if __name__ == "__main__":
    main()
