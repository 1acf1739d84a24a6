"""The training stages' held-out check: right/wrong answers, answer losses, region reliance."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from rgpt.eval.heldout import Question, heldout_metrics, is_right, regions_rotated
from rgpt.model.inference import Request, answer_losses
from rgpt.model.modeling_rgpt import RGPTForConditionalGeneration

from conftest import tiny_config


def request(k: int, answer: str | None = "a red circle") -> Request:
    image = Image.new("RGB", (40, 24), (200, 30, 30))
    image.paste((30, 30, 200), (20, 0, 40, 24))
    question = "<image>\nWhat is in " + " and ".join(["<region>"] * k) + "?"
    regions = [{"box": [12.0 * i, 2.0, 10.0, 8.0], "segmentation": None} for i in range(k)]
    return Request(image, [(question, answer)], regions)


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    return RGPTForConditionalGeneration(tiny_config(tokenizer)).eval()


def test_is_right():
    assert is_right("rec", "Region [2].", "Region [2].") and not is_right("rec", "Region [1].", "Region [2].")
    assert not is_right("rec", "No corresponding options found.", "Region [2].")
    assert is_right("classification", " Red Circle.", "red circle") and not is_right("classification", "red", "red circle")


def test_metrics_per_task():
    questions = [Question("classification", "a.png", "q", [], "red circle"),
                 Question("classification", "a.png", "q", [], "blue star"),
                 Question("rec", "a.png", "q", [], "Region [1].")]
    metrics = heldout_metrics(questions, ["red circle", "red star", "Region [1]."], [1.0, 3.0, 0.5], [2.0, 3.0, 2.5])
    assert metrics == {"classification_accuracy": 0.5, "classification_questions": 2,
                       "classification_answer_loss": 2.0, "classification_region_reliance": 0.5,
                       "rec_accuracy": 1.0, "rec_questions": 1, "rec_answer_loss": 0.5, "rec_region_reliance": 2.0}


def test_answer_loss_is_the_models_token_mean_loss(model, processor):
    single = request(2)
    batch = processor.collate([processor(single.turns, single.image, single.regions)])
    expected = model(**batch).loss.item()
    # alone and inside a padded batch with a longer conversation: the same figure
    assert answer_losses(model, processor, [single]) == pytest.approx([expected], abs=1e-5)
    assert answer_losses(model, processor, [single, request(3, "a blue square beside a red one")])[0] == \
        pytest.approx(expected, abs=1e-5)


def test_rotated_regions_move_each_embedding_to_the_next_region(model, processor):
    batch = processor.collate([processor(r.turns, r.image, r.regions) for r in (request(1), request(2))])
    inputs = {k: batch[k] for k in ("input_ids", "pixel_values", "region_masks", "region_image_index")}
    slots = batch["input_ids"] == model.config.region_token_id
    true = model.embed_multimodal(**inputs)[slots]
    with regions_rotated(model):
        rotated = model.embed_multimodal(**inputs)[slots]
    assert not torch.allclose(true, true.roll(1, dims=0))  # the three regions differ
    torch.testing.assert_close(rotated, true.roll(1, dims=0))
    torch.testing.assert_close(model.embed_multimodal(**inputs)[slots], true)  # the model's own method again
