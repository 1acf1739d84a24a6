"""Shared fixtures: a small synthetic corpus written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import CLIPVisionConfig, LlamaConfig, PreTrainedTokenizerFast

from rgpt.config import SyntheticParams, load_params
from rgpt.model.configuration_rgpt import RGPTConfig
from rgpt.model.processing_rgpt import ProcessorConfig, RGPTProcessor

REPO = Path(__file__).resolve().parents[1]


def embedded(key: str, **overrides):
    """The embedded profile's section `key` of params.yaml (e.g. "base_models.clip"), validated, with
    `overrides` laid over it: params.yaml holds every default value, tests included."""
    section = load_params(REPO / "params.yaml")
    for part in key.split("."):
        section = getattr(section, part)
    return type(section).model_validate({**section.model_dump(), **overrides})


def small_synthetic_params(**overrides) -> SyntheticParams:
    """The embedded profile's synthetic params, scaled down so a corpus writes in a second or two."""
    params = load_params(REPO / "params.yaml").synthetic.model_dump()
    params.update(
        images={"v3det_train": 60, "v3det_val": 12, "vg": 40, "coco_train2017": 60, "coco_val2017": 40, "llava": 12},
        refcocog_images={"train": 20, "val": 8, "test": 8},
        lvis_val_from_train2017=5,
        vg_negative_coordinate_regions=2,
        pope={"images": 12, "sample_num": 3},
    )
    params.update(overrides)
    return SyntheticParams.model_validate(params)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """A small synthetic corpus in the real datasets' layout (read-only for tests)."""
    from rgpt.embedded.synthetic.corpus import write_corpus

    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root, small_synthetic_params(), progress=False)
    return root


# ------------------------------------------------------------------ a tiny RGPT


TEXT = ["A chat between a curious user and an artificial intelligence assistant.",
        "USER: What is in <region>? ASSISTANT: a red circle", "<image>\nthe blue square is left of the star",
        "Region [1]. No corresponding options found. yellow green purple"] * 20


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with the chat's special tokens, trained on a few lines."""
    specials = ["<unk>", "<s>", "</s>", "<pad>", "<image>", "<region>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXT, trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", extra_special_tokens=["<image>", "<region>"])


def tiny_config(tokenizer, **kwargs) -> RGPTConfig:
    """An RGPT of a few thousand parameters: a 32 px, 4 x 4-patch CLIP tower and a 2-layer Llama."""
    vision = CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32,
                              num_hidden_layers=2, num_attention_heads=2)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return RGPTConfig(vision, text, image_tokens=[2, 2], image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                      region_token_id=tokenizer.convert_tokens_to_ids("<region>"), **kwargs)


@pytest.fixture(scope="session")
def processor(tokenizer) -> RGPTProcessor:
    """The processor for `tiny_config` models."""
    return RGPTProcessor(tokenizer, ProcessorConfig(image_size=32, num_image_tokens=4, max_length=512))
