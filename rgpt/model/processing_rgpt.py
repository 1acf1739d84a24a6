"""Turn conversations, images and regions into RGPT's inputs.

One template (Vicuna v1, as LLaVA-1.5 and RGPT use) and one way to build labels: the prompt is
tokenized piece by piece — the system text and each question up to "ASSISTANT:" carry no loss,
each answer and its `</s>` do — so label masking is exact by construction, not recovered by
searching separators afterwards. `<image>` becomes `num_image_tokens` image-token ids; each
`<region>` stays one token and gets one mask, in order.

Images are padded to a square (centred on the mean colour) and resized to the tower's size;
region masks follow the same mapping, so a mask lands on the pixels of its object.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from ..data import masks as mask_codec
from ..data.templates import IMAGE, REGION
from .image import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, to_pixel_values
from .modeling_rgpt import IGNORE_INDEX

SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")
PROCESSOR_CONFIG = "processor_config.json"


@dataclass(frozen=True)
class ProcessorConfig:
    image_size: int
    num_image_tokens: int
    max_length: int = 512
    image_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    image_std: tuple[float, float, float] = OPENAI_CLIP_STD


def question_text(question: str, first: bool) -> str:
    """The prompt piece before an answer: 'SYSTEM USER: q ASSISTANT:' (then 'USER: q ASSISTANT:')."""
    return f"{SYSTEM} USER: {question} ASSISTANT:" if first else f"USER: {question} ASSISTANT:"


def region_masks(regions: list[dict[str, Any]], width: int, height: int, size: int) -> torch.Tensor:
    """(R, S, S) float masks at the input resolution: each region's mask (or its box, when it
    has no segmentation) placed on the same square canvas as the image, then resized by area."""
    side = max(width, height)
    out = torch.zeros(len(regions), size, size)
    if not regions:
        return out
    canvas = torch.zeros(len(regions), side, side)
    x0, y0 = (side - width) // 2, (side - height) // 2
    for i, region in enumerate(regions):
        if region.get("segmentation") is not None:
            mask = mask_codec.decode(region["segmentation"], height, width)
        else:
            mask = mask_codec.box_to_mask(region["box"], height, width)
        canvas[i, y0:y0 + height, x0:x0 + width] = torch.from_numpy(mask.astype(np.float32))
    mode = "area" if side >= size else "nearest"
    return F.interpolate(canvas[:, None], size=(size, size), mode=mode)[:, 0]


class RGPTProcessor:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: ProcessorConfig):
        for token in (IMAGE, REGION):
            if token not in tokenizer.get_vocab():
                raise ValueError(f"the tokenizer has no {token} token; add it as a special token first")
        if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer needs an eos and a pad token")
        self.tokenizer = tokenizer
        self.config = config
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE)
        self.region_token_id = tokenizer.convert_tokens_to_ids(REGION)

    # ----------------------------------------------------------------------------------- text

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode(self, turns: list[tuple[str, str | None]]) -> tuple[list[int], list[int]]:
        """input_ids and labels of a conversation; a last answer of None leaves the prompt open.

        Turns that do not fit in `max_length` are dropped from the end (never half a question, so
        placeholders and regions stay paired); the first turn's answer is cut if it alone is too long.
        """
        ids: list[int] = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        labels: list[int] = [IGNORE_INDEX] * len(ids)
        for t, (question, answer) in enumerate(turns):
            q = self._expand_image(self._ids(question_text(question, first=t == 0)))
            a = [] if answer is None else self._ids(f" {answer}") + [self.tokenizer.eos_token_id]
            if len(ids) + len(q) + len(a) > self.config.max_length:
                if t > 0:
                    break
                if len(ids) + len(q) >= self.config.max_length:
                    raise ValueError(f"the first question alone is {len(ids) + len(q)} tokens, more than "
                                     f"max_length {self.config.max_length}")
                a = a[: self.config.max_length - len(ids) - len(q)]
            ids += q + a
            labels += [IGNORE_INDEX] * len(q) + a
        return ids, labels

    def _expand_image(self, ids: list[int]) -> list[int]:
        out = []
        for i in ids:
            out += [i] * self.config.num_image_tokens if i == self.image_token_id else [i]
        return out

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    # -------------------------------------------------------------------------- image, regions

    def pixel_values(self, image: Image.Image) -> torch.Tensor:
        """(3, S, S): padded to a square on the mean colour, resized, normalised."""
        return to_pixel_values([image.convert("RGB")], self.config.image_size, self.config.image_mean,
                               self.config.image_std)[0]

    def region_masks(self, regions: list[dict[str, Any]], width: int, height: int) -> torch.Tensor:
        return region_masks(regions, width, height, self.config.image_size)

    # ------------------------------------------------------------------------------- samples

    def __call__(self, turns: list[tuple[str, str | None]], image: Image.Image | None,
                 regions: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """One example: input_ids, labels, pixel_values and the masks of the regions it kept."""
        ids, labels = self.encode(turns)
        kept = ids.count(self.region_token_id)
        if image is None and (kept or self.image_token_id in ids):
            raise ValueError(f"the conversation has {IMAGE}/{REGION} tokens but no image")
        if kept > len(regions):
            raise ValueError(f"the conversation has {kept} {REGION} tokens but only {len(regions)} regions")
        example = {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels)}
        if image is not None:
            example["pixel_values"] = self.pixel_values(image)
            example["region_masks"] = self.region_masks(regions[:kept], *image.size)
        return example

    def collate(self, examples: list[dict[str, torch.Tensor]], padding_side: str = "right") -> dict[str, torch.Tensor]:
        """Pad a batch (right for training, left for generation) and gather images and regions."""
        length = max(len(e["input_ids"]) for e in examples)
        input_ids = torch.full((len(examples), length), self.tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
        for i, e in enumerate(examples):
            n = len(e["input_ids"])
            span = slice(0, n) if padding_side == "right" else slice(length - n, length)
            input_ids[i, span], labels[i, span], attention_mask[i, span] = e["input_ids"], e["labels"], 1
        batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
        if any("pixel_values" in e for e in examples):
            blank = torch.zeros(3, self.config.image_size, self.config.image_size)  # text-only rows
            batch["pixel_values"] = torch.stack([e.get("pixel_values", blank) for e in examples])
            masks = [e.get("region_masks", torch.zeros(0, self.config.image_size, self.config.image_size))
                     for e in examples]
            batch["region_masks"] = torch.cat(masks)
            batch["region_image_index"] = torch.repeat_interleave(
                torch.arange(len(examples)), torch.tensor([len(m) for m in masks]))
        return batch

    # ------------------------------------------------------------------------------ save / load

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        self.tokenizer.save_pretrained(directory)
        (directory / PROCESSOR_CONFIG).write_text(json.dumps(asdict(self.config), indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> RGPTProcessor:
        directory = Path(directory)
        config = json.loads((directory / PROCESSOR_CONFIG).read_text())
        config["image_mean"], config["image_std"] = tuple(config["image_mean"]), tuple(config["image_std"])
        return cls(AutoTokenizer.from_pretrained(directory), ProcessorConfig(**config))
