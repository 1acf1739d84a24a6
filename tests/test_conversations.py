"""Conversation building: every placeholder gets its region, every answer matches its question."""

import json
import re

import pytest

from rgpt.config import ConversationsParams
from rgpt.data.conversations import (
    build,
    build_finetune,
    build_pretrain,
    conversation_stats,
    load_recapd,
    read_conversations,
    region_list,
    write_conversations,
)
from rgpt.data.records import DatasetSplit, ImageRecord, Region, Relation
from rgpt.data.templates import DESCRIPTION, REGION, load_templates

T = load_templates()
COCO_PROMPT = " Answer the question using COCO-80 category names."
REC_PROMPT = " Answer the question using the template Region [x]."

from conftest import embedded


def box(i: int) -> list[float]:
    """A box no other test region has, so a box names its region."""
    return [float(i), float(2 * i), 10.0 + i, 5.0 + i]


def image(dataset: str, image_id, regions=(), relations=(), captions=(), caption_prompts=(),
          split="train") -> ImageRecord:
    return ImageRecord(dataset, split, image_id, f"{dataset}/{image_id}.jpg", 640, 480,
                       list(regions), list(relations), list(captions), list(caption_prompts))


def classified(dataset: str, image_id: int, names: list[str], first_box: int) -> ImageRecord:
    return image(dataset, image_id, [Region(box(first_box + i), id=first_box + i, category_id=i, category=name)
                                     for i, name in enumerate(names)])


def splits() -> dict[str, DatasetSplit]:
    v3det = [classified("v3det", 1, ["iPod", "Tabby cat"], 100), classified("v3det", 2, ["iPod"], 110)]
    coco = [classified("coco", 7, ["person", "traffic light", "kite"], 200)]
    lvis = [classified("lvis", 7, ["bat_(animal)", "person"], 300)]
    horse = Region(box(401), id=401, phrases=["brown horse"])
    vg = [image("vg", 40, [Region(box(400), id=400, phrases=[" a man riding a horse "]), horse],
                [Relation(Region(box(402), id=402, category="man"), " Riding ", horse)])]
    refcocog = [image("refcocog", 9, [
        Region(box(500), id=500, category="dog", phrases=["the black dog", "dog on left"]),
        Region(box(501), id=501, category="dog", phrases=["the white dog"]),
        Region(box(502), id=502, category="cat")])]  # not referred to: only ever a proposal
    llava = [image("llava", "004539375", captions=[" select luxury furniture "],
                   caption_prompts=["Render a clear and concise summary of the photo.\n<image>"])]
    return {
        "v3det_pretrain": DatasetSplit("v3det", "pretrain", v3det),
        "v3det_finetune": DatasetSplit("v3det", "finetune", v3det[:1]),
        "coco_finetune": DatasetSplit("coco", "finetune", coco,
                                      {1: "person", 10: "traffic light", 38: "kite", 3: "car", 28: "umbrella"}),
        "lvis_finetune": DatasetSplit("lvis", "finetune", lvis),
        "vg_train": DatasetSplit("vg", "train", vg),
        "refcocog_train": DatasetSplit("refcocog", "train", refcocog),
        "llava_train": DatasetSplit("llava", "train", llava),
    }


def params(**overrides) -> ConversationsParams:
    return embedded("conversations", **{"rec_absent_ratio": 0.0, "recapd": None, **overrides})


def turns(sample: dict) -> list[tuple[str, str, str, list[list[float]]]]:
    """(task, question, answer, boxes of the question's regions) for every question/answer pair.

    The first question's leading "<image>\n" is left out (test_sample_structure checks it).
    """
    out, k = [], 0
    conversation = sample["conversations"]
    for t, task in enumerate(sample["tasks"]):
        question, answer = conversation[2 * t]["value"].removeprefix("<image>\n"), conversation[2 * t + 1]["value"]
        n = question.count(REGION)
        out.append((task, question, answer, [r["box"] for r in sample["regions"][k:k + n]]))
        k += n
    return out


def all_turns(samples: list[dict], task: str | None = None) -> list[tuple[str, str, str, list]]:
    return [turn for s in samples for turn in turns(s) if task in (None, turn[0])]


def template_pattern(template: str) -> str:
    """A regex matching `template` with `<region>` expanded to a list and `<description>` filled."""
    region_list = r"(?:<region>|Region \[1\] <region>(?:, Region \[\d+\] <region>)* and Region \[\d+\] <region>)"
    parts = [re.escape(part).replace(re.escape(REGION), region_list) for part in template.split(DESCRIPTION)]
    return "(.+)".join(parts)


def matching_template(question: str, templates: tuple[str, ...], suffix: str = "") -> re.Match | None:
    return next((m for t in templates if (m := re.fullmatch(template_pattern(t) + re.escape(suffix), question))), None)


@pytest.fixture(scope="module")
def pretrain():
    return build_pretrain(splits(), params(), T)


@pytest.fixture(scope="module")
def finetune():
    return build_finetune(splits(), params(), T)


def test_sample_structure(pretrain, finetune):
    for sample in pretrain + finetune:
        conversation = sample["conversations"]
        humans = [c["value"] for c in conversation[::2]]
        assert [c["from"] for c in conversation] == ["human", "gpt"] * len(sample["tasks"])
        assert sum(h.count(REGION) for h in humans) == len(sample["regions"])
        assert humans[0].startswith("<image>\n") and humans[0].count("<image>") == 1
        assert not any("<image>" in c["value"] for c in conversation[1:])
        assert sample["image"] == f"{sample['dataset']}/{sample['id'].split('/')[2].split('#')[0]}.jpg"
        assert (sample["width"], sample["height"]) == (640, 480)
    assert len({s["id"] for s in finetune}) == len(finetune)
    assert sorted(s["id"] for s in pretrain) == [
        "llava/train/004539375#0", "refcocog/train/9#0", "v3det/train/1#0", "v3det/train/2#0", "vg/train/40#0"]


def test_pretrain_and_finetune_tasks(pretrain, finetune):
    tasks = lambda samples: {s["dataset"]: sorted(set(s["tasks"])) for s in samples}  # noqa: E731
    assert tasks(pretrain) == {"v3det": ["classification"], "vg": ["brief_caption", "relationship"],
                               "refcocog": ["brief_caption", "rec"], "llava": ["image_caption"]}
    assert tasks(finetune) == {"v3det": ["classification"], "coco": ["classification", "presence"],
                               "lvis": ["classification"], "vg": ["brief_caption", "relationship"],
                               "refcocog": ["brief_caption", "rec"]}


def test_classification_answer_is_the_category_of_the_region_at_that_placeholder(finetune):
    expected = {tuple(r.box): r.category for split in splits().values() for rec in split.records for r in rec.regions}
    answers = {(s["dataset"], a): expected[tuple(boxes[0])] for s in finetune
               for task, _, a, boxes in turns(s) if task == "classification"}
    assert answers == {("v3det", "iPod"): "iPod", ("v3det", "Tabby cat"): "Tabby cat",  # case kept
                       ("coco", "person"): "person", ("coco", "traffic light"): "traffic light",
                       ("coco", "kite"): "kite",
                       ("lvis", "bat (animal)"): "bat_(animal)", ("lvis", "person"): "person"}


def test_questions_come_from_their_table(pretrain, finetune):
    tables = {"classification": T.classification, "brief_caption": T.brief_caption,
              "relationship": T.relationship, "rec": T.rec}
    for sample in pretrain + finetune:
        for task, question, _, _ in turns(sample):
            if task == "image_caption":
                assert question == "Render a clear and concise summary of the photo."
                continue
            if task == "presence":  # POPE's wording: test_presence_asks_about_present_and_absent_objects...
                continue
            coco = COCO_PROMPT if sample["dataset"] == "coco" else ""
            suffix = {"classification": coco, "rec": REC_PROMPT}.get(task, "")
            assert matching_template(question, tables[task], suffix), (task, question)


def test_coco_prompt_only_on_coco_classification(finetune):
    with_prompt = {(s["dataset"], task) for s in finetune for task, q, _, _ in turns(s) if q.endswith(COCO_PROMPT)}
    coco_questions = [q for s in finetune if s["dataset"] == "coco" for t, q, _, _ in turns(s) if t == "classification"]
    assert with_prompt == {("coco", "classification")}
    assert len(coco_questions) == 3 and all(q.endswith(COCO_PROMPT) for q in coco_questions)


def test_brief_caption_and_relationship_answers(pretrain):
    vg = next(s for s in pretrain if s["dataset"] == "vg")
    assert [(task, answer, boxes) for task, _, answer, boxes in turns(vg)] == [
        ("brief_caption", "a man riding a horse", [box(400)]),
        ("brief_caption", "brown horse", [box(401)]),
        ("relationship", "man riding brown horse", [box(402), box(401)]),  # subject first
    ]
    # each region's name: its category, else its first phrase, stripped
    assert [r["name"] for r in vg["regions"]] == ["a man riding a horse", "brown horse", "man", "brown horse"]


def test_llava_keeps_its_instruction_and_caption(pretrain):
    llava = next(s for s in pretrain if s["dataset"] == "llava")
    assert llava["conversations"] == [
        {"from": "human", "value": "<image>\nRender a clear and concise summary of the photo."},
        {"from": "gpt", "value": "select luxury furniture"}]
    assert llava["regions"] == [] and llava["tasks"] == ["image_caption"]


def test_presence_asks_about_present_and_absent_objects_as_pope_words_it(finetune):
    asked = all_turns(finetune, "presence")
    suffix = "\nAnswer the question using a single word or phrase."
    assert len(asked) == 4 and all(q.endswith(suffix) and boxes == [] for _, q, _, boxes in asked)
    names = {re.fullmatch(r"Is there an? (.+) in the image\?", q.removesuffix(suffix)).group(1): a
             for _, q, a, _ in asked}
    present = {"person", "traffic light", "kite"}
    assert sorted(a for a in names.values()) == ["No", "No", "Yes", "Yes"]
    assert all((a == "Yes") == (n in present) for n, a in names.items())
    assert {n for n, a in names.items() if a == "No"} == {"car", "umbrella"}  # the split's other categories
    assert any(q.startswith("Is there an umbrella") for _, q, _, _ in asked)  # POPE's article


def test_rec_answer_points_at_the_described_region():
    target_of = {"the black dog": box(500), "dog on left": box(500), "the white dog": box(501)}
    for seed in range(20):  # different shuffles of the proposals
        samples = build(splits(), {"refcocog_train": ("rec",)}, params(seed=seed), T)
        rec = all_turns(samples, "rec")
        assert len(rec) == 2  # one per referred region; the unreferred cat is only a proposal
        for _, question, answer, boxes in rec:
            description = matching_template(question, T.rec, REC_PROMPT).group(1)
            index = int(re.fullmatch(r"Region \[(\d)\]\.", answer).group(1))
            assert len(boxes) == 3 and boxes[index - 1] == target_of[description]


def test_rec_target_position_is_shuffled():
    positions = {answer for seed in range(20)
                 for _, _, answer, _ in all_turns(build(splits(), {"refcocog_train": ("rec",)}, params(seed=seed), T))}
    assert positions == {"Region [1].", "Region [2].", "Region [3]."}


def test_rec_absent_target_is_not_offered():
    samples = build(splits(), {"refcocog_train": ("rec",)}, params(rec_absent_ratio=1.0), T)
    for _, question, answer, boxes in all_turns(samples, "rec"):
        description = matching_template(question, T.rec, REC_PROMPT).group(1)
        target = box(500) if "dog" in description and "white" not in description else box(501)
        assert answer == "No corresponding options found."
        assert target not in boxes and len(boxes) == 2


def test_rec_never_absent_when_the_target_is_alone():
    alone = {"refcocog_train": DatasetSplit("refcocog", "train", [
        image("refcocog", 3, [Region(box(1), id=1, phrases=["a lone tree"])])])}
    samples = build(alone, {"refcocog_train": ("rec",)}, params(rec_absent_ratio=1.0), T)
    assert [(answer, boxes) for _, _, answer, boxes in all_turns(samples)] == [("Region [1].", [box(1)])]


@pytest.mark.parametrize("max_proposals, max_regions, offered", [(6, 10, 6), (6, 4, 4), (20, 30, 12)])
def test_rec_proposals_are_capped(max_proposals, max_regions, offered):
    crowded = {"refcocog_train": DatasetSplit("refcocog", "train", [
        image("refcocog", 3, [Region(box(i), id=i, phrases=[f"thing {i}"] if i == 0 else []) for i in range(12)])])}
    samples = build(crowded, {"refcocog_train": ("rec",)},
                    params(rec_max_proposals=max_proposals, max_regions_per_conversation=max_regions), T)
    [(_, _, answer, boxes)] = all_turns(samples)
    assert len(boxes) == offered and boxes[int(answer[8:-2]) - 1] == box(0)


def coco_image(n: int) -> dict[str, DatasetSplit]:
    return {"coco_finetune": DatasetSplit("coco", "finetune", [classified("coco", 5, [f"c{i}" for i in range(n)], 0)])}


def test_region_list_numbers_several_regions_as_rec_answers_name_them():
    assert region_list(1) == "<region>"
    assert region_list(2) == "Region [1] <region> and Region [2] <region>"
    assert region_list(4) == "Region [1] <region>, Region [2] <region>, Region [3] <region> and Region [4] <region>"


def test_classification_modes():
    cls = {"coco_finetune": ("classification",)}
    [multi] = build(coco_image(3), cls, params(classification_mode="multi_turn_all"), T)
    assert [(a, b) for _, _, a, b in turns(multi)] == [("c0", [box(0)]), ("c1", [box(1)]), ("c2", [box(2)])]

    [one] = build(coco_image(3), cls, params(classification_mode="one_turn_all"), T)
    [(_, question, answer, boxes)] = turns(one)
    assert "Region [1] <region>, Region [2] <region> and Region [3] <region>" in question
    assert question.endswith(COCO_PROMPT)
    assert (answer, boxes) == ("c0, c1, c2", [box(0), box(1), box(2)])

    each = build(coco_image(3), cls, params(classification_mode="one_turn_one"), T)
    assert [s["id"] for s in each] == ["coco/train/5#0", "coco/train/5#1", "coco/train/5#2"]
    assert [[(a, b) for _, _, a, b in turns(s)] for s in each] == [[("c0", [box(0)])], [("c1", [box(1)])],
                                                                   [("c2", [box(2)])]]
    assert all(s["conversations"][0]["value"].startswith("<image>\n") for s in each)


@pytest.mark.parametrize("mode, turns_per_sample", [("multi_turn_all", [10, 10, 5]), ("one_turn_all", [1, 1, 1])])
def test_long_images_are_split(mode, turns_per_sample):
    samples = build(coco_image(25), {"coco_finetune": ("classification",)},
                    params(classification_mode=mode, max_regions_per_conversation=10), T)
    assert [s["id"] for s in samples] == ["coco/train/5#0", "coco/train/5#1", "coco/train/5#2"]
    assert [len(s["regions"]) for s in samples] == [10, 10, 5]
    assert [len(s["tasks"]) for s in samples] == turns_per_sample
    assert [r["box"] for s in samples for r in s["regions"]] == [box(i) for i in range(25)]
    assert all(s["conversations"][0]["value"].startswith("<image>\n") for s in samples)


def test_mixed_tasks_are_packed_without_splitting_a_turn():
    vg = build(splits(), {"vg_train": ("brief_caption", "relationship")}, params(max_regions_per_conversation=3), T)
    assert [s["tasks"] for s in vg] == [["brief_caption", "brief_caption"], ["relationship"]]
    assert [len(s["regions"]) for s in vg] == [2, 2]


def test_deterministic_per_seed_and_per_image(finetune):
    assert build_finetune(splits(), params(), T) == finetune
    assert build_finetune(splits(), params(seed=1), T) != finetune
    only_coco = build(splits(), {"coco_finetune": ("classification", "presence")}, params(), T)
    assert only_coco == [s for s in finetune if s["dataset"] == "coco"]


def test_each_image_draws_its_own_instructions():
    """Two images with the same regions do not get the same sequence of templates."""
    twins = [classified("coco", image_id, [f"c{i}" for i in range(10)], 0) for image_id in (1, 2)]
    first, second = build({"coco_finetune": DatasetSplit("coco", "finetune", twins)},
                          {"coco_finetune": ("classification",)}, params(), T)
    assert first["regions"] == second["regions"]
    assert first["conversations"] != second["conversations"]


def write_recapd(tmp_path, rows) -> str:
    path = tmp_path / "recapd.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_recapd_adds_detailed_descriptions(tmp_path, finetune):
    caption = "A silver iPod with a click wheel lies on a wooden desk."
    path = write_recapd(tmp_path, [
        {"dataset": "v3det", "split": "train", "image_id": 1, "region_id": 101, "caption": f" {caption} "},
        {"dataset": "v3det", "split": "train", "image_id": 2, "region_id": 110, "caption": "not fine-tuned"},
        {"dataset": "coco", "split": "train", "image_id": 7, "region_id": 200, "caption": "not V3Det"}])
    samples = build_finetune(splits(), params(), T, load_recapd(path))
    detailed = all_turns(samples, "detailed_description")
    assert [(answer, boxes) for _, _, answer, boxes in detailed] == [(caption, [box(101)])]
    assert matching_template(detailed[0][1], T.detailed_description)
    assert [s for s in samples if s["dataset"] != "v3det"] == [s for s in finetune if s["dataset"] != "v3det"]
    assert all_turns(finetune, "detailed_description") == []


def test_load_recapd(tmp_path):
    assert load_recapd(None) is None
    assert load_recapd(tmp_path / "not_yet.jsonl") is None
    bad = write_recapd(tmp_path, [{"dataset": "v3det", "image_id": 1, "region_id": 2, "caption": "x"}])
    with pytest.raises(ValueError, match=r"recapd.jsonl: record 1 needs the keys"):
        load_recapd(bad)


def test_missing_split_is_named():
    with pytest.raises(ValueError, match=r"need the splits \['llava_train'\]"):
        build_pretrain({k: v for k, v in splits().items() if k != "llava_train"}, params(), T)


def test_stats_and_files(tmp_path):
    data = {"coco_finetune": DatasetSplit("coco", "finetune", [classified("coco", 7, ["person", "traffic light"], 0)]),
            "vg_train": splits()["vg_train"]}
    samples = build(data, {"coco_finetune": ("classification",), "vg_train": ("brief_caption", "relationship")},
                    params(), T)
    assert conversation_stats(samples) == {
        "samples": 2, "turns": 5, "regions": 2 + 4,
        "tasks": {"classification": {"turns": 2, "answer_words": 1.5},  # person; traffic light
                  "brief_caption": {"turns": 2, "answer_words": 3.5},  # a man riding a horse; brown horse
                  "relationship": {"turns": 1, "answer_words": 4.0}}}  # man riding brown horse
    path = tmp_path / "out" / "finetune.jsonl"
    assert write_conversations(path, samples) == 2
    assert read_conversations(path) == samples
    assert [p.name for p in path.parent.iterdir()] == ["finetune.jsonl"]


def test_a_phrase_with_a_placeholder_is_refused():
    bad = {"refcocog_train": DatasetSplit("refcocog", "train", [
        image("refcocog", 3, [Region(box(1), id=1, phrases=["the <region> on the left"])])])}
    with pytest.raises(ValueError, match=r"refcocog/train/3#0 \(refcocog/3.jpg\): the rec question"):
        build(bad, {"refcocog_train": ("rec",)}, params(), T)


def test_llava_record_without_its_instruction_is_refused():
    bad = {"llava_train": DatasetSplit("llava", "train", [image("llava", "000000001", captions=["a caption"])])}
    with pytest.raises(ValueError, match=r"llava/train/000000001 .*needs one instruction and one caption, got 0 and 1"):
        build(bad, {"llava_train": ("image_caption",)}, params(), T)
