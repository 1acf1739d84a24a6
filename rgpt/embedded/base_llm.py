"""The recipe the base_models stage runs in the embedded profile (`base_models.source: train`):
the LLM's tokenizer and the LLM, trained on the conversations and REC drills, saved as Hugging Face
checkpoints, with their figures (`rgpt.base_models.llm` lays them out and writes the manifest).
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from transformers import PreTrainedTokenizerFast

from ..config import BaseModelsParams
from ..data.conversations import read_conversations
from ..data.templates import load_templates
from ..paths import LLM_DIR, TOKENIZER_DIR
from . import drills
from .llm import DrillPhase, pack, perplexity, train_llm, with_image
from .rec import rec_accuracy, rec_list_accuracy, rec_list_rows, template_drill_rows
from .tokenizer import corpus_texts, train_tokenizer

log = logging.getLogger(__name__)

CONVERSATION_FILES = ("pretrain.jsonl", "finetune.jsonl")
HELDOUT_FRACTION = 0.05  # of the conversations' images, whose conversations the LLM never trains on
REC_HELDOUT_DRILLS = 200  # fresh REC drills (`drills.rec_drill`, one question each) the LLM is scored on
REC_CHECK_QUESTIONS = 50  # of them, scored every 250 steps during training (the REC curve)
REC_LIST_CHECK_QUESTIONS = 200  # fresh REC lists whose first questions end the lists' phase (LlmParams.rec_list_target)


def train_base_models(params: BaseModelsParams, out_dir: Path, *, conversations: Path, rec_max_proposals: int,
                      num_image_tokens: int = 1,
                      progress: bool = True) -> tuple[PreTrainedTokenizerFast, dict[str, Any]]:
    """Train the tokenizer and the LLM on the conversations (and REC drills among up to
    `rec_max_proposals` regions: `drills`), each `<image>` as `num_image_tokens` tokens (`pack`); save
    them into out_dir/{tokenizer,llm}; return the tokenizer and the LLM's figures."""
    samples = [sample for name in CONVERSATION_FILES for sample in read_conversations(conversations / name)]
    started = time.perf_counter()
    tokenizer = train_tokenizer(corpus_texts(samples, load_templates()), params.tokenizer.vocab_size,
                                params.llm.max_length)
    tokenizer.save_pretrained(out_dir / TOKENIZER_DIR)
    log.info("tokenizer: %d tokens in %.0f s", len(tokenizer), time.perf_counter() - started)
    return tokenizer, {"llm": _train_and_save_llm(params, tokenizer, samples, out_dir / LLM_DIR, rec_max_proposals,
                                                  num_image_tokens, progress)}


def _train_and_save_llm(params: BaseModelsParams, tokenizer: PreTrainedTokenizerFast,
                        samples: Sequence[dict[str, Any]], out_dir: Path, rec_max_proposals: int,
                        num_image_tokens: int, progress: bool) -> dict[str, Any]:
    started = time.perf_counter()
    held = heldout_images(samples, HELDOUT_FRACTION, params.seed)
    train = [s for s in samples if s["image"] not in held]
    heldout = [s for s in samples if s["image"] in held]
    templates, llm_params = load_templates(), params.llm
    names = drills.category_names(train)
    # REC's skill in three phases (drills.py): dense lists alone, where the match appears, until
    # fresh ones are answered right; drills in the paper's templates alone, which carry it there;
    # then drills among up to rec_max_proposals beside the conversations, after the image's tokens
    # as RGPT asks them (`pack`). Each drawer has a seeded stream of its own.
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
    llm, figures = train_llm(pack(train + rec_drills, tokenizer, llm_params.max_length, num_image_tokens), tokenizer,
                             llm_params, params.seed, phases=[phase for phase in phases if phase.steps],
                             check=lambda model: rec_accuracy(model, tokenizer, fresh[:REC_CHECK_QUESTIONS], templates),
                             progress=progress)
    heldout_blocks = pack(heldout, tokenizer, llm_params.max_length, num_image_tokens)
    # the gap between the two perplexities says how much the LLM reads its region slots
    figures |= {"image_tokens": num_image_tokens, "rec_drills": len(rec_drills),
                "heldout_conversations": len(heldout),
                "heldout_tokens": heldout_blocks.ids.numel(),
                "heldout_perplexity": perplexity(llm, heldout_blocks),
                "heldout_perplexity_unnamed_slots": perplexity(llm, heldout_blocks, fill=False)}
    # REC with each slot holding its region's name, after the image's tokens as RGPT asks it: on
    # the held-out conversations' questions (RefCOCOg's expressions) and on fresh drills
    for name, questions in (("heldout", drills.rec_questions(heldout, templates)), ("drill", fresh)):
        figures[f"{name}_rec_questions"] = len(questions)
        figures[f"{name}_rec_accuracy"] = rec_accuracy(llm, tokenizer, [with_image(q) for q in questions], templates,
                                                       num_image_tokens)
        figures[f"{name}_rec_chance"] = float(np.mean([1 / q["proposals"] for q in questions])) if questions else 0.0
    llm.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    log.info("llm: held-out perplexity %.3f, REC accuracy %.3f (chance %.3f), in %.0f s",
             figures["heldout_perplexity"], figures["heldout_rec_accuracy"], figures["heldout_rec_chance"],
             time.perf_counter() - started)
    return figures


def heldout_images(samples: Sequence[dict[str, Any]], fraction: float, seed: int) -> set[str]:
    """A seeded share of the conversations' images: held out whole, since an image's several
    conversations (and its pre-training and fine-tuning ones) repeat its answers."""
    images = sorted({sample["image"] for sample in samples})
    return set(random.Random(seed).sample(images, max(1, round(fraction * len(images)))))
