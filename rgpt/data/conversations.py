"""Multi-turn, LLaVA-style instruction data per image (paper Sec. 3.2, Tables 1, 9, 10, 13, A.2).

Every image becomes one conversation that mixes all of its tasks (supplement A.2), or several
when it would hold more than `max_regions_per_conversation` region placeholders. A sample is::

    {"id": "vg/train/123#0", "dataset": "vg", "image": <file_name relative to the data root>,
     "width": 800, "height": 600,
     "regions": [{"box": [x, y, w, h], "segmentation": <COCO segmentation or None>, "name": "red circle"}, ...],
     "conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", "value": "..."}, ...],
     "tasks": ["classification", "brief_caption", ...]}

The k-th `<region>` of the human turns, read in order, is `regions[k]`; `tasks[t]` names the task
of the t-th question/answer pair. A region's `name` (`region_name`: its category, else its first
phrase, else None) is never shown to RGPT: the embedded base LLM learns from it to read a region
slot (`rgpt.model.base`). Only the first human turn holds `<image>`, at its start.

Instructions are drawn uniformly from the paper's lists (`rgpt.data.templates`) by a generator
seeded from (seed, dataset, image id), so an image's conversations depend only on that image and
the params: adding a dataset or an image changes nothing else.
"""

from __future__ import annotations

import logging
import os
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from rgpt.config import ConversationsParams
from rgpt.data.pope import question_text as pope_question
from rgpt.data.records import DatasetSplit, ImageRecord, Region, read_jsonl, write_jsonl
from rgpt.data.templates import DESCRIPTION, IMAGE, REGION, Templates

log = logging.getLogger(__name__)

TASKS = ("classification", "detailed_description", "brief_caption", "relationship", "rec", "image_caption",
         "presence")

# The tasks built from each input split, in the order their turns appear in a conversation.
PRETRAIN_TASKS: dict[str, tuple[str, ...]] = {  # Table 9, plus LLaVA's image captions
    "v3det_pretrain": ("classification",),
    "vg_train": ("brief_caption", "relationship"),
    "refcocog_train": ("brief_caption", "rec"),
    "llava_train": ("image_caption",),
}
FINETUNE_TASKS: dict[str, tuple[str, ...]] = {  # Table 10; V3Det's captions are RecapD's
    "v3det_finetune": ("classification", "detailed_description"),
    "coco_finetune": ("classification", "presence"),  # presence: LLaVA-1.5's short-answer VQA turns
    "lvis_finetune": ("classification",),
    "vg_train": ("brief_caption", "relationship"),
    "refcocog_train": ("brief_caption", "rec"),
}
RECAPD_KEYS = ("dataset", "split", "image_id", "region_id", "caption")
RecapdIndex = dict[tuple[str, int | str, int], str]  # (dataset, image id, region id) -> caption


@dataclass
class Turn:
    """One question and its answer; the question holds one `<region>` per entry of `regions`."""

    task: str
    question: str
    answer: str
    regions: list[Region]


# ------------------------------------------------------------------------------ the tasks


def region_list(n: int) -> str:
    """'<region>' for one region; several are numbered the way REC answers name them (the paper's
    <region1>, <region2>, ...): 'Region [1] <region> and Region [2] <region>', 'Region [1] <region>,
    Region [2] <region> and Region [3] <region>', ...

    Why numbered: every `<region>` is the same token, so without the numbers answering "Region [k]"
    means counting slots; with them the model copies the number written before the matching region.
    """
    if n == 1:
        return REGION
    named = [f"Region [{i}] {REGION}" for i in range(1, n + 1)]
    return ", ".join(named[:-1]) + f" and {named[-1]}"


def category_answer(region: Region, record: ImageRecord) -> str:
    """The answer to a classification question: the region's category name as the model should say it.

    V3Det and COCO names are kept verbatim (V3Det's are case-sensitive); LVIS names are synset-like
    ("bat_(animal)"), so their underscores become spaces.
    """
    if not region.category:
        raise ValueError(f"{record.key} ({record.file_name}): region {region.id} has no category name, "
                         "but classification needs one; fix the reader that wrote this split")
    return region.category.replace("_", " ") if record.dataset == "lvis" else region.category


def region_name(region: Region, record: ImageRecord) -> str | None:
    """What the region is, in words: its category as a classification answer says it, else its
    first phrase (VG's regions have only descriptions), else None."""
    if region.category:
        return category_answer(region, record).strip()
    return next(iter(_phrases(region)), None)


def classification_turns(record: ImageRecord, templates: Templates, rng: random.Random,
                         regions_per_turn: int) -> list[Turn]:
    """Ask for the category of every region, `regions_per_turn` regions per question (Table 13).

    COCO questions end with the task-guided prompt (Table 1), which keeps answers inside COCO-80.
    """
    suffix = f" {templates.prompts.coco}" if record.dataset == "coco" else ""
    turns = []
    for start in range(0, len(record.regions), regions_per_turn):
        regions = record.regions[start:start + regions_per_turn]
        question = rng.choice(templates.classification).replace(REGION, region_list(len(regions)))
        answer = ", ".join(category_answer(r, record) for r in regions)
        turns.append(Turn("classification", question + suffix, answer, regions))
    return turns


def brief_caption_turns(record: ImageRecord, templates: Templates, rng: random.Random) -> list[Turn]:
    """One short description per region that has phrases (VG region descriptions, RefCOCOg sentences)."""
    return [Turn("brief_caption", rng.choice(templates.brief_caption), rng.choice(phrases), [region])
            for region in record.regions if (phrases := _phrases(region))]


def detailed_description_turns(record: ImageRecord, templates: Templates, rng: random.Random,
                               recapd: RecapdIndex) -> list[Turn]:
    """A RecapD caption (Sec. 3.3) for every region that has one."""
    turns = []
    for region in record.regions:
        caption = recapd.get((record.dataset, record.image_id, region.id))
        if caption:
            turns.append(Turn("detailed_description", rng.choice(templates.detailed_description), caption, [region]))
    return turns


def relationship_turns(record: ImageRecord, templates: Templates, rng: random.Random) -> list[Turn]:
    """'subject predicate object' for every relation; the template's first `<region>` is the subject."""
    turns = []
    for relation in record.relations:
        subject, obj = _relation_name(relation.subject, record), _relation_name(relation.object, record)
        answer = f"{subject} {relation.predicate.strip().lower()} {obj}"
        turns.append(Turn("relationship", rng.choice(templates.relationship), answer,
                          [relation.subject, relation.object]))
    return turns


def rec_turns(record: ImageRecord, templates: Templates, rng: random.Random, max_proposals: int,
              absent_ratio: float) -> list[Turn]:
    """Referring expression comprehension as a choice among proposals (supplement A.1, Table 1).

    For every region with phrases, one of them describes it and the question offers the target
    and other regions of the image, shuffled. With probability `absent_ratio` (when there are
    other regions) the target is left out and the answer says no proposal matches.
    """
    turns = []
    for target_index, target in enumerate(record.regions):
        phrases = _phrases(target)
        if not phrases:
            continue
        others = [r for i, r in enumerate(record.regions) if i != target_index]
        description = rng.choice(phrases)
        if others and rng.random() < absent_ratio:
            proposals = rng.sample(others, min(max_proposals, len(others)))
            answer = templates.prompts.rec_absent
        else:
            proposals = [target, *rng.sample(others, min(max_proposals - 1, len(others)))]
            rng.shuffle(proposals)
            position = next(i for i, r in enumerate(proposals) if r is target)  # identity: boxes may repeat
            answer = templates.prompts.rec_answer.format(index=position + 1)
        question = (rng.choice(templates.rec).replace(REGION, region_list(len(proposals)))
                    .replace(DESCRIPTION, description))
        turns.append(Turn("rec", f"{question} {templates.prompts.rec}", answer, proposals))
    return turns


def presence_turns(record: ImageRecord, templates: Templates, rng: random.Random, vocabulary: Sequence[str],
                   count: int) -> list[Turn]:
    """Image-level yes/no questions about objects, `count` present ("Yes") and as many absent ("No").

    RGPT's instruction tuning builds on LLaVA-1.5's, whose image-level data asks such short-answer
    questions (RGPT's 953K instruction samples, Table 3, are more than Table 10's region data);
    this is their twin on the corpus, worded as POPE words its questions, so that the model can
    answer object-presence questions at all. Absent objects are drawn from `vocabulary`.
    """
    present = list(dict.fromkeys(category_answer(r, record) for r in record.regions if not r.iscrowd))
    absent = sorted(set(vocabulary) - set(present))
    chosen = rng.sample(present, min(count, len(present)))
    asked = [(name, "Yes") for name in chosen] + [(name, "No") for name in rng.sample(absent, min(len(chosen), len(absent)))]
    rng.shuffle(asked)
    return [Turn("presence", f"{pope_question(name)}\n{templates.prompts.short_answer}", answer, [])
            for name, answer in asked]


def image_caption_turn(record: ImageRecord) -> Turn:
    """A LAION-CC-SBU-558K pair, kept as it is: its own instruction and its caption.

    The instruction holds `<image>` (at its end in the real file); `to_sample` puts it at the front.
    """
    if len(record.captions) != 1 or len(record.caption_prompts) != 1:
        raise ValueError(f"{record.key} ({record.file_name}): a LLaVA record needs one instruction and one "
                         f"caption, got {len(record.caption_prompts)} and {len(record.captions)}")
    return Turn("image_caption", record.caption_prompts[0].replace(IMAGE, "").strip(), record.captions[0].strip(), [])


def _phrases(region: Region) -> list[str]:
    return [p.strip() for p in region.phrases if p.strip()]


def _relation_name(region: Region, record: ImageRecord) -> str:
    name = region_name(region, record)
    if not name:
        raise ValueError(f"{record.key} ({record.file_name}): relation region {region.id} has neither a "
                         "category nor a phrase to name it; fix the reader that wrote this split")
    return name


# ------------------------------------------------------------------------ images to samples


def image_rng(seed: int, record: ImageRecord) -> random.Random:
    """The generator for one image: a string seed is hashed with SHA-512, stable across runs."""
    return random.Random(f"{seed}/{record.dataset}/{record.image_id}")


def image_samples(record: ImageRecord, tasks: Iterable[str], params: ConversationsParams,
                  templates: Templates, recapd: RecapdIndex, vocabulary: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The conversations of one image for the given tasks; `vocabulary`: its split's category names."""
    rng = image_rng(params.seed, record)
    limit = params.max_regions_per_conversation
    shared: list[Turn] = []  # packed into multi-turn conversations
    alone: list[Turn] = []  # each one a conversation of its own (one-turn-for-one-RoI mode)
    for task in tasks:
        if task == "classification":
            mode = params.classification_mode
            turns = classification_turns(record, templates, rng, limit if mode == "one_turn_all" else 1)
            (alone if mode == "one_turn_one" else shared).extend(turns)
        elif task == "detailed_description":
            shared += detailed_description_turns(record, templates, rng, recapd)
        elif task == "brief_caption":
            shared += brief_caption_turns(record, templates, rng)
        elif task == "relationship":
            shared += relationship_turns(record, templates, rng)
        elif task == "rec":
            # A question cannot be split, so it never offers more regions than a conversation holds.
            proposals = min(params.rec_max_proposals, limit)
            shared += rec_turns(record, templates, rng, proposals, params.rec_absent_ratio)
        elif task == "image_caption":
            shared.append(image_caption_turn(record))
        elif task == "presence":
            shared += presence_turns(record, templates, rng, vocabulary, params.presence_questions)
        else:
            raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    groups = pack_turns(shared, limit) + [[turn] for turn in alone]
    return [to_sample(record, f"{record.key}#{i}", group) for i, group in enumerate(groups)]


def pack_turns(turns: list[Turn], max_regions: int) -> list[list[Turn]]:
    """Split turns, in order, into as few runs as possible of at most `max_regions` regions each."""
    groups: list[list[Turn]] = []
    count = max_regions + 1  # forces a new group for the first turn
    for turn in turns:
        if count + len(turn.regions) > max_regions:
            groups.append([])
            count = 0
        groups[-1].append(turn)
        count += len(turn.regions)
    return groups


def to_sample(record: ImageRecord, sample_id: str, turns: list[Turn]) -> dict[str, Any]:
    """One conversation about `record`; checks that placeholders and regions line up."""
    conversations = []
    for t, turn in enumerate(turns):
        if turn.question.count(REGION) != len(turn.regions) or IMAGE in turn.question:
            raise ValueError(f"{sample_id} ({record.file_name}): the {turn.task} question {turn.question!r} "
                             f"has {turn.question.count(REGION)} {REGION} for {len(turn.regions)} regions "
                             f"(or a stray {IMAGE}); a phrase in the data probably contains a placeholder")
        question = f"{IMAGE}\n{turn.question}" if t == 0 else turn.question
        conversations += [{"from": "human", "value": question}, {"from": "gpt", "value": turn.answer}]
    return {
        "id": sample_id,
        "dataset": record.dataset,
        "image": record.file_name,
        "width": record.width,
        "height": record.height,
        "regions": [{"box": r.box, "segmentation": r.segmentation, "name": region_name(r, record)}
                    for turn in turns for r in turn.regions],
        "conversations": conversations,
        "tasks": [turn.task for turn in turns],
    }


# ---------------------------------------------------------------------------- the two stages


def build(splits: dict[str, DatasetSplit], tasks: dict[str, tuple[str, ...]], params: ConversationsParams,
          templates: Templates, recapd: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Samples for every image of the splits named in `tasks` (keys: `DatasetSplit.name`)."""
    missing = sorted(set(tasks) - set(splits))
    if missing:
        raise ValueError(f"conversations need the splits {missing} but got only {sorted(splits)}: "
                         "run the stages that write them first")
    captions = recapd_index(recapd or [])
    samples = [sample for name, split_tasks in tasks.items() for record in splits[name].records
               for sample in image_samples(record, split_tasks, params, templates, captions,
                                           sorted(splits[name].categories.values()))]
    seen: set[str] = set()
    for sample in samples:
        if sample["id"] in seen:
            raise ValueError(f"two conversations are named {sample['id']}: an image appears twice in "
                             f"the splits {sorted(tasks)}; the dataset, split and image id must be unique")
        seen.add(sample["id"])
    return samples


def build_pretrain(splits: dict[str, DatasetSplit], params: ConversationsParams,
                   templates: Templates) -> list[dict[str, Any]]:
    """Pre-training data: V3Det classification, VG and RefCOCOg regions, LLaVA captions (Table 9)."""
    return build(splits, PRETRAIN_TASKS, params, templates)


def build_finetune(splits: dict[str, DatasetSplit], params: ConversationsParams, templates: Templates,
                   recapd: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Fine-tuning data (Table 10); V3Det gets detailed descriptions where `recapd` has a caption."""
    return build(splits, FINETUNE_TASKS, params, templates, recapd)


# ------------------------------------------------------------------------------------ RecapD


def load_recapd(path: str | os.PathLike | None) -> list[dict[str, Any]] | None:
    """The filtered RecapD captions, or None when there are none (no path, or not produced yet)."""
    if path is None:
        return None
    path = Path(path)
    if not path.exists():
        log.warning("%s not found: fine-tuning data gets no detailed descriptions", path)
        return None
    records = list(read_jsonl(path))
    for line_no, record in enumerate(records, 1):
        well_formed = isinstance(record, dict) and set(RECAPD_KEYS) <= set(record)
        if not well_formed or not isinstance(record["caption"], str):
            raise ValueError(f"{path}: record {line_no} needs the keys {list(RECAPD_KEYS)} with a string "
                             f"caption, got {record!r}; rerun the recap and clip_filter stages")
    return records


def recapd_index(recapd: list[dict[str, Any]]) -> RecapdIndex:
    """(dataset, image id, region id) -> caption; a region must have at most one caption."""
    index: RecapdIndex = {}
    for record in recapd:
        key = (record["dataset"], record["image_id"], record["region_id"])
        if key in index:
            raise ValueError(f"RecapD has two captions for dataset {key[0]} image {key[1]} region {key[2]}; "
                             "keep one per region (the clip_filter stage should)")
        index[key] = record["caption"].strip()
    return index


# ------------------------------------------------------------------------------- files, stats


def write_conversations(path: str | os.PathLike, samples: Iterable[dict[str, Any]]) -> int:
    return write_jsonl(path, samples)


def read_conversations(path: str | os.PathLike) -> list[dict[str, Any]]:
    return list(read_jsonl(path))


def conversation_stats(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts for DVC metrics: samples, question/answer turns, regions; per task turns and answer length."""
    turns: dict[str, int] = defaultdict(int)
    words: dict[str, int] = defaultdict(int)
    for sample in samples:
        answers = sample["conversations"][1::2]
        for task, answer in zip(sample["tasks"], answers, strict=True):
            turns[task] += 1
            words[task] += len(answer["value"].split())
    return {
        "samples": len(samples),
        "turns": sum(turns.values()),
        "regions": sum(len(s["regions"]) for s in samples),
        "tasks": {task: {"turns": turns[task], "answer_words": words[task] / turns[task]}
                  for task in TASKS if turns[task]},
    }
