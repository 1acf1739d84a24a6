"""The base models RGPT starts from, written in one layout whichever way they were made.

    <out>/tokenizer/        the tokenizer RGPT uses: the LLM's, with <image> and <region> as single tokens
    <out>/clip/             a transformers CLIPModel (RGPT uses its vision tower) and its own tokenizer,
                            with clip/base_clip.json: source, params and figures (or the hub commit)
    <out>/llm/              a transformers causal LM (Llama architecture) and its tokenizer
    <out>/base_models.json  the tokenizer's and the LLM's manifest: source, params and figures (or the hub commit)

Two dvc stages write it. `base_clip` writes clip/ from the validated regions (and the words of
the RecapD captions), ahead of the instruction data, because RecapD's filter (clip_filter) scores
with it before the conversations exist; `base_models` writes the tokenizer and the LLM, which
learn from the conversations. `source: train` (embedded profile) trains all three here, seeded, on
the corpus: a small CLIP contrastively on the regions of whole images (mask-pooled patch features,
as RGPT pools them) and their names or phrases, with a byte-level BPE of its own (`clip_tokenizer`);
a byte-level BPE on the conversation text; and a small Llama on the conversations rendered in
RGPT's chat template, each `<region>` slot holding the mean embedding of that region's name
(`slot_embeddings`), so that it learns to read a slot as RGPT will need it to.
`source: hub` (paper profile) downloads the paper's CLIP ViT-L/14-336 and Vicuna-7B v1.5 and
extends Vicuna's tokenizer with the two placeholders; its LLM still has the old vocabulary size,
so `RGPTForConditionalGeneration.from_base_models` resizes its embeddings to `len(tokenizer)`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from tqdm import tqdm
from transformers import (AutoTokenizer, CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig, LlamaConfig,
                          LlamaForCausalLM, PreTrainedTokenizerBase, PreTrainedTokenizerFast,
                          get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup)

from ..config import BaseModelsParams, ClipParams, HubParams, LlmParams, Params
from ..data.conversations import category_answer, read_conversations
from ..data.records import DatasetSplit, ImageRecord, Region, read_jsonl
from ..data.templates import IMAGE, REGION, TEMPLATE_FILES, Templates, load_templates
from . import drills, regions
from .image import to_pixel_values
from .processing_rgpt import question_text, region_masks

log = logging.getLogger(__name__)

MANIFEST = "base_models.json"  # tokenizer and LLM
CLIP_MANIFEST = "base_clip.json"  # in clip/: how the CLIP was made
TOKENIZER_DIR, CLIP_DIR, LLM_DIR = "tokenizer", "clip", "llm"

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
# In id order. The eos id must not be 2: CLIP's text tower reads eos_token_id == 2 as a legacy
# config and then pools at the highest token id instead of at the eos.
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS, IMAGE, REGION)
CLIP_TEXT_LENGTH = 77  # CLIP's context length

CLIP_TRAIN_SPLITS = ("v3det_train", "coco_train", "lvis_train", "vg_train")
ZERO_SHOT_SPLIT = "v3det_val"  # held-out regions, classified among all of V3Det's category names
CONVERSATION_FILES = ("pretrain.jsonl", "finetune.jsonl")
HELDOUT_FRACTION = 0.05  # of the conversations' images, whose conversations the LLM never trains on
REC_HELDOUT_DRILLS = 200  # fresh REC drills (`drills.rec_drill`, one question each) the LLM is scored on
REC_CHECK_QUESTIONS = 50  # of them, scored every 250 steps during training (the REC curve)
REC_LIST_CHECK_QUESTIONS = 200  # fresh REC lists whose first questions end the lists' phase (LlmParams.rec_list_target)

# Training constants shared by both models (nanoGPT's choices for small transformers).
WEIGHT_DECAY = 0.1  # on matrices only; biases, norms and embeddings' scales decay to nothing otherwise
WARMUP_RATIO = 0.05
GRAD_CLIP = 1.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------- corpus text


def render_conversation(sample: dict[str, Any]) -> str:
    """A conversation sample as RGPT's LLM reads it (Vicuna v1, the processor's template):
    'SYSTEM USER: q1 ASSISTANT: a1</s>USER: q2 ASSISTANT: a2</s>'; the tokenizer adds the <s>."""
    turns = sample["conversations"]
    if len(turns) % 2 or any(t["from"] != role for t, role in zip(turns, ["human", "gpt"] * len(turns))):
        raise ValueError(f"conversation {sample.get('id')}: turns must alternate human, gpt; got "
                         f"{[t['from'] for t in turns]}")
    return "".join(f"{question_text(q['value'], first=i == 0)} {a['value']}{EOS}"
                   for i, (q, a) in enumerate(zip(turns[::2], turns[1::2])))


def template_lines(templates: Templates) -> list[str]:
    """Every instruction and task prompt, so the vocabulary covers questions the corpus may not ask."""
    lines = [line for name in TEMPLATE_FILES for line in getattr(templates, name)]
    return lines + list(vars(templates.prompts).values())


def corpus_texts(samples: Iterable[dict[str, Any]], templates: Templates) -> list[str]:
    """The tokenizer's training text: every conversation rendered, and the instruction templates."""
    return [render_conversation(sample) for sample in samples] + template_lines(templates)


# ----------------------------------------------------------------------------------- tokenizer


def train_tokenizer(texts: Iterable[str], vocab_size: int, max_length: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE of at most `vocab_size` tokens that adds <s> in front, as Llama's does.

    Byte-level pre-tokenization round-trips any text exactly (newlines and spaces included) and
    never needs <unk>. <image> and <region> are special tokens, so never split; they are cut out of
    the training text first, as there is nothing for BPE to learn from them. The vocabulary stops
    short of `vocab_size` when the text has no pair left to merge.
    """
    split = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))
    backend = Tokenizer(models.BPE(unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator((piece for text in texts for piece in split.split(text)), trainer)
    return _with_template(backend, f"{BOS} $A", max_length)


def clip_text_tokenizer(tokenizer: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """The same vocabulary for CLIP's text tower: <s> text </s>, at most 77 tokens (it pools at </s>).

    CLIP's texts are names and phrases on their own, which the corpus has only after a space
    ("ASSISTANT: red circle"), so a space is put in front: "red" is then the corpus's one token.
    """
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    return _with_template(backend, f"{BOS} $A {EOS}", CLIP_TEXT_LENGTH)


def _with_template(backend: Tokenizer, template: str, max_length: int) -> PreTrainedTokenizerFast:
    backend.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(t, backend.token_to_id(t)) for t in (BOS, EOS)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=PAD, unk_token=UNK, bos_token=BOS,
                                   eos_token=EOS, extra_special_tokens=[IMAGE, REGION],
                                   model_max_length=max_length, clean_up_tokenization_spaces=False)


def tokenizer_summary(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    return {"vocab_size": len(tokenizer), "image_token_id": tokenizer.convert_tokens_to_ids(IMAGE),
            "region_token_id": tokenizer.convert_tokens_to_ids(REGION), "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}


# ---------------------------------------------------------------------------------------- CLIP


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


def region_features(model: CLIPModel, examples: Sequence[RegionImage], layer: int) -> torch.Tensor:
    """(R, P): every region's embedding in CLIP's joint space, the way RGPT sees a region: the mean
    of the tower's patch features (hidden layer `layer`) inside its mask, then CLIP's final norm
    and projection."""
    config = model.config.vision_config
    grid = config.image_size // config.patch_size
    pixel_values = to_pixel_values([e.image for e in examples], config.image_size).to(model.device)
    hidden = model.vision_model(pixel_values=pixel_values, output_hidden_states=True).hidden_states[layer]
    patches = hidden[:, 1:].transpose(1, 2).reshape(len(examples), config.hidden_size, grid, grid)
    image_index = torch.cat([torch.full((len(e.masks),), i) for i, e in enumerate(examples)]).to(model.device)
    weights = regions.resize(torch.cat([e.masks for e in examples]), grid).to(model.device)
    pooled = regions.mask_pool(patches, weights, image_index)
    return model.visual_projection(model.vision_model.post_layernorm(pooled))


def text_features(model: CLIPModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> torch.Tensor:
    tokens = tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt").to(model.device)
    out = model.get_text_features(**tokens)
    return getattr(out, "pooler_output", out)


def clip_batch(model: CLIPModel, tokenizer: PreTrainedTokenizerBase, examples: Sequence[RegionImage],
               texts: Sequence[str], layer: int, negatives: Sequence[str] = ()) -> torch.Tensor:
    """The contrastive loss of one batch: each region (in order) against its text, `negatives`
    added to the batch's texts."""
    distinct = sorted(set(texts) | set(negatives))
    column = {text: i for i, text in enumerate(distinct)}
    image = F.normalize(region_features(model, examples, layer), dim=-1)
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
    optimizer, scheduler = _optimizer(model, params.learning_rate, params.epochs * batches_per_epoch)
    order, draw = torch.Generator().manual_seed(seed), random.Random(seed)
    losses = []
    model.train()
    with tqdm(total=params.epochs * batches_per_epoch, desc="clip", disable=not progress) as bar:
        for _ in range(params.epochs):
            for batch in torch.randperm(len(examples), generator=order).split(params.batch_size):
                chosen = [examples[i] for i in batch]
                texts = [draw.choice(options) for e in chosen for options in e.texts]
                loss = clip_batch(model, tokenizer, chosen, texts, layer, negatives)
                _step(model, loss, optimizer, scheduler)
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
        image = F.normalize(region_features(model, examples[start:start + batch_size], layer), dim=-1)  # (R, P)
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


# ----------------------------------------------------------------------------------------- LLM


def llm_config(params: LlmParams, tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    heads = params.num_heads  # head size hidden_size / heads: 64 is what vLLM's CPU kernels accept
    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=params.hidden_size,
                       intermediate_size=params.intermediate_size, num_hidden_layers=params.num_layers,
                       num_attention_heads=heads, num_key_value_heads=heads,
                       max_position_embeddings=params.max_length, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                       tie_word_embeddings=False)


SLOT_NAME_TOKENS = 8  # a region slot holds the mean embedding of at most this many of its name's tokens


@dataclass
class Blocks:
    """Training text, packed (`pack`) or a sequence a row (`rows`), and what its region slots hold.

    ids: (N, length) token ids. slots: (N, length), for each `<region>` token the row of `names`
    holding its region's name, -1 elsewhere (and for a region without a name). names: (M,
    SLOT_NAME_TOKENS) token ids of each distinct name, -1 padded. mask: (N, length), 0 on padding;
    None for packed blocks, which have none.
    """

    ids: torch.Tensor
    slots: torch.Tensor
    names: torch.Tensor
    mask: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index) -> Blocks:
        return Blocks(self.ids[index], self.slots[index], self.names, None if self.mask is None else self.mask[index])

    def split(self, size: int) -> list[Blocks]:
        return [self[i:i + size] for i in range(0, len(self), size)]


def pack(samples: Sequence[dict[str, Any]], tokenizer: PreTrainedTokenizerBase, length: int,
         image_tokens: int = 1) -> Blocks:
    """The conversations' tokens (each starting with <s>) end to end, cut into blocks of `length`;
    the last, incomplete block is dropped (nanoGPT's packing: no padding, no wasted compute). The
    k-th `<region>` token of a conversation is slot `regions[k]["name"]` (`Blocks`).

    image_tokens: how many `<image>` ids each `<image>` becomes, as RGPTProcessor expands it for
    RGPT's image tokens. Why: an LLM that has only seen one `<image>` token loses its REC behind
    64 of them (held-out RefCOCOg 0.63 -> 0.30, chance 0.34: README "REC"); trained with as many
    as RGPT puts there, it learns to read the question past them.
    """
    table: dict[str, int] = {}
    stream: list[int] = []
    slots: list[int] = []
    for sample, ids in zip(samples, conversation_ids(samples, tokenizer, image_tokens)):
        names = [region.get("name") for region in sample["regions"]]
        stream += ids
        slots += _slots(ids, names, table, tokenizer, sample.get("id"))
    blocks = len(stream) // length
    if blocks == 0:
        raise ValueError(f"{len(samples)} conversations make {len(stream)} tokens, fewer than one block of {length}")
    cut = blocks * length
    return Blocks(torch.tensor(stream[:cut]).view(blocks, length), torch.tensor(slots[:cut]).view(blocks, length),
                  name_ids(table, tokenizer))


def rows(sequences: Sequence[tuple[list[int], Sequence[str | None]]], tokenizer: PreTrainedTokenizerBase) -> Blocks:
    """Token id sequences (each with its regions' names, one per `<region>` token), a row each,
    right-padded to the longest with a mask: no sequence's attention reaches another's slots."""
    table: dict[str, int] = {}
    length = max(len(ids) for ids, _ in sequences)
    ids = torch.full((len(sequences), length), tokenizer.pad_token_id)
    slots = torch.full((len(sequences), length), -1)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, (sequence, names) in enumerate(sequences):
        ids[row, :len(sequence)] = torch.tensor(sequence)
        slots[row, :len(sequence)] = torch.tensor(_slots(sequence, names, table, tokenizer, f"row {row}"))
        mask[row, :len(sequence)] = 1
    return Blocks(ids, slots, name_ids(table, tokenizer), mask)


def _slots(ids: Sequence[int], names: Sequence[str | None], table: dict[str, int],
           tokenizer: PreTrainedTokenizerBase, where: Any) -> list[int]:
    """For each id, the row in `table` of the name its `<region>` slot holds (added if new), -1
    elsewhere and for a slot without a name."""
    region_id = tokenizer.convert_tokens_to_ids(REGION)
    if list(ids).count(region_id) != len(names):
        raise ValueError(f"conversation {where}: {list(ids).count(region_id)} {REGION} tokens for "
                         f"{len(names)} regions")
    named = iter(table.setdefault(name, len(table)) if name else -1 for name in names)
    return [next(named) if i == region_id else -1 for i in ids]


def name_ids(table: dict[str, int], tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """(rows, SLOT_NAME_TOKENS): the token ids of each name in its `table` row, -1 padded (one row
    of -1 for an empty table)."""
    names = torch.full((max(1, len(table)), SLOT_NAME_TOKENS), -1)
    for name, row in table.items():
        ids = tokenizer(f" {name}", add_special_tokens=False).input_ids[:SLOT_NAME_TOKENS]
        names[row, :len(ids)] = torch.tensor(ids)
    return names


def conversation_ids(samples: Sequence[dict[str, Any]], tokenizer: PreTrainedTokenizerBase,
                     image_tokens: int = 1) -> list[list[int]]:
    """Each conversation's token ids (starting with <s>), each `<image>` id repeated `image_tokens` times."""
    image_id = tokenizer.convert_tokens_to_ids(IMAGE)
    return [[j for i in ids for j in ([i] * image_tokens if i == image_id else [i])]
            for ids in tokenizer([render_conversation(s) for s in samples]).input_ids]


def slot_embeddings(embed: torch.nn.Embedding, blocks: Blocks, *, fill: bool = True) -> torch.Tensor:
    """The LLM's input embeddings for `blocks`, each named region slot holding the mean input
    embedding of its name's tokens (fill=False: the bare `<region>` token's, as in plain text).

    Why: RGPT puts a projected region feature where `<region>` stands and needs an LLM that reads
    what a slot holds, as Vicuna reads LLaVA's projections for the words they resemble. An LM
    trained on text alone has only ever seen the one `<region>` embedding there, so it learns to
    ignore the slot; one trained to name what a slot holds gives stage 1's frozen LLM something to
    decode. The names appear only here: RGPT never sees them.
    """
    inputs = embed(blocks.ids)
    filled = blocks.slots >= 0
    if not fill or not filled.any():
        return inputs
    rows = blocks.names[blocks.slots[filled]]
    real = (rows >= 0).unsqueeze(-1)
    means = (embed(rows.clamp(min=0)) * real).sum(1) / real.sum(1)
    return inputs.index_put(tuple(filled.nonzero().T), means)


@dataclass
class DrillPhase:
    """Drills trained on alone before the conversations (`train_llm`): `draw(count)` gives `count`
    fresh rows (`rows`), for at most `steps` steps, or until `check(model)`, taken every
    `check_every` steps of the phase, reaches `target`."""

    name: str
    draw: Callable[[int], Blocks]
    steps: int
    check: Callable[[LlamaForCausalLM], float] | None = None
    target: float = 1.0


def train_llm(blocks: Blocks, tokenizer: PreTrainedTokenizerBase, params: LlmParams, seed: int, *,
              phases: Sequence[DrillPhase] = (), check: Callable[[LlamaForCausalLM], float] | None = None,
              check_every: int = 250, progress: bool = True) -> tuple[LlamaForCausalLM, dict[str, Any]]:
    """A Llama trained from scratch for next-token prediction: drill phases alone first, then
    epochs over packed blocks (`pack`).

    phases: trained on in turn, `params.rec_first_batch_size` fresh rows a step, at one constant
    learning rate after a warm-up of `params.rec_first_warmup` steps; figures `{name}_steps` and,
    for a checked phase, `{name}_curve` ([step, figure] pairs), `{name}_target`,
    `{name}_reached_target`. Why a constant rate: the skill the drills teach appears after a
    plateau whose length varies from run to run; under a decaying schedule its length moved the
    rates, and with them whether the skill appeared at all (README "REC"). The epochs over `blocks`
    then get a warm-up and a cosine schedule of their own. check: a figure of the model taken every
    `check_every` steps and at the end (`check_curve`).
    """
    seed_everything(seed)
    model = LlamaForCausalLM(llm_config(params, tokenizer))
    order = torch.Generator().manual_seed(seed)
    batches = [batch for _ in range(params.epochs)
               for batch in torch.randperm(len(blocks), generator=order).split(params.batch_size)]
    optimizer = _adamw(model, params.learning_rate)
    losses, curve = [], []
    figures: dict[str, Any] = {}
    model.train()
    bar = tqdm(total=sum(phase.steps for phase in phases) + len(batches), desc="llm", disable=not progress)

    def checked(name: str, figure: Callable[[LlamaForCausalLM], float], into: list) -> float:
        model.eval()
        into.append([len(losses), figure(model)])
        model.train()
        log.info("llm step %d: %s %.3f", len(losses), name, into[-1][1])
        return into[-1][1]

    def train(batch: Blocks, scheduler) -> None:
        loss = lm_loss(model, batch)
        _step(model, loss, optimizer, scheduler)
        losses.append(loss.item())
        bar.update()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if check and len(losses) % check_every == 0:
            checked("REC check", check, curve)

    scheduler = get_constant_schedule_with_warmup(optimizer, params.rec_first_warmup)
    for phase in phases:
        start, phase_curve = len(losses), []
        bar.set_description(f"llm: {phase.name}")
        while len(losses) - start < phase.steps:
            train(phase.draw(params.rec_first_batch_size), scheduler)
            if (phase.check and (len(losses) - start) % check_every == 0
                    and checked(f"{phase.name} check", phase.check, phase_curve) >= phase.target):
                break
        figures[f"{phase.name}_steps"] = len(losses) - start
        if phase.check:
            figures |= {f"{phase.name}_curve": phase_curve, f"{phase.name}_target": phase.target,
                        f"{phase.name}_reached_target": bool(phase_curve) and phase_curve[-1][1] >= phase.target}
    bar.total = len(losses) + len(batches)
    bar.set_description("llm")
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(WARMUP_RATIO * len(batches)), len(batches))
    for batch in batches:
        train(blocks[batch], scheduler)
    bar.close()
    if check and len(losses) % check_every:
        checked("REC check", check, curve)
    model.eval()
    batches_per_epoch = math.ceil(len(blocks) / params.batch_size)
    figures |= {"train_tokens": blocks.ids.numel(), "steps": len(losses), "first_loss": losses[0],
                "last_epoch_loss": float(np.mean(losses[-batches_per_epoch:]))}
    return model, figures | ({"check_curve": curve} if check else {})


def lm_loss(model: LlamaForCausalLM, blocks: Blocks, *, fill: bool = True) -> torch.Tensor:
    """The mean next-token loss on `blocks` (padding left out), the region slots filled with their
    names (`slot_embeddings`)."""
    labels = blocks.ids if blocks.mask is None else blocks.ids.masked_fill(blocks.mask == 0, -100)
    return model(inputs_embeds=slot_embeddings(model.get_input_embeddings(), blocks, fill=fill),
                 attention_mask=blocks.mask, labels=labels).loss


@torch.no_grad()
def perplexity(model: LlamaForCausalLM, blocks: Blocks, batch_size: int = 16, *, fill: bool = True) -> float:
    """exp of the mean next-token loss over packed blocks of equal length."""
    losses = [lm_loss(model, batch, fill=fill).item() * len(batch) for batch in blocks.split(batch_size)]
    return math.exp(sum(losses) / len(blocks))


@torch.no_grad()
def rec_choices(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase, questions: Sequence[dict[str, Any]],
                templates: Templates, image_tokens: int = 1) -> list[int]:
    """For each REC question (`drills.rec_questions`), the 1-based proposal k whose answer
    "Region [k]." the LLM finds most likely, its slots holding their regions' names. image_tokens:
    as `pack`'s."""
    chosen = []
    for question in questions:
        answers = [templates.prompts.rec_answer.format(index=k) for k in range(1, question["proposals"] + 1)]
        # the question's tokens are the same for every answer: the summed losses differ by the answers'
        losses = [_summed_loss(model, tokenizer, {**question, "conversations": [question["conversations"][0],
                                                                               {"from": "gpt", "value": a}]},
                               image_tokens)
                  for a in answers]
        chosen.append(int(np.argmin(losses)) + 1)
    return chosen


def rec_accuracy(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase, questions: Sequence[dict[str, Any]],
                 templates: Templates, image_tokens: int = 1) -> float:
    """Share of REC questions whose right answer is `rec_choices`' choice: the REC the base LLM
    brings to RGPT when a slot holds what it should."""
    chosen = rec_choices(model, tokenizer, questions, templates, image_tokens)
    right = sum(templates.prompts.rec_answer.format(index=k) == question["conversations"][1]["value"]
                for k, question in zip(chosen, questions))
    return right / max(1, len(questions))


def rec_list_rows(lists: Sequence[drills.RecList], tokenizer: PreTrainedTokenizerBase) -> Blocks:
    """REC lists (`drills.RecList`), a row each (`rows`), in plain text from `<s>`."""
    texts = tokenizer([rec_list.text() for rec_list in lists], add_special_tokens=False).input_ids
    return rows([([tokenizer.bos_token_id, *ids], rec_list.names) for rec_list, ids in zip(lists, texts)], tokenizer)


@torch.no_grad()
def rec_list_choices(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase, lists: Sequence[drills.RecList],
                     batch_size: int = 256) -> list[int]:
    """For each REC list, the answer k to its first question whose "k]." after `RecList.question()`
    the LLM finds most likely, k = 1..n."""
    questions = tokenizer([rec_list.question() for rec_list in lists], add_special_tokens=False).input_ids
    candidates = [(i, [tokenizer.bos_token_id, *question], tokenizer(f"{k}].", add_special_tokens=False).input_ids)
                  for i, (rec_list, question) in enumerate(zip(lists, questions))
                  for k in range(1, len(rec_list.names) + 1)]
    scores: dict[int, list[float]] = {}
    for chunk in range(0, len(candidates), batch_size):
        batch = candidates[chunk:chunk + batch_size]
        blocks = rows([(question + answer, lists[i].names) for i, question, answer in batch], tokenizer)
        logits = model(inputs_embeds=slot_embeddings(model.get_input_embeddings(), blocks),
                       attention_mask=blocks.mask).logits
        logprobs = logits[:, :-1].log_softmax(-1).gather(-1, blocks.ids[:, 1:, None])[..., 0]
        for row, (i, question, answer) in enumerate(batch):
            start = len(question) - 1  # where the first answer token is predicted
            scores.setdefault(i, []).append(logprobs[row, start:start + len(answer)].sum().item())
    return [int(np.argmax(scores[i])) + 1 for i in range(len(lists))]


def rec_list_accuracy(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase,
                      lists: Sequence[drills.RecList]) -> float:
    """Share of REC lists whose first question the LLM answers right (`rec_list_choices`)."""
    chosen = rec_list_choices(model, tokenizer, lists)
    return sum(k == rec_list.target for k, rec_list in zip(chosen, lists)) / max(1, len(lists))


def template_drill_rows(samples: Sequence[dict[str, Any]], tokenizer: PreTrainedTokenizerBase) -> Blocks:
    """Drill conversations (`drills.rec_drill`), a row each (`rows`)."""
    return rows([(ids, [region["name"] for region in sample["regions"]])
                 for sample, ids in zip(samples, conversation_ids(samples, tokenizer))], tokenizer)


def _summed_loss(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase, sample: dict[str, Any],
                 image_tokens: int) -> float:
    length = len(conversation_ids([sample], tokenizer, image_tokens)[0])
    return lm_loss(model, pack([sample], tokenizer, length, image_tokens)).item() * (length - 1)


def with_image(sample: dict[str, Any]) -> dict[str, Any]:
    """`sample` with `<image>` in front of its first question, where the conversations put it,
    unless it has one: a text-only drill or question as RGPT asks it, after the image's tokens."""
    first, *rest = sample["conversations"]
    if IMAGE in first["value"]:
        return sample
    return {**sample, "conversations": [{**first, "value": f"{IMAGE}\n{first['value']}"}, *rest]}


def heldout_images(samples: Sequence[dict[str, Any]], fraction: float, seed: int) -> set[str]:
    """A seeded share of the conversations' images: held out whole, since an image's several
    conversations (and its pre-training and fine-tuning ones) repeat its answers."""
    images = sorted({sample["image"] for sample in samples})
    return set(random.Random(seed).sample(images, max(1, round(fraction * len(images)))))


# ------------------------------------------------------------------------------- both models


def _adamw(model: torch.nn.Module, learning_rate: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                              {"params": no_decay, "weight_decay": 0.0}], lr=learning_rate, betas=(0.9, 0.98))


def _optimizer(model: torch.nn.Module, learning_rate: float,
               steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """`_adamw` and a cosine schedule after a linear warm-up."""
    optimizer = _adamw(model, learning_rate)
    return optimizer, get_cosine_schedule_with_warmup(optimizer, math.ceil(WARMUP_RATIO * steps), steps)


def _step(model: torch.nn.Module, loss: torch.Tensor, optimizer, scheduler) -> None:
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


# ------------------------------------------------------------------------------------ the stage


def build_base_clip(params: Params, out_dir: Path, *, validated: Path, captions: Path | None = None,
                    snapshot: Callable[[str, str, Path], str] | None = None, progress: bool = True) -> dict[str, Any]:
    """Write the CLIP to `out_dir` (base_models/clip) and return its manifest (also in `out_dir`).

    The CLIP is its own stage, ahead of the instruction data: RecapD's filter (clip_filter) scores
    with it before the conversations that the tokenizer and the LLM learn from exist, as the
    paper's filter uses a CLIP trained elsewhere. So, like OpenAI's CLIP, it has its own tokenizer
    (`clip_tokenizer`). validated: the validate stage's outputs; captions: the recap stage's
    captions (JSON Lines), whose words the tokenizer learns too (both read by `source: train`);
    snapshot: how `source: hub` fetches.
    """
    bm = params.base_models
    out_dir = Path(out_dir)
    _refuse_foreign(out_dir, CLIP_MANIFEST, ignore=())
    staging = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    if bm.source == "hub":
        commit = (snapshot or _snapshot)(bm.hub.vision, bm.hub.revision, staging)
        figures = {"hub": {"repo": bm.hub.vision, "revision": bm.hub.revision, "commit": commit}}
    else:
        figures = {"clip": train_base_clip(bm, staging, data_root=Path(params.data.root), validated=Path(validated),
                                           captions=captions, feature_layer=params.model.vision_feature_layer,
                                           progress=progress)}
    manifest = {"source": bm.source, "params": json.loads(bm.clip.model_dump_json()), **figures}
    (staging / CLIP_MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return manifest


def build_base_models(params: Params, out_dir: Path, *, conversations: Path,
                      snapshot: Callable[[str, str, Path], str] | None = None, progress: bool = True) -> dict[str, Any]:
    """Write the tokenizer and the LLM into `out_dir` and return the manifest; clip/ (the base_clip
    stage's) is left as it is.

    conversations: the conversations stage's outputs (read by `source: train`). snapshot: how
    `source: hub` fetches a repository (`_snapshot`). Each part is written beside `out_dir` and
    moved into place at the end, the manifest last, so a failed run never leaves half of one.
    """
    out_dir = Path(out_dir)
    _refuse_foreign(out_dir, MANIFEST, ignore=(CLIP_DIR,))
    staging = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    bm = params.base_models
    if bm.source == "hub":
        manifest = fetch_from_hub(bm.hub, staging, snapshot or _snapshot)
    else:
        manifest = train_base_models(bm, staging, conversations=Path(conversations),
                                     rec_max_proposals=params.conversations.rec_max_proposals,
                                     image_tokens=rgpt_image_tokens(params), progress=progress)
    manifest = {"source": bm.source, "params": json.loads(bm.model_dump_json()), **manifest}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    out_dir.mkdir(parents=True, exist_ok=True)
    for part in (TOKENIZER_DIR, LLM_DIR, MANIFEST):
        shutil.rmtree(out_dir / part, ignore_errors=True)  # a folder; the manifest file os.replace overwrites
        os.replace(staging / part, out_dir / part)
    staging.rmdir()
    return manifest


def _refuse_foreign(out_dir: Path, manifest: str, ignore: Sequence[str]) -> None:
    """Never replace files this code did not write: `out_dir` must be absent, empty (but for
    `ignore`) or hold `manifest`."""
    if not out_dir.exists() or (out_dir / manifest).exists():
        return
    if any(p.name not in ignore for p in out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} holds files but no {manifest}, so it is not a layout this stage "
                              "wrote; move them away or choose another output directory")


def rgpt_image_tokens(params: Params) -> int:
    """How many image tokens RGPT puts where `<image>` stands (`RGPTConfig.num_image_tokens`) with
    the embedded CLIP."""
    clip = params.base_models.clip
    h, w = params.model.image_tokens or (clip.image_size // clip.patch_size,) * 2
    return h * w


def train_base_models(params: BaseModelsParams, out_dir: Path, *, conversations: Path, rec_max_proposals: int,
                      image_tokens: int = 1, progress: bool = True) -> dict[str, Any]:
    """Train the tokenizer and the LLM on the conversations (and REC drills among up to
    `rec_max_proposals` regions: `drills`), each `<image>` as `image_tokens` tokens (`pack`); save
    them; return their figures."""
    samples = [sample for name in CONVERSATION_FILES for sample in read_conversations(conversations / name)]
    started = time.perf_counter()
    tokenizer = train_tokenizer(corpus_texts(samples, load_templates()), params.tokenizer.vocab_size,
                                params.llm.max_length)
    tokenizer.save_pretrained(out_dir / TOKENIZER_DIR)
    log.info("tokenizer: %d tokens in %.0f s", len(tokenizer), time.perf_counter() - started)
    return {"tokenizer": tokenizer_summary(tokenizer),
            "llm": _train_and_save_llm(params, tokenizer, samples, out_dir / LLM_DIR, rec_max_proposals,
                                       image_tokens, progress)}


def clip_texts(splits: Iterable[DatasetSplit]) -> list[str]:
    """Every text the CLIP learns from the splits' regions (`region_texts`), one per occurrence."""
    return [text for split in splits for record in split.records for _, texts in region_texts(record)
            for text in texts]


def clip_tokenizer(texts: Sequence[str], descriptions: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """The CLIP's own byte-level BPE (`clip_text_tokenizer`'s template): learnt from the names and
    phrases the CLIP is trained on (`texts`) and from the descriptions it will score (`descriptions`:
    RecapD's captions), which are never trained on but must tokenize into words of their own.

    Why the descriptions: the text tower learns only names and phrases, so a caption word it never
    saw should read as one token it knows nothing about; a BPE of the names alone cuts such a word
    into bytes and pieces of names it does know ("outline" -> o u t l in e), which pulls the
    caption's embedding about. Measured on the embedded RecapD captions (clip_filter's separation
    of the stand-in's corrupted captions from the truthful ones, ROC AUC of the first sentence's
    score): 0.86 with a BPE of the names alone, 0.97 with the captions' words added.
    """
    # a space in front, as `clip_text_tokenizer` puts one before every text it encodes
    corpus = [f" {t}" for t in [*texts, *descriptions]]
    return clip_text_tokenizer(train_tokenizer(corpus, vocab_size, CLIP_TEXT_LENGTH))


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


def _train_and_save_llm(params: BaseModelsParams, tokenizer: PreTrainedTokenizerFast,
                        samples: Sequence[dict[str, Any]], out_dir: Path, rec_max_proposals: int,
                        image_tokens: int, progress: bool) -> dict[str, Any]:
    started = time.perf_counter()
    held = heldout_images(samples, HELDOUT_FRACTION, params.seed)
    train = [s for s in samples if s["image"] not in held]
    heldout = [s for s in samples if s["image"] in held]
    templates, llm_params = load_templates(), params.llm
    names = drills.category_names(train)
    # REC's skill in three phases (drills.py): dense lists alone, where the match appears, until
    # fresh ones are answered right; drills in the paper's templates alone, which carry it there;
    # then drills among up to rec_max_proposals beside the conversations, after the image's tokens
    # as RGPT asks them (`pack`). Each drawer its own seeded stream, as experiments/rec_matching.py drew them.
    list_rng, template_rng, check_rng = (random.Random(params.seed + k) for k in (1, 1, 3))
    fresh_lists = [drills.rec_list(names, rec_max_proposals, check_rng) for _ in range(REC_LIST_CHECK_QUESTIONS)]
    phases = [
        DrillPhase("list", lambda count: rec_list_rows(
            [drills.rec_list(names, rec_max_proposals, list_rng) for _ in range(count)], tokenizer),
            llm_params.rec_list_steps, lambda model: rec_list_accuracy(model, tokenizer, fresh_lists),
            llm_params.rec_list_target),
        DrillPhase("template", lambda count: template_drill_rows(
            [drills.rec_drill(k, names, 1, rec_max_proposals, templates, template_rng) for k in range(count)],
            tokenizer), llm_params.rec_template_steps)]
    rec_drills = [with_image(drill) for drill in drills.rec_drills(
        names, llm_params.rec_drills, llm_params.rec_drill_turns, rec_max_proposals, templates, params.seed)]
    fresh = drills.rec_questions(drills.rec_drills(names, REC_HELDOUT_DRILLS, 1, rec_max_proposals, templates,
                                                   params.seed + 2), templates)
    llm, figures = train_llm(pack(train + rec_drills, tokenizer, llm_params.max_length, image_tokens), tokenizer,
                             llm_params, params.seed, phases=[phase for phase in phases if phase.steps],
                             check=lambda model: rec_accuracy(model, tokenizer, fresh[:REC_CHECK_QUESTIONS], templates),
                             progress=progress)
    heldout_blocks = pack(heldout, tokenizer, llm_params.max_length, image_tokens)
    # the gap between the two perplexities says how much the LLM reads its region slots
    figures |= {"image_tokens": image_tokens, "rec_drills": len(rec_drills),
                "heldout_conversations": len(heldout),
                "heldout_tokens": heldout_blocks.ids.numel(),
                "heldout_perplexity": perplexity(llm, heldout_blocks),
                "heldout_perplexity_unnamed_slots": perplexity(llm, heldout_blocks, fill=False)}
    # REC with each slot holding its region's name, after the image's tokens as RGPT asks it: on
    # the held-out conversations' questions (RefCOCOg's expressions) and on fresh drills
    for name, questions in (("heldout", drills.rec_questions(heldout, templates)), ("drill", fresh)):
        figures[f"{name}_rec_questions"] = len(questions)
        figures[f"{name}_rec_accuracy"] = rec_accuracy(llm, tokenizer, [with_image(q) for q in questions], templates,
                                                       image_tokens)
        figures[f"{name}_rec_chance"] = float(np.mean([1 / q["proposals"] for q in questions])) if questions else 0.0
    llm.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    log.info("llm: held-out perplexity %.3f, REC accuracy %.3f (chance %.3f), in %.0f s",
             figures["heldout_perplexity"], figures["heldout_rec_accuracy"], figures["heldout_rec_chance"],
             time.perf_counter() - started)
    return figures


# ------------------------------------------------------------------------------------------ hub

# Weight formats the transformers (PyTorch) loaders never read: skipped to save gigabytes.
UNUSED_WEIGHTS = ["*.h5", "*.msgpack", "*.onnx", "*.ot", "flax_model*", "tf_model*"]


def _snapshot(repo: str, revision: str, dest: Path) -> str:
    """Download `repo` at `revision` into `dest`; return the commit it resolved to.

    The hub token comes from HF_TOKEN in the environment, read by huggingface_hub itself.
    """
    from huggingface_hub import HfApi, snapshot_download

    commit = HfApi().model_info(repo, revision=revision).sha
    snapshot_download(repo, revision=commit, local_dir=dest, ignore_patterns=UNUSED_WEIGHTS)
    return commit


def fetch_from_hub(params: HubParams, out_dir: Path, snapshot: Callable[[str, str, Path], str]) -> dict[str, Any]:
    """The paper's LLM into llm/, and its tokenizer with <image> and <region> added into tokenizer/
    (the CLIP is the base_clip stage's: `build_base_clip`). `snapshot(repo, revision, dest)` fetches
    a repository and returns its commit."""
    commit = snapshot(params.llm, params.revision, out_dir / LLM_DIR)
    tokenizer = AutoTokenizer.from_pretrained(out_dir / LLM_DIR)
    tokenizer.add_special_tokens({"extra_special_tokens": [IMAGE, REGION]}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:  # Vicuna has none; LLaVA pads with <unk>
        tokenizer.pad_token = tokenizer.unk_token
    tokenizer.save_pretrained(out_dir / TOKENIZER_DIR)
    return {"tokenizer": tokenizer_summary(tokenizer),
            "hub": {LLM_DIR: {"repo": params.llm, "revision": params.revision, "commit": commit}}}
