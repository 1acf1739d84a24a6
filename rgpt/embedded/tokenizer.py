"""The embedded profile's tokenizers: byte-level BPEs trained on the corpus in seconds.

`train_tokenizer` makes the LLM's (and RGPT's) tokenizer from the conversations rendered in
RGPT's chat template; `clip_tokenizer` the CLIP's own, from the names and phrases it learns and
the words of the captions it will score. Both add `<s>` in front, as Llama's does, and keep
`<image>` and `<region>` as single tokens.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from ..data.templates import IMAGE, REGION, TEMPLATE_FILES, Templates
from ..model.processing_rgpt import question_text

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
# In id order. The eos id must not be 2: CLIP's text tower reads eos_token_id == 2 as a legacy
# config and then pools at the highest token id instead of at the eos.
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS, IMAGE, REGION)
CLIP_TEXT_LENGTH = 77  # CLIP's context length


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


def clip_tokenizer(texts: Sequence[str], descriptions: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """The CLIP's own byte-level BPE (`clip_text_tokenizer`'s template): learnt from the names and
    phrases the CLIP is trained on (`texts`) and from the descriptions it will score (`descriptions`:
    RecapD's captions), which are never trained on but must tokenize into words of their own.

    Why the descriptions: the text tower learns only names and phrases, so a caption word it never
    saw should read as one token it knows nothing about; a BPE of the names alone cuts such a word
    into bytes and pieces of names it does know ("outline" -> o u t l in e), which pulls the
    caption's embedding about (measured: docs/findings.md, "the CLIP's tokenizer").
    """
    # a space in front, as `clip_text_tokenizer` puts one before every text it encodes
    corpus = [f" {t}" for t in [*texts, *descriptions]]
    return clip_text_tokenizer(train_tokenizer(corpus, vocab_size, CLIP_TEXT_LENGTH))


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
