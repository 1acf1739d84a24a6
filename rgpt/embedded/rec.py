"""The embedded base LLM's REC, scored by forced choice with every slot holding its region's name.

REC asks which of n numbered proposals a description names; the LLM's choice is the answer
"Region [k]." (or, for a dense list, "k].") it finds most likely. `rec_accuracy` scores REC
questions in the paper's templates (`drills.rec_questions`), `rec_list_accuracy` the first
questions of dense lists (`drills.RecList`); the rows builders lay drills out for training.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from ..data.templates import Templates
from . import drills
from .llm import Blocks, conversation_ids, lm_loss, pack, rows, slot_embeddings


@torch.no_grad()
def rec_choices(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase, questions: Sequence[dict[str, Any]],
                templates: Templates, num_image_tokens: int = 1) -> list[int]:
    """For each REC question (`drills.rec_questions`), the 1-based proposal k whose answer
    "Region [k]." the LLM finds most likely, its slots holding their regions' names. num_image_tokens:
    as `pack`'s."""
    chosen = []
    for question in questions:
        answers = [templates.prompts.rec_answer.format(index=k) for k in range(1, question["proposals"] + 1)]
        # the question's tokens are the same for every answer: the summed losses differ by the answers'
        losses = [summed_loss(model, tokenizer, {**question, "conversations": [question["conversations"][0],
                                                                               {"from": "gpt", "value": a}]},
                               num_image_tokens)
                  for a in answers]
        chosen.append(int(np.argmin(losses)) + 1)
    return chosen


def rec_accuracy(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase, questions: Sequence[dict[str, Any]],
                 templates: Templates, num_image_tokens: int = 1) -> float:
    """Share of REC questions whose right answer is `rec_choices`' choice: the REC the base LLM
    brings to RGPT when a slot holds what it should."""
    chosen = rec_choices(model, tokenizer, questions, templates, num_image_tokens)
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


def summed_loss(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase, sample: dict[str, Any],
                 num_image_tokens: int) -> float:
    length = len(conversation_ids([sample], tokenizer, num_image_tokens)[0])
    return lm_loss(model, pack([sample], tokenizer, length, num_image_tokens)).item() * (length - 1)
