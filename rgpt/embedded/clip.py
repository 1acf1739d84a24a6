"""The embedded profile's small CLIP, trained from scratch region by region on whole images.

RGPT pools each region's feature from the frozen tower's patch map of the whole image, so this
CLIP is trained the same way (RegionCLIP-style): each region's mask-pooled patch feature against
the text that names it (its category name or a phrase), every category name a negative in every
batch. `train_clip` trains it, `zero_shot_accuracy` scores it on held-out regions, and `train_base_clip`
is the recipe the base_clip stage runs (`base_models.source: train`).
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig, PreTrainedTokenizerBase

from ..clip_features import region_features, text_features
from ..config import BaseModelsParams, ClipParams
from ..data.conversations import category_answer
from ..data.records import DatasetSplit, ImageRecord, Region, read_jsonl
from ..model.processing_rgpt import region_masks
from .optim import adamw_cosine, seed_everything, step
from .tokenizer import CLIP_TEXT_LENGTH, clip_tokenizer

log = logging.getLogger(__name__)

CLIP_TRAIN_SPLITS = ("v3det_train", "coco_train", "lvis_train", "vg_train")
ZERO_SHOT_SPLIT = "v3det_val"  # held-out regions, classified among all of V3Det's category names


@dataclass
class RegionImage:
    """An image and its regions, each with the texts that name it: CLIP's training examples."""

    image: Image.Image
    masks: torch.Tensor  # (R, S, S): each region on the tower's square input canvas (`region_masks`)
    texts: list[list[str]]  # per region: its category name, or its phrases


def region_texts(record: ImageRecord) -> list[tuple[Region, list[str]]]:
    """The record's regions with the texts that name them: the category name (LVIS's underscores as
    spaces) or the non-empty phrases. Crowd regions are skipped: their box holds several objects."""
    out = []
    for region in record.regions:
        if not region.iscrowd:
            texts = [category_answer(region, record)] if region.category else [p.strip() for p in region.phrases]
            if texts := [t for t in texts if t]:
                out.append((region, texts))
    return out


def region_images(splits: Iterable[DatasetSplit], data_root: Path, size: int) -> list[RegionImage]:
    """Every image of the splits that has a named region, with its regions' masks at `size`."""
    examples = []
    for split in splits:
        for record in split.records:
            named = region_texts(record)
            if not named:
                continue
            path = data_root / record.file_name
            if not path.exists():
                raise FileNotFoundError(f"{path} not found: the validated splits name images under "
                                        f"{data_root}; is data.root right and the corpus written?")
            masks = region_masks([{"box": r.box, "segmentation": r.segmentation} for r, _ in named],
                                 record.width, record.height, size)
            examples.append(RegionImage(Image.open(path).convert("RGB"), masks, [texts for _, texts in named]))
    return examples


def category_names(splits: Iterable[DatasetSplit]) -> list[str]:
    """The distinct category names of the splits' regions, as `region_texts` writes them."""
    return sorted({category_answer(region, record) for split in splits for record in split.records
                   for region in record.regions if region.category})


def clip_texts(splits: Iterable[DatasetSplit]) -> list[str]:
    """Every text the CLIP learns from the splits' regions (`region_texts`), one per occurrence."""
    return [text for split in splits for record in split.records for _, texts in region_texts(record)
            for text in texts]


def clip_config(params: ClipParams, tokenizer: PreTrainedTokenizerBase) -> CLIPConfig:
    vision = CLIPVisionConfig(image_size=params.image_size, patch_size=params.patch_size,
                              hidden_size=params.hidden_size, intermediate_size=4 * params.hidden_size,
                              num_hidden_layers=params.num_layers, num_attention_heads=params.num_heads)
    text = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=params.text_hidden_size,
                          intermediate_size=4 * params.text_hidden_size, num_hidden_layers=params.text_layers,
                          num_attention_heads=max(1, params.text_hidden_size // 64),
                          max_position_embeddings=CLIP_TEXT_LENGTH, pad_token_id=tokenizer.pad_token_id,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                      projection_dim=params.projection_dim)


def contrastive_loss(logits_per_image: torch.Tensor, text_index: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric loss over a batch's distinct texts, some of which may be shared or unmatched.

    logits_per_image: (B, U) each image against U distinct texts; text_index: (B,) the column of
    each image's own text. An image has one right text; a text is right for all of its images, so
    its target spreads evenly over them; a text no image of the batch has is only a negative.
    With one distinct text per image this is CLIP's loss exactly.
    """
    image_loss = F.cross_entropy(logits_per_image, text_index)
    targets = F.one_hot(text_index, logits_per_image.shape[1]).T.float()  # (U, B)
    matched = targets.sum(dim=1) > 0
    targets = targets[matched] / targets[matched].sum(dim=1, keepdim=True)
    text_loss = -(targets * logits_per_image.T[matched].log_softmax(dim=1)).sum(dim=1).mean()
    return (image_loss + text_loss) / 2


def clip_batch(model: CLIPModel, tokenizer: PreTrainedTokenizerBase, examples: Sequence[RegionImage],
               texts: Sequence[str], layer: int, negatives: Sequence[str] = ()) -> torch.Tensor:
    """The contrastive loss of one batch: each region (in order) against its text, `negatives`
    added to the batch's texts."""
    distinct = sorted(set(texts) | set(negatives))
    column = {text: i for i, text in enumerate(distinct)}
    image = F.normalize(region_features(model, [e.image for e in examples], [e.masks for e in examples], layer),
                        dim=-1)
    text = F.normalize(text_features(model, tokenizer, distinct), dim=-1)
    logits = model.logit_scale.exp() * image @ text.T
    return contrastive_loss(logits, torch.tensor([column[t] for t in texts]))


def train_clip(examples: Sequence[RegionImage], tokenizer: PreTrainedTokenizerBase, params: ClipParams, seed: int,
               *, layer: int = -1, negatives: Sequence[str] = (),
               progress: bool = True) -> tuple[CLIPModel, dict[str, Any]]:
    """A CLIP trained from scratch on whole images, region by region; returns it and its figures.

    RGPT pools each region's feature from the tower's patch map of the whole image, and its tower
    is frozen: so this CLIP is trained the same way (RegionCLIP-style), each region's mask-pooled
    feature at hidden layer `layer` against the text that names it. Trained on crops instead, a
    small tower learns nothing about objects a couple of patches wide, which is what the regions
    of whole images are. `tokenizer` is the CLIP text tokenizer (`clip_text_tokenizer`); each step
    draws one of a region's texts. `negatives` join every batch's texts: the category names, so
    that each region is told apart from every category, not only from the few in its batch.
    """
    if len(examples) < 2:
        raise ValueError(f"CLIP needs at least 2 images with named regions, got {len(examples)}")
    seed_everything(seed)
    model = CLIPModel(clip_config(params, tokenizer))
    batches_per_epoch = math.ceil(len(examples) / params.batch_size)
    optimizer, scheduler = adamw_cosine(model, params.learning_rate, params.epochs * batches_per_epoch)
    order, draw = torch.Generator().manual_seed(seed), random.Random(seed)
    losses = []
    model.train()
    with tqdm(total=params.epochs * batches_per_epoch, desc="clip", disable=not progress) as bar:
        for _ in range(params.epochs):
            for batch in torch.randperm(len(examples), generator=order).split(params.batch_size):
                chosen = [examples[i] for i in batch]
                texts = [draw.choice(options) for e in chosen for options in e.texts]
                loss = clip_batch(model, tokenizer, chosen, texts, layer, negatives)
                step(model, loss, optimizer, scheduler)
                with torch.no_grad():  # CLIP's cap on the temperature: logits at most 100x the cosines
                    model.logit_scale.clamp_(0, math.log(100))
                losses.append(loss.item())
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return model, {"images": len(examples), "regions": sum(len(e.texts) for e in examples),
                   "distinct_texts": len({t for e in examples for texts in e.texts for t in texts}),
                   "steps": len(losses), "first_loss": losses[0],
                   "last_epoch_loss": float(np.mean(losses[-batches_per_epoch:]))}


@torch.no_grad()
def zero_shot_predictions(model: CLIPModel, tokenizer: PreTrainedTokenizerBase, examples: Sequence[RegionImage],
                          names: Sequence[str], layer: int = -1, batch_size: int = 64) -> list[str]:
    """The most similar name, among `names`, for each region of `examples`, in order."""
    text = F.normalize(text_features(model, tokenizer, names), dim=-1)  # (K, P)
    predicted = []
    for start in range(0, len(examples), batch_size):
        batch = examples[start:start + batch_size]
        image = F.normalize(region_features(model, [e.image for e in batch], [e.masks for e in batch], layer),
                            dim=-1)  # (R, P)
        predicted += [names[i] for i in (image @ text.T).argmax(dim=1).tolist()]
    return predicted


def zero_shot_accuracy(model: CLIPModel, tokenizer: PreTrainedTokenizerBase, examples: Sequence[RegionImage],
                       names: Sequence[str], layer: int = -1) -> float:
    """Share of regions whose most similar name, among `names`, is their own (their first text)."""
    labels = [texts[0] for e in examples for texts in e.texts]
    unknown = sorted(set(labels) - set(names))
    if unknown:
        raise ValueError(f"labels {unknown[:5]} are not among the {len(names)} class names")
    predicted = zero_shot_predictions(model, tokenizer, examples, names, layer)
    return float(np.mean([p == label for p, label in zip(predicted, labels)]))


def train_base_clip(params: BaseModelsParams, out_dir: Path, *, data_root: Path, validated: Path,
                    captions: Path | None = None, feature_layer: int = -1, progress: bool = True) -> dict[str, Any]:
    """Train the CLIP's tokenizer and the CLIP on the validated regions; save both; return the
    figures. CLIP aligns the regions pooled from its hidden layer `feature_layer`, the one RGPT reads."""
    started = time.perf_counter()
    splits = [DatasetSplit.load(validated, name) for name in CLIP_TRAIN_SPLITS]
    heldout = DatasetSplit.load(validated, ZERO_SHOT_SPLIT)
    names = [heldout.categories[k] for k in sorted(heldout.categories)]
    descriptions = [row["caption"] for row in read_jsonl(captions) if row.get("caption")] if captions else []
    text_tokenizer = clip_tokenizer(clip_texts(splits) + names, descriptions, params.clip.vocab_size)
    size = params.clip.image_size
    clip, figures = train_clip(region_images(splits, data_root, size), text_tokenizer, params.clip, params.seed,
                               layer=feature_layer, negatives=category_names(splits), progress=progress)
    examples = region_images([heldout], data_root, size)
    figures["zero_shot_accuracy"] = zero_shot_accuracy(clip, text_tokenizer, examples, names, feature_layer)
    figures["zero_shot_regions"], figures["zero_shot_classes"] = sum(len(e.texts) for e in examples), len(names)
    figures["vocab_size"], figures["tokenizer_descriptions"] = len(text_tokenizer), len(descriptions)
    clip.save_pretrained(out_dir)
    text_tokenizer.save_pretrained(out_dir)
    log.info("clip: zero-shot accuracy %.3f on %s, in %.0f s", figures["zero_shot_accuracy"], ZERO_SHOT_SPLIT,
             time.perf_counter() - started)
    return figures
