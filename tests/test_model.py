"""RGPT: shapes through the model, mask pooling, placeholders, stages' trainable sets, save/load."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText

import rgpt.model  # noqa: F401  (registers the Auto classes)
from rgpt.config import load_params
from rgpt.model import regions
from rgpt.model.modeling_rgpt import RGPTForConditionalGeneration
from rgpt.model.processing_rgpt import IGNORE_INDEX, ProcessorConfig, RGPTProcessor, question_text
from rgpt.train import stages
from rgpt.train.data import turn_weights
from rgpt.train.stages import freeze_for_stage

from conftest import REPO, tiny_config


def batch(processor, n_regions=(1, 2)):
    """Two examples: an image with one region, an image with two, each a known conversation."""
    examples = []
    for k in n_regions:
        image = Image.new("RGB", (40, 24), (200, 30, 30))
        question = "<image>\nWhat is in " + " and ".join(["<region>"] * k) + "?"
        regions_ = [{"box": [4.0 * i, 2.0, 10.0, 8.0], "segmentation": None} for i in range(k)]
        examples.append(processor([(question, "a red circle")], image, regions_))
    return processor.collate(examples)


def test_forward_shapes_and_loss(tokenizer, processor):
    torch.manual_seed(0)
    model = RGPTForConditionalGeneration(tiny_config(tokenizer)).eval()
    b = batch(processor)
    out = model(**b)
    assert out.logits.shape == (*b["input_ids"].shape, len(tokenizer))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    image_tokens, refined = model.encode_images(b["pixel_values"])
    assert image_tokens.shape == (2, 4, 32)  # (B, H*W, D) with image_tokens [2, 2]
    assert refined.shape == (2, 16, 16, 16)  # (B, C, 4g, 4g): the 4x4 grid refined 4x


@pytest.mark.parametrize("variant,side", [("deconv", 16), ("bilinear", 64), ("deconv_bilinear", 64), ("none", 4)])
def test_refinement_variants(tokenizer, processor, variant, side):
    model = RGPTForConditionalGeneration(tiny_config(tokenizer, refinement=variant)).eval()
    _, refined = model.encode_images(torch.zeros(1, 3, 32, 32))
    assert refined.shape[-2:] == (side, side) == (model.config.refined_size,) * 2
    assert torch.isfinite(model(**batch(processor)).loss)


def naive_mask_pool(features, weights, index):
    return torch.stack([(features[b] * w).sum((1, 2)) / w.sum() for w, b in zip(weights, index.tolist())])


def test_mask_pool_matches_a_per_region_loop():
    torch.manual_seed(0)
    features = torch.randn(3, 8, 12, 12)
    weights = (torch.rand(7, 12, 12) > 0.6).float()
    index = torch.tensor([0, 0, 0, 1, 2, 2, 2])
    torch.testing.assert_close(regions.mask_pool(features, weights, index), naive_mask_pool(features, weights, index))


def test_a_region_smaller_than_a_cell_keeps_a_feature():
    features = torch.arange(16.0).reshape(1, 1, 4, 4)
    mask = torch.zeros(1, 32, 32)
    mask[0, 9, 17] = 1  # one input pixel: in cell (1, 2) of the 4 x 4 map
    weights = regions.resize(mask, 4)
    assert weights.sum() > 0
    assert regions.mask_pool(features, weights, torch.tensor([0])).item() == pytest.approx(6.0)


def test_box_masks_and_morphology():
    mask = torch.zeros(1, 10, 10)
    mask[0, 2, 3] = mask[0, 6, 7] = 1  # two pixels: the box is rows 2-6, cols 3-7
    box = regions.box_masks(mask)
    assert box.sum() == 25 and box[0, 2:7, 3:8].all()
    dilated = regions.morphology(mask, 3)
    assert dilated.sum() == 18  # two 3x3 squares
    square = torch.zeros(1, 10, 10)
    square[0, 2:7, 2:7] = 1
    assert regions.morphology(square, -3).sum() == 9  # 5x5 eroded to 3x3
    assert regions.morphology(mask, -3).sum() == 2  # would vanish: kept as it was


def test_placeholder_region_mismatch_is_an_error(tokenizer, processor):
    model = RGPTForConditionalGeneration(tiny_config(tokenizer))
    b = batch(processor)
    b["region_masks"], b["region_image_index"] = b["region_masks"][:2], b["region_image_index"][:2]
    with pytest.raises(ValueError, match="3 <region> tokens but 2 region masks"):
        model(**b)


def test_labels_cover_only_the_answers(tokenizer, processor):
    turns = [("<image>\nWhat is <region>?", "a red circle"), ("And <region>?", "the blue square")]
    ids, labels = processor.encode(turns)

    def ids_of(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    q1 = ids_of(question_text(turns[0][0], first=True))
    q1 = [i for t in q1 for i in ([t] * 4 if t == processor.image_token_id else [t])]  # <image> -> 4 slots
    a1, q2, a2 = ids_of(" a red circle"), ids_of(question_text(turns[1][0], first=False)), ids_of(" the blue square")
    eos = tokenizer.eos_token_id
    assert ids == [tokenizer.bos_token_id] + q1 + a1 + [eos] + q2 + a2 + [eos]
    assert labels == [IGNORE_INDEX] * (1 + len(q1)) + a1 + [eos] + [IGNORE_INDEX] * len(q2) + a2 + [eos]
    assert processor.decode([i for i in labels if i != IGNORE_INDEX]) == "a red circle the blue square"


def test_turn_weights_give_each_answer_turn_one_share():
    x = IGNORE_INDEX
    labels = torch.tensor([[x, 5, 6, x, x, 7, x],    # a 2-token turn, a 1-token turn
                           [x, x, 8, 9, 9, 9, x]])   # one 4-token turn
    w = turn_weights(labels)
    assert torch.allclose(w, torch.tensor([[0, .5, .5, 0, 0, 1, 0], [0, 0, .25, .25, .25, .25, 0]]))
    assert w.sum() == 3  # three turns


def test_turn_weighted_loss_is_the_mean_of_the_turns_mean_losses(tokenizer, processor):
    torch.manual_seed(0)
    model = RGPTForConditionalGeneration(tiny_config(tokenizer)).eval()
    turns = [("<image>\nWhat is <region>?", "red"),
             ("Describe <region>.", "a long answer of many words about the red circle on the left")]
    image = Image.new("RGB", (40, 24), (200, 30, 30))
    regions_ = [{"box": [4.0, 2.0, 10.0, 8.0], "segmentation": None}] * 2
    b = processor.collate([processor(turns, image, regions_)])
    with torch.no_grad():
        out = model(**b)
        turn_mean = model(**b, label_weights=turn_weights(b["labels"])).loss
    token_mean, logits = out.loss, out.logits[0, :-1]
    targets = b["labels"][0, 1:]
    ce = torch.nn.functional.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="none")
    answer = (targets != IGNORE_INDEX).int()
    edges = torch.nonzero(answer.diff(prepend=torch.zeros(1, dtype=torch.int)) == 1).flatten().tolist()
    runs = [ce[start:start + int(answer[start:].cumprod(0).sum())] for start in edges]  # each turn's tokens
    assert len(runs) == 2 and len(runs[0]) < len(runs[1])
    assert torch.isclose(token_mean, torch.cat(runs).mean())
    assert torch.isclose(turn_mean, torch.stack([r.mean() for r in runs]).mean())
    assert not torch.isclose(turn_mean, token_mean)


def test_turns_that_do_not_fit_are_dropped_whole(tokenizer, processor):
    turns = [("<image>\nWhat is <region>?", "a red circle")] + [("And <region>?", "the blue square")] * 10
    limit = len(processor.encode(turns[:2])[0]) + 5  # room for two turns and a bit
    short = RGPTProcessor(tokenizer, ProcessorConfig(image_size=32, num_image_tokens=4, max_length=limit))
    ids, labels = short.encode(turns)
    assert ids == processor.encode(turns[:2])[0] and len(ids) == len(labels)
    assert ids[-1] == tokenizer.eos_token_id and ids.count(short.region_token_id) == 2


@pytest.mark.parametrize("stage,trainable", [
    (1, {"refinement", "connector"}),
    (2, {"refinement", "connector", "language_model"}),
])
def test_gradients_reach_exactly_the_stage_modules(tokenizer, processor, stage, trainable):
    model = RGPTForConditionalGeneration(tiny_config(tokenizer))
    freeze_for_stage(model, stage)
    model(**batch(processor)).loss.backward()
    with_grad = {name.split(".")[0] for name, p in model.named_parameters()
                 if p.grad is not None and p.grad.abs().sum() > 0}
    requires = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert with_grad == requires == trainable


def test_save_load_round_trip_and_auto_class(tokenizer, processor, tmp_path):
    torch.manual_seed(0)
    model = RGPTForConditionalGeneration(tiny_config(tokenizer, mask_morphology=3)).eval()
    model.save_pretrained(tmp_path)
    for loaded in (RGPTForConditionalGeneration.from_pretrained(tmp_path),
                   AutoModelForImageTextToText.from_pretrained(tmp_path)):
        loaded.eval()
        assert isinstance(loaded, RGPTForConditionalGeneration) and loaded.config.mask_morphology == 3
        b = batch(processor)
        torch.testing.assert_close(loaded(**b).logits, model(**b).logits, rtol=0, atol=0)


def test_batched_generation_from_fused_embeddings(tokenizer, processor):
    torch.manual_seed(0)
    model = RGPTForConditionalGeneration(tiny_config(tokenizer)).eval()
    from PIL import Image

    examples = [processor([("<image>\nWhat is <region>?" + " Now." * k, None)], Image.new("RGB", (32, 32)),
                          [{"box": [1.0, 1.0, 8.0, 8.0], "segmentation": None}]) for k in (0, 3)]
    b = processor.collate(examples, padding_side="left")
    new = model.generate(**{k: v for k, v in b.items() if k != "labels"}, max_new_tokens=5, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id)
    assert new.shape[0] == 2 and 1 <= new.shape[1] <= 5
    # the same prompt alone gives the same tokens: left padding does not change the answer
    alone = model.generate(**{k: v for k, v in processor.collate(examples[1:], "left").items() if k != "labels"},
                           max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert new[1, : alone.shape[1]].tolist() == alone[0].tolist()


def test_checkpoints_go_stale_when_the_trainable_set_changes(tmp_path, monkeypatch):
    # A checkpoint's optimizer state holds exactly the trained modules: resuming one with another
    # trainable set would fail inside DeepSpeed's load, so prepare_checkpoints must start over.
    params = load_params(REPO / "params.yaml")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs/conversations").mkdir(parents=True)
    (tmp_path / "outputs/conversations/finetune.jsonl").write_text("{}\n")
    folder = stages.prepare_checkpoints(params, 2)
    (folder / "step-20").mkdir()
    assert (stages.prepare_checkpoints(params, 2) / "step-20").exists()  # same run: kept to resume from
    monkeypatch.setitem(stages.TRAINABLE, 2, ("language_model",))
    assert not (stages.prepare_checkpoints(params, 2) / "step-20").exists()
