"""RecapD's CLIP filter: long captions chunked to CLIP's window and scored chunk by chunk, the
aggregations, the thresholds, precision and recall against known corruptions, the stage end to end
(recap's stand-in captions, the base_clip stage's CLIP), `rgpt recap stats`, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from transformers import CLIPModel

from rgpt.base_models.clip import build_base_clip
from rgpt.clip_features import region_features, text_features
from rgpt.config import ThresholdParams, load_params, resolve
from rgpt.data.conversations import load_recapd, recapd_index
from rgpt.data.formats import read_split
from rgpt.data.records import DatasetSplit, read_jsonl
from rgpt.embedded.clip import RegionImage, clip_config, train_clip
from rgpt.embedded.tokenizer import CLIP_TEXT_LENGTH, clip_text_tokenizer, train_tokenizer
from rgpt.model.image import to_pixel_values
from rgpt.model.processing_rgpt import region_masks
from rgpt.paths import BASE_CLIP
from rgpt.recap import clip_filter as cf
from rgpt.recap.images import crop_region

from conftest import REPO, embedded

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "white": (245, 245, 245)}
NAMES = [f"{c} square" for c in COLOURS]
TINY = embedded("base_models.clip", vocab_size=400, image_size=32, patch_size=8, hidden_size=32, num_layers=1, num_heads=2,
                  text_hidden_size=32, text_layers=1, projection_dim=16, epochs=1, batch_size=8, learning_rate=3e-3)


@pytest.fixture(scope="module")
def text_tokenizer():
    """A CLIP tokenizer as base_clip makes one: a byte-level BPE on the names, a space in front."""
    texts = [f" a {name}" for name in NAMES] * 5 + [" the square is small", " it sits on the left"]
    return clip_text_tokenizer(train_tokenizer(texts, TINY.vocab_size, CLIP_TEXT_LENGTH))


@pytest.fixture(scope="module")
def tiny_clip(text_tokenizer) -> CLIPModel:
    torch.manual_seed(0)
    return CLIPModel(clip_config(TINY, text_tokenizer)).eval()


def two_colour_image(left: str, right: str) -> Image.Image:
    """32 x 32: the left half one colour, the right half another."""
    image = Image.new("RGB", (32, 32), COLOURS[left])
    ImageDraw.Draw(image).rectangle([16, 0, 31, 31], fill=COLOURS[right])
    return image


LEFT, RIGHT = [0, 0, 16, 32], [16, 0, 16, 32]
PAIRS = [(a, b) for a in COLOURS for b in COLOURS if a != b]  # 12 images, every colour on both sides


# -------------------------------------------------------------------------------------- chunking


def test_a_sentence_beyond_77_tokens_is_cut_into_windows_that_fit_and_lose_no_word(text_tokenizer):
    long = " ".join(["red"] * 200) + "."  # one sentence: 200 x " red" + "." + <s> </s> = 203 tokens
    assert len(text_tokenizer(long).input_ids) == 203
    chunks = cf.chunk_caption(long, text_tokenizer, 77)
    assert [len(c.split()) for c in chunks] == [75, 75, 50]  # 75 words + <s> </s> = 77; the last 50 + "."
    assert [len(text_tokenizer(c).input_ids) for c in chunks] == [77, 77, 53]
    assert " ".join(chunks) == long

    caption = "A red square sits on the left. " + long + " It is small!  And green?"
    chunks = cf.chunk_caption(caption, text_tokenizer, 77)
    assert chunks[0] == "A red square sits on the left." and chunks[-2:] == ["It is small!", "And green?"]
    assert " ".join(chunks).split() == caption.split()  # every word, in order: nothing truncated away
    assert max(len(text_tokenizer(c).input_ids) for c in chunks) <= 77
    word = "x" * 300  # a "word" longer than the window on its own is cut into runs of characters
    pieces = cf.chunk_caption(word, text_tokenizer, 77)
    assert "".join(pieces) == word and all(len(text_tokenizer(p).input_ids) <= 77 for p in pieces)


def test_every_chunk_of_a_long_caption_is_scored_against_its_region(tiny_clip, text_tokenizer):
    image, box = two_colour_image("red", "blue"), LEFT
    caption = "A red square sits on the left. " + " ".join(["red"] * 200) + ". It is small."
    assert len(text_tokenizer(caption).input_ids) > 77  # a truncating CLIP would read only the start
    scorer = cf.ClipScorer(tiny_clip, text_tokenizer, region_input="mask")
    assert scorer.max_tokens == 77
    scores, index = scorer.score([image], [box], [caption])
    chunks = cf.chunk_caption(caption, text_tokenizer, 77)
    assert len(chunks) == 5 and index.tolist() == [0] * 5
    # the same numbers computed by hand: each chunk's text embedding against the region's pooled one
    with torch.no_grad():
        region = region_features(tiny_clip, [image], [region_masks([{"box": box}], 32, 32, 32)], -1)
        text = text_features(tiny_clip, text_tokenizer, chunks)
    expected = (F.normalize(text, dim=-1) @ F.normalize(region, dim=-1).T)[:, 0]  # (5,)
    torch.testing.assert_close(scores, expected)
    assert float(cf.aggregate(scores, index, 1, "mean")) == pytest.approx(float(expected.mean()))
    # the last sentence, past the 77th token, moves the score when it changes
    other, _ = scorer.score([image], [box], [caption.replace("It is small.", "It sits on the left.")])
    assert torch.equal(other[:4], scores[:4]) and other[4] != scores[4]


def test_mask_regions_of_one_image_share_its_tower_pass_and_keep_their_order(tiny_clip, text_tokenizer):
    a, b = two_colour_image("red", "blue"), two_colour_image("green", "white")
    scorer = cf.ClipScorer(tiny_clip, text_tokenizer, region_input="mask")
    together = scorer.region_embeddings([a, b, a], [LEFT, RIGHT, RIGHT])
    alone = torch.cat([scorer.region_embeddings([image], [box]) for image, box in ((a, LEFT), (b, RIGHT), (a, RIGHT))])
    torch.testing.assert_close(together, alone)
    assert torch.allclose(together.norm(dim=-1), torch.ones(3))


def test_crop_regions_are_the_crops_through_clips_image_tower(tiny_clip, text_tokenizer):
    image = two_colour_image("red", "blue")
    scorer = cf.ClipScorer(tiny_clip, text_tokenizer, region_input="crop", context=0.25)
    with torch.no_grad():
        crops = [crop_region(image, box, 0.25) for box in (LEFT, RIGHT)]
        assert crops[0].size == (20, 32)  # the 16-px half and a quarter of it more on its open side
        direct = tiny_clip.get_image_features(pixel_values=to_pixel_values(crops, 32)).pooler_output
    torch.testing.assert_close(scorer.region_embeddings([image, image], [LEFT, RIGHT]), F.normalize(direct, dim=-1))
    with pytest.raises(ValueError, match="region_input must be 'mask' or 'crop'"):
        cf.ClipScorer(tiny_clip, text_tokenizer, region_input="box")


# ------------------------------------------------------------------------- aggregation, cutoff


def test_aggregations_make_one_score_per_caption():
    scores = torch.tensor([0.1, 0.5, 0.3, 0.9, 0.2, 0.4])
    index = torch.tensor([0, 0, 0, 1, 2, 2])  # three captions: three chunks, one, two
    expected = {"mean": [0.3, 0.9, 0.3], "min": [0.1, 0.9, 0.2], "max": [0.5, 0.9, 0.4], "first": [0.1, 0.9, 0.2]}
    for how, values in expected.items():
        torch.testing.assert_close(cf.aggregate(scores, index, 3, how), torch.tensor(values))
    with pytest.raises(ValueError, match="every one of the 4 captions needs at least one chunk"):
        cf.aggregate(scores, index, 4, "mean")
    with pytest.raises(ValueError, match="unknown aggregation 'median'"):
        cf.aggregate(scores, index, 3, "median")


def test_threshold_kinds():
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    assert cf.cutoff(scores, ThresholdParams(kind="percentile", value=50)) == pytest.approx(0.3)
    assert cf.cutoff(scores, ThresholdParams(kind="percentile", value=20)) == pytest.approx(0.18)  # linear
    assert (scores >= cf.cutoff(scores, ThresholdParams(kind="percentile", value=20))).sum() == 4
    assert cf.cutoff(scores, ThresholdParams(kind="percentile", value=0)) == pytest.approx(0.1)  # keeps all
    assert cf.cutoff(scores, ThresholdParams(kind="absolute", value=0.25)) == 0.25
    assert (scores >= cf.cutoff(scores, ThresholdParams(kind="absolute", value=0.25))).sum() == 3
    with pytest.raises(ValueError, match=r"kind percentile must lie in \[0, 100\], got 120"):
        ThresholdParams(kind="percentile", value=120)
    with pytest.raises(ValueError, match=r"kind absolute must lie in \[-1, 1\], got 2"):
        ThresholdParams(kind="absolute", value=2)


def test_the_paper_profile_scores_crops():
    import yaml

    from rgpt.config import Params

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    embedded = load_params(REPO / "params.yaml").clip_filter
    paper = Params.model_validate(resolve({**raw, "profile": "paper"})).clip_filter
    assert embedded.region_input == "mask" and paper.region_input == "crop"
    assert paper.aggregation == embedded.aggregation and paper.threshold == embedded.threshold
    assert load_params(REPO / "params.yaml").conversations.recapd == cf.KEPT  # conversations reads what it keeps


# --------------------------------------------------------------------- measured against truth


# Ten captions by score, four of them corrupted (the lowest two, 0.3 and 0.7).
SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
CORRUPTED = np.array([0, 0, 1, 0, 0, 0, 1, 0, 1, 1], bool)


def test_precision_and_recall_of_removing_known_corruptions():
    dropped = SCORES < 0.25  # 0.2, 0.1, 0.0: two of them corrupted
    assert cf.removal_precision_recall(dropped, CORRUPTED) == {
        "precision": 0.6667, "recall": 0.5, "f1": 0.5714, "dropped": 3, "corrupted": 4, "dropped_corrupted": 2}
    assert cf.removal_precision_recall(np.zeros(10, bool), CORRUPTED)["precision"] == 0.0  # nothing dropped
    curve = cf.removal_curve(SCORES, CORRUPTED)
    assert [r["dropped"] for r in curve] == list(range(1, 11))
    assert [r["max_dropped_score"] for r in curve] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert [round(r["precision"], 4) for r in curve] == [1.0, 1.0, 0.6667, 0.75, 0.6, 0.5, 0.4286, 0.5, 0.4444, 0.4]
    assert [r["recall"] for r in curve] == [0.25, 0.5, 0.5, 0.75, 0.75, 0.75, 0.75, 1.0, 1.0, 1.0]
    assert cf.average_precision(curve) == pytest.approx(0.25 + 0.25 + 0.25 * 0.75 + 0.25 * 0.5)  # 0.8125
    # of the 6 x 4 (truthful, corrupted) pairs, 19 have the truthful caption scoring higher
    assert cf.auc(SCORES, CORRUPTED) == pytest.approx(19 / 24)


def test_ties_go_together():
    scores, corrupted = np.array([0.1, 0.1, 0.2]), np.array([True, False, False])
    assert [(r["dropped"], r["precision"], r["recall"]) for r in cf.removal_curve(scores, corrupted)] == [
        (2, 0.5, 1.0), (3, 0.333333, 1.0)]
    assert cf.auc(scores, corrupted) == pytest.approx(0.75)  # one pair above, one tie (half)
    assert np.isnan(cf.auc(scores, np.zeros(3, bool)))


def test_the_filter_scores_the_named_colour_above_a_wrong_one(text_tokenizer):
    """A tiny CLIP trained on phrases naming the halves of two-colour images: a caption whose first
    sentence names the region's colour outscores one that names another colour, for every region.
    (Its text tower knows only the words it was trained on, as the embedded CLIP knows names and
    phrases: opening with an unseen "A" instead of "a" already costs it 2 of the 24 regions.)"""
    examples = [RegionImage(two_colour_image(a, b), region_masks([{"box": LEFT}, {"box": RIGHT}], 32, 32, 32),
                                 [[f"a {a} square"], [f"a {b} square"]]) for a, b in PAIRS * 2]
    model, _ = train_clip(examples, text_tokenizer, TINY.model_copy(update={"epochs": 25}), seed=0,
                               progress=False)
    scorer = cf.ClipScorer(model, text_tokenizer, region_input="mask")
    images, boxes, texts, truthful = [], [], [], []
    for a, b in PAIRS:
        image = two_colour_image(a, b)
        for box, colour in ((LEFT, a), (RIGHT, b)):
            wrong = next(c for c in COLOURS if c not in (a, b))
            for named in (colour, wrong):
                images.append(image)
                boxes.append(box)
                texts.append(f"a {named} square. it sits in the image.")
                truthful.append(named == colour)
    chunk_scores, index = scorer.score(images, boxes, texts)
    first = cf.aggregate(chunk_scores, index, len(texts), "first").view(-1, 2)  # (regions, [truthful, wrong])
    assert bool((first[:, 0] > first[:, 1]).all()), first


# ------------------------------------------------------------------------------- the stage


QUIET = embedded("recap.standin", corrupt_share=0.3, error_share=0.0, slow_share=0.0)


@pytest.fixture(scope="module")
def stage_dir(corpus, tmp_path_factory):
    """A working directory after recap (stand-in captions of 25 V3Det images, with the corruption
    truth) and base_clip (a tiny CLIP trained on the corpus' validated regions)."""
    from rgpt.recap import stages

    root = tmp_path_factory.mktemp("clip_filter")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for dataset, split in [("v3det", "train"), ("v3det", "val"), ("coco", "train"), ("lvis", "train"),
                               ("vg", "train")]:
            read_split(corpus, dataset, split).save(root / "outputs/validate", f"{dataset}_{split}")
        v3det = read_split(corpus, "v3det", "train")
        DatasetSplit(v3det.dataset, v3det.split, v3det.records[:25], v3det.categories).save(
            root / "outputs/balance", "v3det_finetune")
        params = stage_params(corpus)
        stages.run_recap(params.model_copy(update={"recap": params.recap.model_copy(
            update={"shards": 2, "standin": QUIET})}), progress=False)
        build_base_clip(params, BASE_CLIP, validated=root / "outputs/validate", captions=stages.CAPTIONS,
                             progress=False)
    return root


def stage_params(corpus, **clip_filter):
    params = load_params(REPO / "params.yaml")
    bm = params.base_models.model_copy(update={"clip": TINY.model_copy(update={"batch_size": 64})})
    return params.model_copy(update={"data": params.data.model_copy(update={"root": corpus}), "base_models": bm,
                                     "clip_filter": params.clip_filter.model_copy(update=clip_filter)})


def test_the_stage_keeps_the_captions_at_or_above_the_cutoff_and_measures_itself(stage_dir, corpus, monkeypatch):
    from typer.testing import CliRunner

    from rgpt.cli import app
    from rgpt.recap import stages

    monkeypatch.chdir(stage_dir)
    result = cf.run_clip_filter(stage_params(corpus, gallery=3, batch_size=7), progress=False)
    m = result.metrics
    captions = list(read_jsonl(stages.CAPTIONS))
    truth = {(t["image_id"], t["region_id"]): t["corruption"] for t in read_jsonl(stages.TRUTH)}
    rows = list(read_jsonl(cf.SCORES))
    kept = list(read_jsonl(cf.KEPT))
    assert len(rows) == len(captions) == m["captions"] > 20 and m["kept"] + m["dropped"] == m["captions"]

    # every caption scored over its chunks; kept exactly when its score reaches the percentile cutoff
    scores = np.array([r["clip_score"] for r in rows])
    config = load_params(REPO / "params.yaml").clip_filter
    value = config.threshold.value
    aggregate = {"first": lambda c: c[0], "max": max, "min": min, "mean": np.mean}[config.aggregation]
    cut = np.percentile(scores, value)
    assert m["threshold"] == {"kind": "percentile", "value": value, "cutoff": pytest.approx(cut, abs=1e-6)}
    assert [r["kept"] for r in rows] == [bool(s >= m["threshold"]["cutoff"]) for s in scores]
    assert m["dropped"] == int((scores < cut).sum()) and abs(m["dropped"] - value / 100 * len(rows)) <= 1
    for row, caption in zip(rows, captions):
        chunks = cf.chunk_caption(caption["caption"], load_tokenizer(), 77)
        assert len(row["chunk_scores"]) == len(chunks) >= 5
        assert row["clip_score"] == pytest.approx(aggregate(row["chunk_scores"]), abs=1e-6)
        assert row["corruption"] == truth[(row["image_id"], row["region_id"])]

    # the kept file: recap's records as they were, plus the score; conversations reads it
    by_key = {(c["image_id"], c["region_id"]): c for c in captions}
    assert [(k["image_id"], k["region_id"]) for k in kept] == [(r["image_id"], r["region_id"]) for r in rows
                                                               if r["kept"]]
    assert all({key: value for key, value in k.items() if key != "clip_score"} == by_key[(k["image_id"], k["region_id"])]
               for k in kept)
    assert len(recapd_index(load_recapd(cf.KEPT))) == m["kept"]

    # precision and recall against the stand-in's truth, as recomputed here from the rows
    corrupted = np.array([r["corruption"] is not None for r in rows])
    dropped = np.array([not r["kept"] for r in rows])
    assert m["removal"] == cf.removal_precision_recall(dropped, corrupted)
    assert m["removal"]["corrupted"] == int(corrupted.sum()) > 0
    assert m["corrupted_share"]["after"] == pytest.approx(corrupted[~dropped].mean(), abs=1e-4)
    assert set(m["separation"]) == set(cf.AGGREGATIONS)
    assert m["separation"][config.aggregation]["auc"] == pytest.approx(cf.auc(scores, corrupted), abs=1e-4)
    words = [len(c["caption"].split()) for c in captions]
    assert m["words_per_caption"]["before"]["mean"] == pytest.approx(np.mean(words), abs=0.01)
    assert m["words_per_caption"]["after"]["mean"] == pytest.approx(np.mean([len(k["caption"].split()) for k in kept]),
                                                                     abs=0.01)

    # the reports: DVC metrics, plots, the removal curve, the gallery
    assert json.loads(cf.METRICS.read_text()) == m
    for name in ("scores.png", "removal_curve.png", "words_per_caption.png", "removal_curve.csv",
                 "words_per_caption.csv", "gallery.html"):
        assert result.artifacts[name].exists() and result.artifacts[name].stat().st_size > 0, name
    gallery = result.artifacts["gallery.html"].read_text()
    assert gallery.count('class="card kept"') == 3 and gallery.count('class="card dropped"') == 3
    curve = (cf.FILTER_REPORTS / "removal_curve.csv").read_text().splitlines()
    assert curve[0] == "max_dropped_score,dropped,dropped_share,precision,recall,f1"
    assert len(curve) - 1 == len(set(scores))

    out = CliRunner().invoke(app, ["recap", "stats"], terminal_width=160)
    assert out.exit_code == 0, out.output
    assert f"{m['kept']} / {m['dropped']} of {m['captions']}" in out.output
    assert f"precision {m['removal']['precision']:.3f}" in out.output
    assert "words per caption, kept by clip_filter" in out.output


def load_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(BASE_CLIP)


def test_an_absolute_threshold_and_crops_run_too(stage_dir, corpus, monkeypatch):
    monkeypatch.chdir(stage_dir)
    params = stage_params(corpus, region_input="crop", context=0.5, aggregation="mean",
                          threshold=ThresholdParams(kind="absolute", value=0.0), gallery=0)
    m = cf.run_clip_filter(params, progress=False).metrics
    rows = list(read_jsonl(cf.SCORES))
    assert m["threshold"]["cutoff"] == 0.0 and m["kept"] == sum(r["clip_score"] >= 0 for r in rows)
    assert all(r["clip_score"] == pytest.approx(np.mean(r["chunk_scores"]), abs=1e-5) for r in rows)
    assert m["region_input"] == "crop" and m["aggregation"] == "mean"


# ------------------------------------------------------------------------------------ bad input


def _good_record(corpus) -> dict:
    record = read_split(corpus, "v3det", "train").records[0]
    region = record.regions[0]
    return {"dataset": "v3det", "split": "train", "image_id": record.image_id, "region_id": region.id,
            "file_name": record.file_name, "box": region.box, "class_name": region.category,
            "caption": "A red square. It is small."}


@pytest.mark.parametrize("change, message", [
    ({"box": None}, r"captions\.jsonl:2: region \d+ of v3det image \d+: field 'box' must be list, got None"),
    ({"box": [1, 2, 0, 5]}, r"captions\.jsonl:2: .*field 'box' must be \[x, y, w, h\] with w, h > 0"),
    ({"box": [5000, 5000, 4, 4]}, r"captions\.jsonl:2: .*its box \[5000, 5000, 4, 4\] lies outside its \d+x\d+ image"),
    ({"region_id": "7"}, r"captions\.jsonl:2: region 7 of v3det .*field 'region_id' must be int, got '7'"),
    ({"caption": "  "}, r"captions\.jsonl:2: .*field 'caption' is empty"),
    ({"file_name": "v3det/missing.jpg"}, r"captions\.jsonl:2: .*its image .*v3det/missing\.jpg does not exist"),
    ({"caption": None}, r"captions\.jsonl:2: .*field 'caption' must be str, got None"),
])
def test_bad_captions_name_the_file_line_and_field(corpus, tmp_path, change, message):
    good = _good_record(corpus)
    path = tmp_path / "captions.jsonl"
    second = {**good, "region_id": good["region_id"] + 1000, **change}
    path.write_text(json.dumps(good) + "\n" + json.dumps(second) + "\n")
    with pytest.raises(cf.CaptionFileError, match=message):
        cf.read_captions(path, corpus)


def test_missing_fields_duplicates_broken_lines_and_foreign_truth_are_named(corpus, tmp_path):
    good = _good_record(corpus)
    path = tmp_path / "captions.jsonl"
    path.write_text(json.dumps({k: v for k, v in good.items() if k != "file_name"}) + "\n")
    with pytest.raises(cf.CaptionFileError, match=r"captions\.jsonl:1: region \d+ .*field 'file_name' is missing"):
        cf.read_captions(path, corpus)
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(good) + "\n")
    with pytest.raises(cf.CaptionFileError, match=r"captions\.jsonl:3: .*already has a caption on line 1"):
        cf.read_captions(path, corpus)
    path.write_text(json.dumps(good) + '\n{"dataset": "v3det", \n')
    with pytest.raises(ValueError, match=r"captions\.jsonl:2: not valid JSON"):
        cf.read_captions(path, corpus)
    path.write_text(json.dumps(good) + "\n")
    captions = cf.read_captions(path, corpus)
    truth = tmp_path / "truth.jsonl"
    truth.write_text(json.dumps({"dataset": "v3det", "image_id": -1, "region_id": 1, "corruption": None}) + "\n")
    with pytest.raises(cf.CaptionFileError, match=r"truth\.jsonl: no truth for region \d+ of v3det image"):
        cf.read_truth(truth, captions)
    truth.write_text(json.dumps({"dataset": "v3det", "image_id": 1, "region_id": 1, "corruption": 3}) + "\n")
    with pytest.raises(cf.CaptionFileError, match=r"truth\.jsonl:1: .*field 'corruption' must be str or null"):
        cf.read_truth(truth, captions)
    with pytest.raises(FileNotFoundError, match="run the recap stage first"):
        cf.read_captions(tmp_path / "absent.jsonl", corpus)
    with pytest.raises(FileNotFoundError, match="run the base_clip stage first"):
        cf.ClipScorer.from_pretrained(tmp_path / "no_clip")
