"""Evaluation: each metric against hand-computed values, POPE's yes/no rule, REC's ground-truth
insertion, COCOeval fed correctly, the runner's cache and resume, and every benchmark end to end
on a small corpus with a tiny (untrained) RGPT."""

from __future__ import annotations

import json
import random

import pytest

from rgpt.config import load_params
from rgpt.data import formats
from rgpt.data.records import DatasetSplit, ImageRecord, Region
from rgpt.eval import benchmarks, rec
from rgpt.eval import classification as cls
from rgpt.eval.captioning import caption_scores
from rgpt.eval.pope import is_yes, pope_metrics
from rgpt.eval.runner import Item, read_cache, run
from rgpt.eval.stages import write_reports
from rgpt.model.modeling_rgpt import RGPTForConditionalGeneration

from conftest import REPO, tiny_config

# ------------------------------------------------------------------------------------- POPE


def test_pope_yes_no_rule_is_popes_own_quirks_included():
    no = ["No.", "No, there is no car.", "There is not a car", "There's no umbrella", "no", "Yes, no."]
    yes = ["Yes", "NO", "Nope", "Not really", "I don't think so.", "no\n", "", "N/A", "Yes. No"]
    assert [is_yes(a) for a in no] == [False] * len(no)
    assert [is_yes(a) for a in yes] == [True] * len(yes)


def test_pope_metrics_on_the_reference_worked_example():
    # shared/reference/pope.md §3: 12 answers against yes/no labels alternating, computed by hand
    answers = ["Yes, there is a snowboard.", "No.", "Yes", "There is not a car", "Yes.", "NO", "Yes",
               "Nope, there isn't.", "yes", "no", "Not really.", "no"]
    labels = ["yes", "no"] * 6
    m = pope_metrics(answers, labels)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (6, 2, 4, 0)
    assert m["accuracy"] == pytest.approx(10 / 12) and m["precision"] == pytest.approx(0.75)
    assert m["recall"] == 1.0 and m["f1"] == pytest.approx(6 / 7) and m["yes_ratio"] == pytest.approx(8 / 12)


def test_pope_metrics_of_a_model_that_never_says_yes_do_not_divide_by_zero():
    m = pope_metrics(["No."] * 4, ["yes", "no", "yes", "no"])
    assert (m["precision"], m["recall"], m["f1"], m["yes_ratio"], m["accuracy"]) == (0.0, 0.0, 0.0, 0.0, 0.5)
    with pytest.raises(ValueError, match="by position"):
        pope_metrics(["yes"], ["yes", "no"])


# --------------------------------------------------------------------------- classification


def test_answers_are_normalised_before_they_are_matched_to_categories():
    vocabulary = cls.Vocabulary(["car", "person", "skis", "wine glass", "bus", "teddy bear", "baby"])
    answers = ["Car.", "the person", " PERSON ", "skis", "wine glasses", "buses", "Teddy  bears!", "babies", "aircraft",
               "a car and a bus"]
    assert [vocabulary.match(a) for a in answers] == ["car", "person", "person", "skis", "wine glass", "bus",
                                                      "teddy bear", "baby", None, None]


def test_one_turn_answers_split_into_one_part_per_region():
    assert cls.split_answer("Car, person and kite.", 3) == ["Car", "person", "kite"]
    assert cls.split_answer("car", 2) == ["car", ""]  # too few parts: the missing ones are wrong
    assert cls.split_answer("a, b, c", 2) == ["a", "b"]


def test_accuracy_counts_off_vocabulary_answers_as_wrong():
    m = cls.accuracy_figures(["car", "car", "person", "bus"], ["car", None, "car", "bus"])
    assert m == {"accuracy": 0.5, "off_vocabulary": 1, "off_vocabulary_ratio": 0.25, "regions": 4}


def coco_split() -> DatasetSplit:
    """Two images: a car and a person far apart; a bus, and a crowd region that COCOeval ignores."""
    regions_1 = [Region([0, 0, 10, 10], id=1, category_id=3, category="car"),
                 Region([50, 50, 10, 10], id=2, category_id=1, category="person")]
    regions_2 = [Region([5, 5, 20, 20], id=3, category_id=6, category="bus"),
                 Region([40, 40, 30, 30], id=4, category_id=1, category="person", iscrowd=True)]
    records = [ImageRecord("coco", "val", 10, "coco/val2017/10.jpg", 100, 100, regions_1),
               ImageRecord("coco", "val", 11, "coco/val2017/11.jpg", 100, 100, regions_2)]
    return DatasetSplit("coco", "val", records, {1: "person", 3: "car", 6: "bus"})


def predictions(names: dict[int, str | None], log_probs: dict[int, float]) -> list[dict]:
    image = {1: 10, 2: 10, 3: 11}
    return [{"image_id": image[r], "region_id": r, "predicted": names[r], "log_prob": log_probs[r]} for r in names]


def test_perfect_predictions_score_ap_one():
    split = coco_split()
    rows = predictions({1: "car", 2: "person", 3: "bus"}, {1: -0.1, 2: -0.2, 3: -0.3})
    found = cls.coco_map(split, cls.detections(split, rows, lambda r: r["predicted"]))
    assert found["map"] == pytest.approx(1.0) and found["map_50"] == pytest.approx(1.0)
    assert found["ap_per_category"] == pytest.approx({"person": 1.0, "car": 1.0, "bus": 1.0})


def test_map_by_hand_with_a_wrong_and_an_off_vocabulary_answer():
    split = coco_split()
    # the person is called a car (a false positive for car, after the true one: AP(car) stays 1),
    # the bus answer named no category: no detection, AP(bus) = 0, AP(person) = 0
    rows = predictions({1: "car", 2: "car", 3: None}, {1: -0.1, 2: -0.5, 3: -0.3})
    found = cls.coco_map(split, cls.detections(split, rows, lambda r: r["predicted"]))
    assert found["ap_per_category"] == pytest.approx({"person": 0.0, "car": 1.0, "bus": 0.0})
    assert found["map"] == pytest.approx(1 / 3)


def test_a_confident_wrong_answer_ranks_first_and_halves_the_ap():
    split = coco_split()
    # the wrong 'car' is the more probable answer: precision 1/2 at recall 1 for car
    rows = predictions({1: "car", 2: "car", 3: "bus"}, {1: -0.5, 2: -0.1, 3: -0.3})
    found = cls.coco_map(split, cls.detections(split, rows, lambda r: r["predicted"]))
    assert found["ap_per_category"]["car"] == pytest.approx(0.5)


def test_tied_scores_rank_in_question_order_as_cocoevals_stable_sort_does():
    split = coco_split()
    tie = {1: -0.2, 2: -0.2, 3: -0.3}
    rows = predictions({1: "car", 2: "car", 3: "bus"}, tie)
    first_right = cls.coco_map(split, cls.detections(split, rows, lambda r: r["predicted"]))
    first_wrong = cls.coco_map(split, cls.detections(split, rows[::-1], lambda r: r["predicted"]))
    assert first_right["ap_per_category"]["car"] == pytest.approx(1.0)
    assert first_wrong["ap_per_category"]["car"] == pytest.approx(0.5)


def test_no_detections_at_all_score_zero():
    found = cls.coco_map(coco_split(), [])
    assert found["map"] == 0.0 and set(found["ap_per_category"].values()) == {0.0}


# -------------------------------------------------------------------------------------- REC


def test_iou_of_boxes():
    assert rec.iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert rec.iou([0, 0, 10, 10], [5, 0, 10, 10]) == pytest.approx(50 / 150)
    assert rec.iou([0, 0, 10, 10], [20, 20, 5, 5]) == 0.0


def test_ground_truth_is_inserted_only_when_no_proposal_reaches_iou_half():
    target = [0, 0, 10, 10]
    good = [[40, 40, 5, 5], [1, 0, 10, 10]]  # IoU 9/11 with the target
    assert rec.with_ground_truth(good, target, random.Random(0)) == (good, False)
    poor = [[40, 40, 5, 5], [5, 0, 10, 10]]  # IoU 1/3
    boxes, inserted = rec.with_ground_truth(poor, target, random.Random(0))
    assert inserted and len(boxes) == 3 and boxes.count(target) == 1 and [b for b in boxes if b != target] == poor
    assert rec.with_ground_truth([], target, random.Random(0)) == ([target], True)


def test_rec_answers_are_parsed_and_judged_by_iou():
    proposals = [[40, 40, 5, 5], [1, 0, 10, 10]]
    assert rec.parse_choice("Region [2].", 2) == 1 and rec.parse_choice("I think Region [1]", 2) == 0
    assert rec.parse_choice("Region [3].", 2) is None and rec.parse_choice("No corresponding options found.", 2) is None
    assert rec.parse_choice("region 2", 2) is None
    assert rec.is_right(1, proposals, [0, 0, 10, 10]) and not rec.is_right(0, proposals, [0, 0, 10, 10])
    assert not rec.is_right(None, proposals, [0, 0, 10, 10])
    rows = [{"right": True, "choice": 1, "inserted": False}, {"right": False, "choice": None, "inserted": True},
            {"right": False, "choice": 0, "inserted": False}, {"right": True, "choice": 0, "inserted": True}]
    assert rec.rec_figures(rows) == {"accuracy": 0.5, "unparseable": 1, "unparseable_ratio": 0.25,
                                     "ground_truth_inserted": 2, "expressions": 4}


def test_proposals_file_errors_name_the_file_and_the_box(tmp_path):
    path = tmp_path / "proposals.json"
    path.write_text(json.dumps({"coco/train2014/a.jpg": [[0, 0, 5, 5], [1, 2, 0, 4]]}))
    with pytest.raises(ValueError, match=r"proposals.json: proposal 1 of 'coco/train2014/a.jpg'"):
        rec.read_proposals(path)
    path.write_text("[1, 2")
    with pytest.raises(ValueError, match="cannot read the REC proposals file"):
        rec.read_proposals(path)


# ------------------------------------------------------------------------------- captioning


def test_caption_scores_of_exact_and_disjoint_captions():
    # one reference each: a caption equal to it has cosine 1 at every n-gram order it has, and CIDEr
    # is 10 x the mean over orders 1-4 (a 3-word caption has no 4-gram: 3/4); METEOR keeps only a
    # fragmentation penalty of 0.5 (1 chunk / m matches)^3
    references = [["a red circle on the left"], ["the blue star"], ["a small green square"]]
    exact = caption_scores(["a red circle on the left", "the blue star", "a small green square"], references)
    assert exact["cider"] == pytest.approx(10 * (1 + 3 / 4 + 1) / 3) and exact["meteor"] == pytest.approx(1 - 0.5 / 6 ** 3, abs=0.02)
    disjoint = caption_scores(["zebra", "zebra", "zebra"], references)
    assert disjoint["cider"] == 0.0 and disjoint["meteor"] == 0.0 and disjoint["captions"] == 3
    with pytest.raises(ValueError, match="caption 1 has no reference"):
        caption_scores(["a", "b"], [["a"], [" "]])


# ----------------------------------------------------------------------------------- runner


@pytest.fixture(scope="module")
def tiny_model(tokenizer):
    return RGPTForConditionalGeneration(tiny_config(tokenizer)).eval()


def test_runner_resumes_from_its_cache_and_starts_over_for_another_model(corpus, tiny_model, processor, tmp_path):
    split = formats.read_split(corpus, "coco", "val")
    items = [Item(f"q{k}", r.file_name, [("<image>\nWhat is in <region>?", None)],
                  [{"box": r.regions[0].box, "segmentation": None}], {"truth": k})
             for k, r in enumerate(split.records[:5])]
    cache, key = tmp_path / "part.jsonl", {"model": "m1"}
    # an interrupted run: two predictions written, the third cut off mid-line
    (tmp_path / "part.key.json").write_text(json.dumps(key))
    done = [{"id": f"q{k}", "prediction": "from the cache", "log_prob": 0.0, "latency_s": 0.0} for k in range(2)]
    cache.write_text("".join(json.dumps(d) + "\n" for d in done) + '{"id": "q2", "predic')
    rows = run(items, tiny_model, processor, corpus, cache, key, batch_size=2, max_new_tokens=3, progress=False)
    assert [r["id"] for r in rows] == [f"q{k}" for k in range(5)]
    assert [r["prediction"] for r in rows[:2]] == ["from the cache"] * 2
    assert all(r["prediction"] != "from the cache" and r["truth"] == k for k, r in enumerate(rows) if k >= 2)
    assert all(r["log_prob"] <= 0 and r["latency_s"] > 0 for r in rows[2:])
    assert set(read_cache(cache)) == {f"q{k}" for k in range(5)}
    again = run(items, tiny_model, processor, corpus, cache, key, batch_size=2, max_new_tokens=3, progress=False)
    assert again == rows  # nothing generated twice
    other = run(items[:1], tiny_model, processor, corpus, cache, {"model": "m2"}, max_new_tokens=3, progress=False)
    assert other[0]["prediction"] != "from the cache" and (tmp_path / "part.jsonl.stale").exists()
    with pytest.raises(ValueError, match="unique"):
        run(items + items[:1], tiny_model, processor, corpus, cache, key, progress=False)


# ------------------------------------------------------------------------- every benchmark


@pytest.fixture(scope="module")
def validated(corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("validated")
    for dataset, split in [("coco", "val"), ("refcocog", "val"), ("refcocog", "test"), ("vg", "test")]:
        formats.read_split(corpus, dataset, split).save(root, f"{dataset}_{split}")
    return root


@pytest.mark.parametrize("mode", ["one_turn_one", "multi_turn_all", "one_turn_all"])
def test_every_benchmark_runs_end_to_end_and_writes_its_results(corpus, validated, tiny_model, processor, tmp_path,
                                                               mode):
    params = load_params(REPO / "params.yaml")
    settings = params.evaluate.model_copy(update={"max_questions": 6, "max_new_tokens": 4, "classification_mode": mode})
    ev = benchmarks.Evaluation(tiny_model, processor, settings, corpus, validated, tmp_path / "out", "tiny",
                               progress=False)
    metrics = {name: benchmarks.EVALUATORS[name](ev) for name in
               (["classification"] if mode != "one_turn_one" else benchmarks.BENCHMARKS)}
    c = metrics["classification"]
    assert c["mode"] == mode and 6 <= c["regions"] < 6 + 10 and 0 <= c["accuracy"] <= 1 and 0 <= c["map"] <= 1
    rows = [json.loads(line) for line in (tmp_path / "out/classification/coco_val.jsonl").read_text().splitlines()]
    assert rows and all("prediction" in r and "latency_s" in r for r in rows)
    if mode != "one_turn_one":
        return
    assert set(metrics["captioning"]) == {"refcocog_val", "vg_test"}
    assert all(m["captions"] == 6 for m in metrics["captioning"].values())
    assert all(m["expressions"] == 6 for m in metrics["rec"].values())
    assert all(metrics["pope"][s]["questions"] == 6 for s in ("random", "popular", "adversarial"))
    assert metrics["pope"]["question_files"] == "AoiDragon/POPE@109985c74a00a88ba5341f9b0c1d4900f2a1f789"
    (tmp_path / "SYNTHETIC.json").write_text("{}")  # what the download stage writes beside a synthetic corpus
    assert benchmarks.pope_version(tmp_path) == "synthetic (built by POPE's rules)"
    rec_rows = [json.loads(x) for x in (tmp_path / "out/rec/refcocog_val.jsonl").read_text().splitlines()]
    assert all(any(rec.iou(p, r["target"]) >= 0.5 for p in r["proposals"]) for r in rec_rows)
    pope_rows = [json.loads(x) for x in (tmp_path / "out/pope/random.jsonl").read_text().splitlines()]
    assert all(r["label"] in ("yes", "no") and r["image"].startswith("coco/val2014/") for r in pope_rows)
    result = write_reports(metrics, ev.figures, params, "tiny", reports=tmp_path / "reports")
    assert set(result.artifacts) == {"metrics.json", "report.md", "ap_per_category.csv", "ap_per_category.png",
                                     "pope.png"}
    report = (tmp_path / "reports/report.md").read_text()
    assert "| paper | 70.0 |" in report and "86.44" in report and "109.9" in report and "97.75" in report


def test_multi_turn_questions_carry_the_models_earlier_answers(corpus, validated, tiny_model, processor, tmp_path):
    params = load_params(REPO / "params.yaml").evaluate.model_copy(
        update={"max_questions": 3, "max_new_tokens": 3, "classification_mode": "multi_turn_all"})
    ev = benchmarks.Evaluation(tiny_model, processor, params, corpus, validated, tmp_path, "tiny", progress=False)
    benchmarks.evaluate_classification(ev)
    split = DatasetSplit.load(validated, "coco_val")
    rows = [json.loads(x) for x in (tmp_path / "classification/coco_val.jsonl").read_text().splitlines()]
    index, regions = next((i, r) for i, r in cls.regions_to_classify(split) if len(r) >= 2)
    image_id, by_id = split.records[index].image_id, {r["id"]: r for r in rows}
    one, two = by_id[f"{image_id}/{regions[0].id}"], by_id[f"{image_id}/{regions[1].id}"]
    assert "history" not in one and one["question"].startswith("<image>\n")
    assert two["history"] == [[one["question"], one["prediction"]]] and not two["question"].startswith("<image>")
    assert two["question"].endswith("Answer the question using COCO-80 category names.")
