"""REC drills: text-only referring questions that the embedded base LLM trains on beside the conversations.

REC asks RGPT to pick, among numbered proposals, the one a description names (Table 1):

    USER: Given the mask proposals Region [1] <region> and Region [2] <region> in the image, can you
          pinpoint the one that matches the red star. Answer the question using the template
          Region [x]. ASSISTANT: Region [2].

The LLM matches the description against what each `<region>` slot holds and copies the number in
front of that slot: an associative recall that Vicuna brings from its pre-training and a small LLM
trained from scratch does not have. Drilled in the paper's templates it learns only a positional
check (is the last proposal the described one?); dense, template-free lists (`RecList`, every
proposal asked for once) teach it the match itself after a plateau of optimizer steps
(docs/findings.md, "dense lists teach the match"). So `base_models` trains its LLM
first on lists alone until fresh ones are answered right, then on drills in the templates alone
(`rec_drill`, one question each), then on drills among 2..`max_proposals` beside the
conversations: conversations in the conversations stage's own format (`llm.pack` takes them
unchanged), each turn a REC question of the paper's templates among distinct names with the
description "the {name}". Every slot holds its name, as in all of the base LLM's training
(`llm.slot_embeddings`). They stand in for the general skill a pretrained LLM brings; RGPT itself
never sees them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

from ..data.conversations import region_list
from ..data.templates import DESCRIPTION, REGION, REGION_ANSWER, Templates

DRILL_DATASET = "rec_drill"


def _proposal_count(max_proposals: int, rng: random.Random) -> int:
    """Two half of the time, else 3..`max_proposals`: the skill appears first among two and then carries to more."""
    return 2 if max_proposals == 2 or rng.random() < 0.5 else rng.randint(3, max_proposals)


def rec_drill(index: int, names: Sequence[str], turns: int, max_proposals: int, templates: Templates,
              rng: random.Random) -> dict[str, Any]:
    """One drill conversation of `turns` REC questions, each among its own proposals (`_proposal_count`)."""
    regions, conversation = [], []
    for _ in range(turns):
        n = _proposal_count(max_proposals, rng)
        chosen = rng.sample(list(names), n)
        target = rng.randrange(n)
        question = (rng.choice(templates.rec).replace(REGION, region_list(n))
                    .replace(DESCRIPTION, f"the {chosen[target]}"))
        conversation += [{"from": "human", "value": f"{question} {templates.prompts.rec}"},
                         {"from": "gpt", "value": templates.prompts.rec_answer.format(index=target + 1)}]
        regions += [{"name": name} for name in chosen]
    return {"id": f"{DRILL_DATASET}/{index}", "dataset": DRILL_DATASET, "image": None, "regions": regions,
            "conversations": conversation, "tasks": ["rec"] * turns}


def rec_drills(names: Sequence[str], count: int, turns: int, max_proposals: int, templates: Templates,
               seed: int) -> list[dict[str, Any]]:
    """`count` seeded drills (`rec_drill`) over the distinct `names`."""
    names = sorted(set(names))
    if len(names) < max_proposals:
        raise ValueError(f"REC drills need at least {max_proposals} distinct region names, got {len(names)}")
    rng = random.Random(seed)
    return [rec_drill(k, names, turns, max_proposals, templates, rng) for k in range(count)]


@dataclass(frozen=True)
class RecList:
    """A dense, template-free REC list: the proposals, then every one of them asked for once.

        Region [1] <region> Region [2] <region> Region [3] <region>. the cat: Region [2]. the dog:
        Region [3]. the red star: Region [1].

    A from-scratch LLM trained on `rec_drill`s alone learns a positional check (is the last
    proposal the described one?) and never the match; on these lists it learns the match itself,
    wherever the target stands, and keeps it on the templates' drills after (docs/findings.md).
    """

    names: tuple[str, ...]  # each proposal's name, slot by slot
    order: tuple[int, ...]  # the 0-based proposals in the order they are asked for

    def text(self) -> str:
        return self._slots() + "".join(f" the {self.names[k]}: Region [{k + 1}]." for k in self.order)

    def question(self) -> str:
        """The text up to the first answer's number, "... the cat: Region [": where the LLM answers it."""
        return self._slots() + f" the {self.names[self.order[0]]}: Region ["

    def _slots(self) -> str:
        return "".join(f" Region [{k + 1}] {REGION}" for k in range(len(self.names))) + "."

    @property
    def target(self) -> int:
        """The first question's answer, 1-based."""
        return self.order[0] + 1


def rec_list(names: Sequence[str], max_proposals: int, rng: random.Random) -> RecList:
    """A `RecList` among distinct `names`, as many proposals as `rec_drill` offers, asked for in random order."""
    n = _proposal_count(max_proposals, rng)
    return RecList(tuple(rng.sample(list(names), n)), tuple(rng.sample(range(n), n)))


def turns(sample: dict[str, Any]) -> Iterator[tuple[str, dict[str, str], dict[str, str], list[dict[str, Any]]]]:
    """A conversation's turns: (task, question, answer, the regions of the question's slots)."""
    regions = iter(sample["regions"])
    conversation = sample["conversations"]
    for task, question, answer in zip(sample["tasks"], conversation[::2], conversation[1::2], strict=True):
        yield task, question, answer, [next(regions) for _ in range(question["value"].count(REGION))]


def category_names(samples: Iterable[dict[str, Any]]) -> list[str]:
    """The distinct names of the regions that classification turns ask about: the category names
    the conversations teach (other regions' names can be phrases, VG's)."""
    return sorted({region["name"] for sample in samples for task, _, _, regions in turns(sample)
                   if task == "classification" for region in regions if region.get("name")})


def rec_questions(samples: Iterable[dict[str, Any]], templates: Templates) -> list[dict[str, Any]]:
    """Every REC question of the samples among two or more proposals, the target among them, as a
    one-turn conversation of its own (its regions, the question, the right answer) with
    `proposals`: how many it offers."""
    return [{"id": sample["id"], "regions": regions, "proposals": len(regions), "conversations": [question, answer]}
            for sample in samples for task, question, answer, regions in turns(sample)
            if task == "rec" and len(regions) > 1 and answer["value"] != templates.prompts.rec_absent]


def answer_target(answer: str) -> int | None:
    """The 1-based proposal a REC answer "Region [k]." names; None for any other answer
    ("No corresponding options found.")."""
    found = REGION_ANSWER.fullmatch(answer.removesuffix("."))
    return int(found.group(1)) if found else None
