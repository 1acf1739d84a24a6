"""REC drills (rgpt/model/drills.py) and the base LLM's REC score (base.rec_accuracy)."""

import re

import pytest
import torch
from transformers import LlamaForCausalLM

from rgpt.config import LlmParams
from rgpt.data.templates import load_templates
from rgpt.model import base, drills

T = load_templates()
NAMES = [f"{colour} {shape}" for colour in ["red", "green", "blue", "white"] for shape in ["circle", "star", "cross"]]


def test_every_drill_question_is_answered_with_the_number_of_the_slot_holding_the_described_name():
    samples = drills.rec_drills(NAMES, 50, turns=3, max_proposals=6, templates=T, seed=0)
    offered = []
    for sample in samples:
        assert sample["image"] is None and len(sample["conversations"]) == 6
        for task, question, answer, regions in drills.turns(sample):
            names = [r["name"] for r in regions]
            assert task == "rec" and question["value"].endswith(T.prompts.rec)
            assert 2 <= len(names) <= 6 and len(set(names)) == len(names)
            index = int(re.fullmatch(r"Region \[(\d)\]\.", answer["value"]).group(1))
            described = [name for name in names if f"the {name}" in question["value"]]  # no name holds another
            assert described == [names[index - 1]]
            offered.append(len(names))
    assert 0.35 < offered.count(2) / len(offered) < 0.65 and max(offered) == 6  # half of them among two
    # conversations as the conversations stage writes them: they pack, a name per slot
    blocks = base.pack(samples, base.train_tokenizer(map(base.render_conversation, samples), 600, 64), 64)
    assert (blocks.slots >= 0).any()


def test_drills_are_seeded():
    draw = lambda seed: drills.rec_drills(NAMES, 5, 2, 4, T, seed)  # noqa: E731
    assert draw(0) == draw(0) and draw(0) != draw(1)


def test_drills_need_as_many_names_as_proposals():
    with pytest.raises(ValueError, match="at least 6 distinct region names, got 3"):
        drills.rec_drills(NAMES[:3] * 2, 1, 1, 6, T, 0)


def conversation(*turns: tuple[str, str, str, list[str]]) -> dict:
    """A sample of (task, question, answer, its regions' names) turns."""
    return {"id": "img#0", "image": "img.jpg", "tasks": [t[0] for t in turns],
            "regions": [{"box": [0, 0, 1, 1], "name": n} for t in turns for n in t[3]],
            "conversations": [{"from": r, "value": v} for t in turns for r, v in (("human", t[1]), ("gpt", t[2]))]}


REC = "Among Region [1] <region> and Region [2] <region>, which is the red star? " + T.prompts.rec
SAMPLE = conversation(("classification", "<image>\nWhat is <region>?", "red star", ["red star"]),
                      ("brief_caption", "Describe <region>.", "a star that is red", ["a star that is red"]),
                      ("rec", REC, T.prompts.rec_absent, ["blue cross", "green circle"]),
                      ("rec", "Which of <region> is the red star? " + T.prompts.rec, "Region [1].", ["red star"]),
                      ("rec", REC, "Region [2].", ["blue cross", "red star"]))


def test_category_names_are_those_of_the_regions_classification_asks_about():
    assert drills.category_names([SAMPLE]) == ["red star"]


def test_rec_questions_are_those_that_offer_their_target_among_several_proposals():
    assert drills.rec_questions([SAMPLE], T) == [
        {"id": "img#0", "proposals": 2, "regions": SAMPLE["regions"][-2:],
         "conversations": [{"from": "human", "value": REC}, {"from": "gpt", "value": "Region [2]."}]}]


def test_rec_choices_and_accuracy_count_the_answer_the_llm_finds_most_likely():
    # whatever an (untrained) LLM prefers, exactly one of "Region [1]." and "Region [2]." is its choice
    samples = drills.rec_drills(NAMES, 20, 1, 2, T, seed=0)
    tokenizer = base.train_tokenizer(map(base.render_conversation, samples), 600, 256)
    llm = LlamaForCausalLM(base.llm_config(LlmParams(hidden_size=64, num_layers=1, num_heads=1,
                                                      intermediate_size=128), tokenizer))
    questions = drills.rec_questions(samples, T)
    flipped = [{**q, "conversations": [q["conversations"][0], {"from": "gpt", "value": "Region [{}].".format(
        3 - int(q["conversations"][1]["value"][8]))}]} for q in questions]
    per_question = [base.rec_accuracy(llm, tokenizer, [q], T) + base.rec_accuracy(llm, tokenizer, [f], T)
                    for q, f in zip(questions, flipped)]
    assert per_question == [1.0] * 20
    # rec_choices names that choice: right exactly where the accuracy counts a question
    chosen = base.rec_choices(llm, tokenizer, questions, T)
    assert set(chosen) <= {1, 2}
    assert [f"Region [{k}]." == q["conversations"][1]["value"] for k, q in zip(chosen, questions)] == \
        [base.rec_accuracy(llm, tokenizer, [q], T) == 1.0 for q in questions]


def test_rec_accuracy_scores_the_answer_after_the_image_tokens():
    # an answer's summed loss is the LLM's over the whole conversation, `<image>` as n tokens
    samples = drills.rec_drills(NAMES, 5, 1, 2, T, seed=0)
    tokenizer = base.train_tokenizer(map(base.render_conversation, samples), 600, 256)
    llm = LlamaForCausalLM(base.llm_config(LlmParams(hidden_size=64, num_layers=1, num_heads=1,
                                                      intermediate_size=128), tokenizer)).eval()
    question = base.with_image({**drills.rec_questions(samples, T)[0], "regions": [{"name": None}] * 2})
    ids = tokenizer(base.render_conversation(question)).input_ids
    image = tokenizer.convert_tokens_to_ids("<image>")
    expanded = torch.tensor([[j for i in ids for j in ([i] * 3 if i == image else [i])]])
    with torch.no_grad():
        loss = llm(input_ids=expanded, labels=expanded).loss.item() * (expanded.shape[1] - 1)
    assert base._summed_loss(llm, tokenizer, question, 3) == pytest.approx(loss, rel=1e-5)
