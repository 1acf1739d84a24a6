"""Base models: preprocessing, tokenizer, CLIP, LLM, the layout and manifest, and the hub path."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    AutoTokenizer,
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    CLIPVisionConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from rgpt.base_models.clip import build_base_clip
from rgpt.base_models.llm import build_base_models, num_image_tokens
from rgpt.clip_features import region_features
from rgpt.config import Params, load_params
from rgpt.data import formats
from rgpt.data.conversations import build_finetune, build_pretrain, write_conversations
from rgpt.data.records import DatasetSplit, ImageRecord, Region
from rgpt.data.templates import load_templates
from rgpt.embedded.base_llm import REC_HELDOUT_DRILLS, heldout_images
from rgpt.embedded.clip import (
    RegionImage,
    category_names,
    clip_config,
    contrastive_loss,
    region_images,
    region_texts,
    train_clip,
    zero_shot_accuracy,
)
from rgpt.embedded.llm import (
    Blocks,
    DrillPhase,
    conversation_ids,
    llm_config,
    pack,
    perplexity,
    rows,
    slot_embeddings,
    train_llm,
    with_image,
)
from rgpt.embedded.tokenizer import (
    clip_text_tokenizer,
    clip_tokenizer,
    corpus_texts,
    render_conversation,
    train_tokenizer,
)
from rgpt.model.image import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    mean_colour,
    pad_to_square,
    square_transform,
    to_pixel_values,
)
from rgpt.model.processing_rgpt import SYSTEM, region_masks

from conftest import REPO, embedded

TINY_CLIP = embedded("base_models.clip", image_size=16, patch_size=8, hidden_size=32, num_layers=1, num_heads=2, text_hidden_size=64,
                       text_layers=1, projection_dim=16, epochs=1, batch_size=8, learning_rate=3e-3)
TINY_LLM = embedded("base_models.llm", hidden_size=64, num_layers=1, num_heads=1, intermediate_size=128, max_length=32, epochs=1,
                     batch_size=4, learning_rate=1e-2, rec_list_steps=6, rec_list_target=0.9, rec_template_steps=2,
                     rec_first_batch_size=4, rec_first_warmup=0, rec_drills=8)


def unnormalise(pixel_values: torch.Tensor) -> torch.Tensor:
    """(3, S, S) in [0, 1] again."""
    return pixel_values * torch.tensor(OPENAI_CLIP_STD).view(3, 1, 1) + torch.tensor(OPENAI_CLIP_MEAN).view(3, 1, 1)


def sample(image: str, *turns: str, names: tuple[str | None, ...] = ()) -> dict:
    """A conversation sample; `names`: its regions' names, one per <region> of its questions."""
    roles = ["human", "gpt"] * len(turns)
    return {"id": f"{image}#0", "image": image, "regions": [{"box": [0, 0, 1, 1], "name": n} for n in names],
            "conversations": [{"from": r, "value": v} for r, v in zip(roles, turns)]}


# Every answer names its region: only an LLM that reads the region slots can predict it.
SAMPLES = [sample(f"img{i}.jpg", "<image>\nWhat is in <region>?", f"{colour} {shape}", "And <region>?",
                  f"{other} {shape}", names=(f"{colour} {shape}", f"{other} {shape}"))
           for i, (colour, other, shape) in enumerate((c, o, s) for c in ["red", "green", "blue", "white"]
                                                      for o in ["red", "green", "blue", "white"] if o != c
                                                      for s in ["circle", "square", "star"])]


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return train_tokenizer(corpus_texts(SAMPLES, load_templates()), vocab_size=600, max_length=64)


# ---------------------------------------------------------------------------------- image.py


def test_pad_to_square_centres_the_image_on_the_fill_colour():
    image = Image.new("RGB", (4, 2), (255, 0, 0))
    square = np.asarray(pad_to_square(image, (1, 2, 3)))
    assert square.shape == (4, 4, 3)
    assert (square[[0, 3]] == [1, 2, 3]).all() and (square[1:3] == [255, 0, 0]).all()
    assert np.asarray(pad_to_square(Image.new("RGB", (3, 5)), (9, 9, 9)))[:, [0, 4]].tolist() == [[[9] * 3] * 2] * 5


@pytest.mark.parametrize("size, box", [((40, 20), [8, 4, 16, 8]), ((20, 40), [2, 10, 8, 20])])
def test_a_box_mapped_by_square_transform_covers_its_object_in_the_input(size, box):
    image = Image.new("RGB", size, (0, 0, 0))
    x, y, w, h = box
    ImageDraw.Draw(image).rectangle([x, y, x + w - 1, y + h - 1], fill=(255, 255, 255))
    scale, pad_x, pad_y = square_transform(*size, 20)
    assert scale == 0.5
    bx, by, bw, bh = (round(v) for v in (x * scale + pad_x, y * scale + pad_y, w * scale, h * scale))
    expected = torch.zeros(20, 20, dtype=torch.bool)
    expected[by:by + bh, bx:bx + bw] = True
    white = unnormalise(to_pixel_values([image], 20)[0]).mean(0) > 0.5  # (S, S)
    assert torch.equal(white, expected)


def test_to_pixel_values_normalises_and_the_padding_becomes_zero():
    images = [Image.new("RGB", (30, 10), (255, 255, 255)), Image.new("RGB", (8, 8), (0, 0, 0))]
    pixels = to_pixel_values(images, 12)
    assert pixels.shape == (2, 3, 12, 12) and pixels.dtype == torch.float32
    assert pixels[0, :, 0].abs().max() < 0.02  # the pad: the mean colour, truncated to whole levels
    expected_white = (1 - torch.tensor(OPENAI_CLIP_MEAN)) / torch.tensor(OPENAI_CLIP_STD)
    assert torch.allclose(pixels[0, :, 6, 6], expected_white, atol=1e-5)
    assert mean_colour(OPENAI_CLIP_MEAN) == (122, 116, 104)


# ----------------------------------------------------------------------------------- tokenizer


def test_placeholders_are_single_special_tokens_and_text_round_trips(tokenizer):
    assert tokenizer.convert_tokens_to_ids(["<pad>", "<unk>", "<s>", "</s>", "<image>", "<region>"]) == list(range(6))
    ids = tokenizer("<image>\nWhat is <region>?<region>").input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[1] == 4 and ids.count(5) == 2
    for text in corpus_texts(SAMPLES, load_templates()):
        assert tokenizer.decode(tokenizer(text, add_special_tokens=False).input_ids) == text
    odd = "  two spaces,\ttab\nnewline\r\n<region> é ß 中"  # never seen: byte-level still round-trips it
    assert tokenizer.decode(tokenizer(odd, add_special_tokens=False).input_ids) == odd


def test_category_names_are_a_token_per_word(tokenizer):
    assert tokenizer.tokenize(" red circle") == ["Ġred", "Ġcircle"]  # as answers follow "ASSISTANT:"
    clip = clip_text_tokenizer(tokenizer)
    assert clip.convert_ids_to_tokens(clip("blue star").input_ids) == ["<s>", "Ġblue", "Ġstar", "</s>"]


def test_tokenizer_is_deterministic_and_its_vocabulary_capped(tokenizer):
    again = train_tokenizer(corpus_texts(SAMPLES, load_templates()), vocab_size=600, max_length=64)
    assert len(tokenizer) == 600
    assert again.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()


def test_saved_tokenizers_reload_with_their_templates(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path / "llm")
    clip_text_tokenizer(tokenizer).save_pretrained(tmp_path / "clip")
    llm, clip = AutoTokenizer.from_pretrained(tmp_path / "llm"), AutoTokenizer.from_pretrained(tmp_path / "clip")
    words = tokenizer(" red circle", add_special_tokens=False).input_ids
    assert llm(" red circle").input_ids == [2, *words]
    assert clip("red circle").input_ids == [2, *words, 3]
    assert len(clip("red " * 200, truncation=True).input_ids) == 77
    assert llm.extra_special_tokens == ["<image>", "<region>"] and llm.model_max_length == 64


def test_render_conversation_is_the_processors_vicuna_template():
    text = render_conversation(sample("a.jpg", "<image>\nq1", "a1", "q2", "a2"))
    assert text == f"{SYSTEM} USER: <image>\nq1 ASSISTANT: a1</s>USER: q2 ASSISTANT: a2</s>"
    with pytest.raises(ValueError, match="alternate human, gpt"):
        render_conversation(sample("a.jpg", "q1", "a1", "q2"))


# ---------------------------------------------------------------------------------------- CLIP


def record(dataset: str, regions=(), captions=()) -> ImageRecord:
    return ImageRecord(dataset, "train", 1, f"{dataset}/1.jpg", 100, 50, list(regions), [], list(captions))


def test_region_texts_name_regions_by_category_or_phrases_and_skip_crowds():
    lvis = record("lvis", [Region([1, 2, 3, 4], category="bat_(animal)")])
    coco = record("coco", [Region([1, 2, 3, 4], category="red circle"),
                           Region([0, 0, 9, 9], category="person", iscrowd=True)])
    vg = record("vg", [Region([5, 5, 5, 5], phrases=[" a star ", "star", ""]), Region([1, 1, 2, 2], phrases=[" "])])
    assert [texts for _, texts in region_texts(lvis)] == [["bat (animal)"]]
    assert [(r.box, texts) for r, texts in region_texts(coco)] == [([1, 2, 3, 4], ["red circle"])]
    assert [texts for _, texts in region_texts(vg)] == [["a star", "star"]]


def test_region_images_hold_every_named_region_on_the_square_canvas(corpus):
    split = formats.read_split(corpus, "coco", "val")
    examples = region_images([split], corpus, size=32)
    named = [r for r in split.records if region_texts(r)]
    assert len(examples) == len(named)
    first, record = examples[0], named[0]
    assert first.masks.shape == (len(region_texts(record)), 32, 32) and first.image.size == (record.width,
                                                                                                   record.height)
    assert first.masks.amax(dim=(1, 2)).gt(0).all()  # every region is somewhere on the canvas


def test_category_names_are_the_distinct_names_of_categorised_regions():
    splits = [DatasetSplit("lvis", "train", [record("lvis", [Region([1, 2, 3, 4], category="red_circle")])]),
              DatasetSplit("coco", "train", [record("coco", [Region([1, 2, 3, 4], category="red circle"),
                                                             Region([1, 2, 3, 4], category="blue star")])]),
              DatasetSplit("vg", "train", [record("vg", [Region([5, 5, 5, 5], phrases=["a star"])])])]
    assert category_names(splits) == ["blue star", "red circle"]


def test_contrastive_loss_is_clips_loss_when_texts_differ_and_shares_duplicates(tokenizer):
    text_tokenizer = clip_text_tokenizer(tokenizer)
    model = CLIPModel(clip_config(TINY_CLIP, text_tokenizer))
    images, texts = colour_pairs(1)  # four images, four distinct texts
    out = model(**text_tokenizer(texts, padding=True, return_tensors="pt"), return_loss=True,
                pixel_values=to_pixel_values(images, TINY_CLIP.image_size))
    assert torch.allclose(contrastive_loss(out.logits_per_image, torch.arange(4)), out.loss, atol=1e-6)
    # two images, one text: the image side is certain (loss 0), the text side is split evenly (log 2)
    assert contrastive_loss(torch.zeros(2, 1), torch.tensor([0, 0])).item() == pytest.approx(np.log(2) / 2)
    # one image, two texts: the unmatched text is a negative for the image (log 2), no target itself
    assert contrastive_loss(torch.zeros(1, 2), torch.tensor([0])).item() == pytest.approx(np.log(2) / 2)


COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "white": (250, 250, 250)}


def colour_pairs(per_colour: int = 6) -> tuple[list[Image.Image], list[str]]:
    rng = np.random.default_rng(0)
    images, texts = [], []
    for name, rgb in COLOURS.items():
        for _ in range(per_colour):
            w, h = rng.integers(8, 24, size=2)
            images.append(Image.new("RGB", (int(w), int(h)), rgb))
            texts.append(f"{name} square")
    return images, texts


def two_colour_images(count: int) -> list[RegionImage]:
    """Images whose left and right halves have two different colours: two regions each, named by colour."""
    names, examples = list(COLOURS), []
    for k in range(count):
        left, right = names[k % 4], names[(k + 1 + k // 4) % 4]
        if left == right:
            right = names[(k + 2) % 4]
        image = Image.new("RGB", (32, 32), COLOURS[left])
        ImageDraw.Draw(image).rectangle([16, 0, 31, 31], fill=COLOURS[right])
        masks = region_masks([{"box": [0, 0, 16, 32]}, {"box": [16, 0, 16, 32]}], 32, 32, TINY_CLIP.image_size)
        examples.append(RegionImage(image, masks, [[f"{left} square"], [f"{right} square"]]))
    return examples


def test_clip_learns_the_colours_of_regions_and_reloads_identically(tokenizer, tmp_path):
    text_tokenizer = clip_text_tokenizer(tokenizer)
    examples = two_colour_images(24)
    model, figures = train_clip(examples, text_tokenizer, TINY_CLIP.model_copy(update={"epochs": 25}),
                                     seed=0, progress=False)
    assert figures["steps"] == 75 and figures["images"] == 24 and figures["regions"] == 48
    assert figures["distinct_texts"] == 4 and figures["last_epoch_loss"] < figures["first_loss"] / 2
    names = sorted(f"{c} square" for c in COLOURS)
    assert zero_shot_accuracy(model, text_tokenizer, examples, names) == 1.0

    model.save_pretrained(tmp_path)
    text_tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tokenizer = CLIPModel.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(tmp_path)
    assert zero_shot_accuracy(loaded, loaded_tokenizer, examples, names) == 1.0
    with torch.no_grad():
        images, masks = [e.image for e in examples[:3]], [e.masks for e in examples[:3]]
        assert torch.equal(region_features(loaded, images, masks, -1), region_features(model, images, masks, -1))


def test_clip_training_is_deterministic(tokenizer):
    text_tokenizer = clip_text_tokenizer(tokenizer)
    examples = two_colour_images(8)
    runs = [train_clip(examples, text_tokenizer, TINY_CLIP, seed=3, progress=False)[1] for _ in range(2)]
    assert runs[0] == runs[1]
    other = train_clip(examples, text_tokenizer, TINY_CLIP, seed=4, progress=False)[1]
    assert other["first_loss"] != runs[0]["first_loss"]


# ----------------------------------------------------------------------------------------- LLM


def test_pack_cuts_the_token_stream_into_blocks_and_names_each_region_slot(tokenizer):
    stream = [i for ids in tokenizer([render_conversation(s) for s in SAMPLES]).input_ids for i in ids]
    blocks = pack(SAMPLES, tokenizer, 32)
    assert blocks.ids.shape == blocks.slots.shape == (len(stream) // 32, 32)
    assert blocks.ids.flatten().tolist() == stream[:blocks.ids.numel()]
    region = tokenizer.convert_tokens_to_ids("<region>")
    assert torch.equal(blocks.slots >= 0, blocks.ids == region)
    # the slots, read in order, name the conversations' regions in order
    named = [tokenizer.decode([i for i in blocks.names[row].tolist() if i >= 0]).strip()
             for row in blocks.slots[blocks.slots >= 0].tolist()]
    assert named == [r["name"] for s in SAMPLES for r in s["regions"]][:len(named)] and len(named) > 20
    with pytest.raises(ValueError, match="fewer than one block of 10000"):
        pack(SAMPLES, tokenizer, 10_000)
    with pytest.raises(ValueError, match="conversation img0.jpg#0: 2 <region> tokens for 1 regions"):
        pack([{**SAMPLES[0], "regions": SAMPLES[0]["regions"][:1]}], tokenizer, 32)


def test_pack_expands_each_image_token_into_as_many_as_rgpt_puts_there(tokenizer):
    image = tokenizer.convert_tokens_to_ids("<image>")
    stream = [j for ids in tokenizer([render_conversation(s) for s in SAMPLES]).input_ids
              for i in ids for j in ([i] * 5 if i == image else [i])]
    one, five = pack(SAMPLES, tokenizer, 32), pack(SAMPLES, tokenizer, 32, num_image_tokens=5)
    assert five.ids.flatten().tolist() == stream[:five.ids.numel()]
    assert (five.ids == image).sum() > 4 * (one.ids == image).sum() > 0
    # the same regions in the same slots, only further on
    assert five.slots[five.slots >= 0].tolist() == one.slots[one.slots >= 0].tolist()[:int((five.slots >= 0).sum())]


def test_the_llm_trains_with_as_many_image_tokens_as_rgpts_config_gives():
    params = load_params(REPO / "params.yaml")
    h, w = params.model.image_tokens
    assert num_image_tokens(params) == h * w
    tower_grid = params.model_copy(update={"model": params.model.model_copy(update={"image_tokens": None}),
                                           "base_models": params.base_models.model_copy(update={
                                               "clip": TINY_CLIP})})
    assert num_image_tokens(tower_grid) == (TINY_CLIP.image_size // TINY_CLIP.patch_size) ** 2 == 4


def test_with_image_puts_one_image_token_in_front_of_the_first_question():
    drill = sample(None, "Which is it? <region>", "Region [1].", "And now? <region>", "Region [1].",
                   names=("a", "b"))
    image = with_image(drill)
    assert image["conversations"][0]["value"] == "<image>\nWhich is it? <region>"
    assert image["conversations"][1:] == drill["conversations"][1:] and image["regions"] == drill["regions"]
    assert with_image(image) == image and with_image(SAMPLES[0]) == SAMPLES[0]


def test_slot_embeddings_put_the_mean_of_the_names_token_embeddings_in_each_named_slot(tokenizer):
    unnamed = sample("a.jpg", "<image>\n<region> and <region>?", "a", names=("red circle", None))
    blocks = pack([SAMPLES[0], unnamed] * 4, tokenizer, 16)
    embed = torch.nn.Embedding(len(tokenizer), 8)
    filled, plain = slot_embeddings(embed, blocks), slot_embeddings(embed, blocks, fill=False)
    assert torch.equal(plain, embed(blocks.ids))
    n, t = (blocks.slots >= 0).nonzero()[0]
    name = tokenizer(" " + SAMPLES[0]["regions"][0]["name"], add_special_tokens=False).input_ids
    assert torch.allclose(filled[n, t], embed(torch.tensor(name)).mean(0))
    untouched = blocks.slots < 0  # other tokens, and the region without a name
    assert torch.equal(filled[untouched], plain[untouched])
    assert ((blocks.ids == tokenizer.convert_tokens_to_ids("<region>")) & untouched).any()


def test_llm_learns_reloads_identically_and_is_deterministic(tokenizer, tmp_path):
    blocks = pack(SAMPLES * 4, tokenizer, TINY_LLM.max_length)
    params = TINY_LLM.model_copy(update={"epochs": 4})
    model, figures = train_llm(blocks, tokenizer, params, seed=0, progress=False)
    assert figures["last_epoch_loss"] < figures["first_loss"] / 2
    untrained = LlamaForCausalLM(llm_config(params, tokenizer))
    assert perplexity(model, blocks) < perplexity(untrained, blocks) / 4
    assert model.config.head_dim == 64 and model.config.vocab_size == len(tokenizer)

    model.save_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(LlamaForCausalLM.from_pretrained(tmp_path)(blocks.ids[:2]).logits,
                           model(blocks.ids[:2]).logits)
    again = train_llm(blocks, tokenizer, params, seed=0, progress=False)[1]
    assert again == figures


def drawn(tokenizer, drawn_counts: list[int]):
    """A phase's drawer: `count` rows of the test samples' conversations, recording each count."""
    def draw(count: int) -> Blocks:
        drawn_counts.append(count)
        chosen = [SAMPLES[k % len(SAMPLES)] for k in range(len(drawn_counts), len(drawn_counts) + count)]
        return rows([(ids, [r.get("name") for r in sample["regions"]])
                          for sample, ids in zip(chosen, conversation_ids(chosen, tokenizer))], tokenizer)
    return draw


def test_llm_trains_on_its_drill_phases_in_turn_then_the_epochs_and_checks_itself_on_the_way(tokenizer):
    blocks = pack(SAMPLES * 4, tokenizer, TINY_LLM.max_length)
    modes, lists, templates = [], [], []
    check = lambda model: modes.append(model.training) or len(modes) / 10  # noqa: E731
    phases = [DrillPhase("list", drawn(tokenizer, lists), 6),
              DrillPhase("template", drawn(tokenizer, templates), 2)]
    _, figures = train_llm(blocks, tokenizer, TINY_LLM.model_copy(update={"epochs": 2}), seed=0, phases=phases,
                                check=check, check_every=5, progress=False)
    assert lists == [4] * 6 and templates == [4] * 2  # rec_first_batch_size rows a step
    epoch_steps = math.ceil(len(blocks) / 4)
    steps = 6 + 2 + 2 * epoch_steps
    assert figures["list_steps"] == 6 and figures["template_steps"] == 2 and figures["steps"] == steps
    assert "list_curve" not in figures and figures["train_tokens"] == blocks.ids.numel()
    expected = [*range(5, steps + 1, 5)] + ([steps] if steps % 5 else [])
    assert figures["check_curve"] == [[step, (i + 1) / 10] for i, step in enumerate(expected)]
    assert modes == [False] * len(expected)  # checked in eval mode, trained in train mode
    assert train_llm(blocks, tokenizer, TINY_LLM, seed=0, progress=False)[1].keys().isdisjoint(
        {"list_steps", "check_curve"})


def test_llm_leaves_a_drill_phase_once_its_check_reaches_the_target(tokenizer):
    blocks = pack(SAMPLES * 4, tokenizer, TINY_LLM.max_length)
    epoch_steps = math.ceil(len(blocks) / 4)
    figures = [0.0, 0.4, 0.8, 0.9]  # the check's figure at steps 3, 6, 9, 12 of the phase
    reached_phase = DrillPhase("list", drawn(tokenizer, []), 20, lambda _: figures.pop(0), 0.8)
    _, reached = train_llm(blocks, tokenizer, TINY_LLM, seed=0, phases=[reached_phase], check_every=3,
                                progress=False)
    assert reached["list_steps"] == 9 and reached["steps"] == 9 + epoch_steps
    assert reached["list_curve"] == [[3, 0.0], [6, 0.4], [9, 0.8]] and reached["list_reached_target"]
    # a target never reached: every step of the phase, then the epochs
    missed_phase = DrillPhase("list", drawn(tokenizer, []), 10, lambda _: 0.5, 0.8)
    _, missed = train_llm(blocks, tokenizer, TINY_LLM, seed=0, phases=[missed_phase], check_every=3,
                               progress=False)
    assert missed["list_steps"] == 10 and missed["steps"] == 10 + epoch_steps
    assert not missed["list_reached_target"] and len(missed["list_curve"]) == 3


def test_llm_learns_to_read_what_a_region_slot_holds(tokenizer):
    # each answer is one of 36 names: predictable only from the slot before it
    blocks = pack(SAMPLES * 8, tokenizer, TINY_LLM.max_length)
    model, _ = train_llm(blocks, tokenizer, TINY_LLM.model_copy(update={"epochs": 6}), seed=0, progress=False)
    # in nats per token: the names in the slots take away most of what is left to predict (measured:
    # 0.02 against 0.40 with bare slots; the perplexity ratio, 1.45, is too near 1 to test across machines)
    named, bare = (math.log(perplexity(model, blocks, fill=fill)) for fill in (True, False))
    assert named < bare / 4


def test_heldout_images_are_a_seeded_share_of_whole_images():
    samples = [sample(f"img{i}.jpg", "q", "a") for i in range(40) for _ in range(2)]
    held = heldout_images(samples, 0.1, seed=0)
    assert len(held) == 4 and held == heldout_images(samples[::-1], 0.1, seed=0)
    assert held != heldout_images(samples, 0.1, seed=1)


# ------------------------------------------------------------------------------ layout, hub


STAGE_CLIP = TINY_CLIP.model_copy(update={"batch_size": 64})  # a couple of hundred images: a few steps


def tiny_params(corpus, **base_models) -> Params:
    raw = load_params(REPO / "params.yaml").model_dump(by_alias=True)
    raw["data"]["root"] = corpus
    raw["base_models"].update(clip=STAGE_CLIP.model_dump(), llm=TINY_LLM.model_dump(), **base_models)
    return Params.model_validate(raw)


@pytest.fixture(scope="module")
def stage_inputs(corpus, tmp_path_factory):
    """The validate and conversations outputs the stage reads, from the small corpus."""
    root = tmp_path_factory.mktemp("stage")
    splits = {f"{d}_{s}": formats.read_split(corpus, d, s)
              for d, s in [("v3det", "train"), ("v3det", "val"), ("coco", "train"), ("lvis", "train"),
                           ("vg", "train"), ("llava", "train"), ("refcocog", "train")]}
    for name, split in splits.items():
        split.save(root / "validate", name)
    as_balanced = {**splits, "v3det_pretrain": splits["v3det_train"], "v3det_finetune": splits["v3det_train"],
                   "coco_finetune": splits["coco_train"], "lvis_finetune": splits["lvis_train"]}
    params = load_params(REPO / "params.yaml").conversations
    write_conversations(root / "conversations" / "pretrain.jsonl", build_pretrain(as_balanced, params, load_templates()))
    write_conversations(root / "conversations" / "finetune.jsonl", build_finetune(as_balanced, params, load_templates()))
    return root


def test_trained_base_models_layout_and_manifest(corpus, stage_inputs, tmp_path):
    out = tmp_path / "base_models"
    captions = tmp_path / "captions.jsonl"  # what recap writes; its words go into the CLIP's tokenizer
    captions.write_text(json.dumps({"caption": "Its outline is one smooth curve."}) + "\n")
    clip_manifest = build_base_clip(tiny_params(corpus), out / "clip", validated=stage_inputs / "validate",
                                         captions=captions, progress=False)
    clip_files = {p.name: p.read_bytes() for p in (out / "clip").iterdir()}
    manifest = build_base_models(tiny_params(corpus), out, conversations=stage_inputs / "conversations",
                                      progress=False)
    assert json.loads((out / "base_models.json").read_text()) == manifest
    assert json.loads((out / "clip" / "base_clip.json").read_text()) == clip_manifest
    assert sorted(p.name for p in out.iterdir()) == ["base_models.json", "clip", "llm", "tokenizer"]
    assert {p.name: p.read_bytes() for p in (out / "clip").iterdir()} == clip_files  # the LLM's stage leaves it be
    tokenizer = AutoTokenizer.from_pretrained(out / "tokenizer")
    assert manifest["tokenizer"] == {"vocab_size": len(tokenizer), "image_token_id": 4, "region_token_id": 5,
                                     "bos_token_id": 2, "eos_token_id": 3, "pad_token_id": 0}
    assert manifest["source"] == "train" and "clip" not in manifest
    assert clip_manifest["source"] == "train" and clip_manifest["params"] == STAGE_CLIP.model_dump()

    # the CLIP has its own tokenizer, learnt from the names and phrases it reads: a name is a token a word
    clip, clip_tokenizer = CLIPModel.from_pretrained(out / "clip"), AutoTokenizer.from_pretrained(out / "clip")
    assert clip.config.text_config.vocab_size == len(clip_tokenizer) == clip_manifest["clip"]["vocab_size"]
    assert clip.config.text_config.eos_token_id == 3 and clip_tokenizer("red circle").input_ids[-1] == 3
    assert len(clip_tokenizer("red circle").input_ids) == 4  # <s> red circle </s>
    assert clip_manifest["clip"]["tokenizer_descriptions"] == 1
    llm = LlamaForCausalLM.from_pretrained(out / "llm")
    assert llm.config.vocab_size == len(tokenizer) and llm.config.max_position_embeddings == TINY_LLM.max_length
    assert AutoTokenizer.from_pretrained(out / "llm").get_vocab() == tokenizer.get_vocab()

    val = formats.read_split(corpus, "v3det", "val")
    assert clip_manifest["clip"]["zero_shot_classes"] == 120
    assert clip_manifest["clip"]["zero_shot_regions"] == sum(len(r.regions) for r in val.records)
    assert 0 <= clip_manifest["clip"]["zero_shot_accuracy"] <= 1
    assert manifest["llm"]["heldout_conversations"] > 0 and manifest["llm"]["heldout_perplexity"] > 1
    assert manifest["llm"]["image_tokens"] == num_image_tokens(tiny_params(corpus)) == 64
    # REC with named slots, on the held-out RefCOCOg questions and on fresh drills among 2..6 proposals
    assert manifest["llm"]["rec_drills"] == 8
    assert manifest["llm"]["list_steps"] == 6 and manifest["llm"]["template_steps"] == 2
    assert manifest["llm"]["check_curve"][-1][0] == manifest["llm"]["steps"]
    # too few steps for a check every 250: every step of the lists' phase, the target not reached
    assert manifest["llm"]["list_target"] == 0.9 and manifest["llm"]["list_reached_target"] is False
    assert manifest["llm"]["drill_rec_questions"] == REC_HELDOUT_DRILLS
    assert manifest["llm"]["heldout_rec_questions"] > 0
    for name in ("heldout", "drill"):
        assert 1 / 6 <= manifest["llm"][f"{name}_rec_chance"] <= 1 / 2
        assert 0 <= manifest["llm"][f"{name}_rec_accuracy"] <= 1


def test_the_clips_tokenizer_keeps_the_words_of_the_descriptions_it_will_score_whole():
    names = ["red circle", "blue square", "green star"] * 3
    alone = clip_tokenizer(names, [], vocab_size=600)  # room for every word of both
    with_captions = clip_tokenizer(names, ["Its outline is smooth.", "The outline is clean."] * 3, vocab_size=600)
    assert alone.tokenize("red circle") == with_captions.tokenize("red circle") == ["Ġred", "Ġcircle"]
    assert with_captions.tokenize("outline") == ["Ġoutline"]  # a word of its own, not pieces of names
    assert len(alone.tokenize("outline")) > 2
    assert with_captions("outline").input_ids[0] == 2 and with_captions("outline").input_ids[-1] == 3  # <s> </s>


def test_the_stages_refuse_to_replace_a_folder_they_did_not_write(corpus, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="no base_models.json"):
        build_base_models(tiny_params(corpus), tmp_path / "out", conversations=tmp_path)
    with pytest.raises(FileExistsError, match="no base_clip.json"):
        build_base_clip(tiny_params(corpus), tmp_path / "out", validated=tmp_path)


@pytest.fixture(scope="module")
def local_hub(tmp_path_factory):
    """A stand-in for the two hub repositories: a tiny CLIP, and a tiny Llama with a Vicuna-like
    tokenizer (<unk>, <s>, </s>, no pad, no placeholders)."""
    hub = tmp_path_factory.mktemp("hub")
    vision = CLIPVisionConfig(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=64)
    text = CLIPTextConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=77)
    CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16)
              ).save_pretrained(hub / "openai" / "clip")
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.train_from_iterator(["a chat between a user and an assistant"] * 3,
                                trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"]))
    vicuna = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    vicuna.save_pretrained(hub / "lmsys" / "vicuna")
    LlamaForCausalLM(LlamaConfig(vocab_size=len(vicuna), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                 num_attention_heads=1)).save_pretrained(hub / "lmsys" / "vicuna")
    return hub


def test_hub_models_are_laid_out_with_the_extended_tokenizer(corpus, local_hub, tmp_path):
    fetched = []

    def snapshot(repo: str, revision: str, dest):  # the hub, served from a local folder
        fetched.append((repo, revision))
        shutil.copytree(local_hub / repo, dest)
        return f"commit-of-{repo}"

    params = tiny_params(corpus, source="hub", hub=embedded("base_models.hub", vision="openai/clip", llm="lmsys/vicuna",
                                                             revision="v1").model_dump())
    out = tmp_path / "base_models"
    clip_manifest = build_base_clip(params, out / "clip", validated=tmp_path, snapshot=snapshot)
    manifest = build_base_models(params, out, conversations=tmp_path, snapshot=snapshot)
    assert fetched == [("openai/clip", "v1"), ("lmsys/vicuna", "v1")]
    assert clip_manifest["hub"] == {"repo": "openai/clip", "revision": "v1", "commit": "commit-of-openai/clip"}
    assert manifest["hub"] == {"llm": {"repo": "lmsys/vicuna", "revision": "v1", "commit": "commit-of-lmsys/vicuna"}}
    vicuna = AutoTokenizer.from_pretrained(local_hub / "lmsys" / "vicuna")
    tokenizer = AutoTokenizer.from_pretrained(out / "tokenizer")
    assert tokenizer.convert_tokens_to_ids(["<image>", "<region>"]) == [len(vicuna), len(vicuna) + 1]
    assert tokenizer("a <image> b <region>").input_ids.count(len(vicuna)) == 1
    assert tokenizer.pad_token == "<unk>"
    assert manifest["tokenizer"]["vocab_size"] == len(vicuna) + 2 and manifest["source"] == "hub"
    CLIPModel.from_pretrained(out / "clip")
    assert LlamaForCausalLM.from_pretrained(out / "llm").config.vocab_size == len(vicuna)  # resized when used
