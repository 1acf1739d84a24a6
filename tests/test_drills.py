"""REC drills (rgpt/embedded/drills.py) and the base LLM's REC score (rec_accuracy)."""

import random
import re

import numpy as np
import pytest
import torch
from transformers import LlamaForCausalLM

from rgpt.data.templates import load_templates
from rgpt.embedded import drills
from rgpt.embedded.llm import llm_config, lm_loss, pack, rows, with_image
from rgpt.embedded.rec import rec_accuracy, rec_choices, rec_list_accuracy, rec_list_choices, rec_list_rows, summed_loss
from rgpt.embedded.tokenizer import render_conversation, train_tokenizer

from conftest import embedded

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
    blocks = pack(samples, train_tokenizer(map(render_conversation, samples), 600, 64), 64)
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
    tokenizer = train_tokenizer(map(render_conversation, samples), 600, 256)
    llm = LlamaForCausalLM(llm_config(embedded("base_models.llm", hidden_size=64, num_layers=1, num_heads=1,
                                                      intermediate_size=128), tokenizer))
    questions = drills.rec_questions(samples, T)
    flipped = [{**q, "conversations": [q["conversations"][0], {"from": "gpt", "value": "Region [{}].".format(
        3 - int(q["conversations"][1]["value"][8]))}]} for q in questions]
    per_question = [rec_accuracy(llm, tokenizer, [q], T) + rec_accuracy(llm, tokenizer, [f], T)
                    for q, f in zip(questions, flipped)]
    assert per_question == [1.0] * 20
    # rec_choices names that choice: right exactly where the accuracy counts a question
    chosen = rec_choices(llm, tokenizer, questions, T)
    assert set(chosen) <= {1, 2}
    assert [f"Region [{k}]." == q["conversations"][1]["value"] for k, q in zip(chosen, questions)] == \
        [rec_accuracy(llm, tokenizer, [q], T) == 1.0 for q in questions]


def test_rec_accuracy_scores_the_answer_after_the_image_tokens():
    # an answer's summed loss is the LLM's over the whole conversation, `<image>` as n tokens
    samples = drills.rec_drills(NAMES, 5, 1, 2, T, seed=0)
    tokenizer = train_tokenizer(map(render_conversation, samples), 600, 256)
    llm = LlamaForCausalLM(llm_config(embedded("base_models.llm", hidden_size=64, num_layers=1, num_heads=1,
                                                      intermediate_size=128), tokenizer)).eval()
    question = with_image({**drills.rec_questions(samples, T)[0], "regions": [{"name": None}] * 2})
    ids = tokenizer(render_conversation(question)).input_ids
    image = tokenizer.convert_tokens_to_ids("<image>")
    expanded = torch.tensor([[j for i in ids for j in ([i] * 3 if i == image else [i])]])
    with torch.no_grad():
        loss = llm(input_ids=expanded, labels=expanded).loss.item() * (expanded.shape[1] - 1)
    assert summed_loss(llm, tokenizer, question, 3) == pytest.approx(loss, rel=1e-5)


def test_a_rec_list_asks_for_every_proposal_once_and_answers_with_its_slots_number():
    rng = random.Random(0)
    lists = [drills.rec_list(NAMES, 6, rng) for _ in range(200)]
    for rec_list in lists:
        n = len(rec_list.names)
        slots, asked = rec_list.text().split(".", 1)
        assert slots == "".join(f" Region [{k}] <region>" for k in range(1, n + 1))
        questions = re.findall(r" the ([a-z ]+): Region \[(\d)\]\.", asked)
        assert "".join(f" the {name}: Region [{k}]." for name, k in questions) == asked
        assert sorted(name for name, _ in questions) == sorted(rec_list.names) and len(set(rec_list.names)) == n
        assert all(rec_list.names[int(k) - 1] == name for name, k in questions)
        # the first question's text ends where its answer's number begins
        assert rec_list.text().startswith(rec_list.question()) and rec_list.question().endswith(
            f"the {questions[0][0]}: Region [") and int(questions[0][1]) == rec_list.target
    counts = [len(rec_list.names) for rec_list in lists]
    assert 0.35 < counts.count(2) / len(counts) < 0.65 and set(counts) == {2, 3, 4, 5, 6}
    assert len({rec_list.target for rec_list in lists if len(rec_list.names) == 6}) == 6  # any slot is asked first


def tiny_llm_and_tokenizer(texts):
    torch.manual_seed(0)  # an untrained LLM whose choices vary from list to list
    tokenizer = train_tokenizer(texts, 600, 256)
    llm = LlamaForCausalLM(llm_config(embedded("base_models.llm", hidden_size=64, num_layers=1, num_heads=1,
                                                      intermediate_size=128), tokenizer)).eval()
    return llm, tokenizer


def test_rows_pad_each_sequence_to_the_longest_and_leave_the_padding_out_of_the_loss():
    rng = random.Random(1)
    lists = [drills.rec_list(NAMES, 6, rng) for _ in range(2)]
    llm, tokenizer = tiny_llm_and_tokenizer([rec_list.text() for rec_list in lists])
    short = drills.RecList(("red star", "blue cross"), (1, 0))
    long = drills.RecList(tuple(NAMES[:6]), (5, 4, 3, 2, 1, 0))
    both = rec_list_rows([short, long], tokenizer)
    lengths = [1 + len(tokenizer(r.text(), add_special_tokens=False).input_ids) for r in (short, long)]
    assert both.mask.sum(1).tolist() == lengths and both.ids.shape[1] == max(lengths)
    assert (both.ids[0, lengths[0]:] == tokenizer.pad_token_id).all() and (both.slots[0, lengths[0]:] == -1).all()
    assert (both.slots >= 0).sum(1).tolist() == [2, 6]
    alone_names = rec_list_rows([short], tokenizer).names
    assert both.names[both.slots[0][both.slots[0] >= 0]].tolist() == alone_names.tolist()
    with torch.no_grad():
        alone = [lm_loss(llm, rec_list_rows([r], tokenizer)).item() for r in (short, long)]
        together = lm_loss(llm, both).item()
    predicted = [n - 1 for n in lengths]  # next-token targets per row
    assert together == pytest.approx(sum(a * p for a, p in zip(alone, predicted)) / sum(predicted), rel=1e-5)


def test_rec_list_accuracy_counts_the_first_answer_the_llm_finds_most_likely():
    rng = random.Random(2)
    lists = [drills.rec_list(NAMES, 6, rng) for _ in range(30)]
    llm, tokenizer = tiny_llm_and_tokenizer([rec_list.text() for rec_list in lists])
    # each list's choice from whole single-row sequences: the question's loss is the same for every answer
    chosen = []
    with torch.no_grad():
        for rec_list in lists:
            losses = []
            for k in range(1, len(rec_list.names) + 1):
                ids = tokenizer(rec_list.question() + f"{k}].", add_special_tokens=False).input_ids
                row = rows([([tokenizer.bos_token_id, *ids], rec_list.names)], tokenizer)
                losses.append(lm_loss(llm, row).item() * len(ids))
            chosen.append(int(np.argmin(losses)) + 1)
    assert len(set(chosen)) > 1
    for batch_size in (256, 7):
        assert rec_list_choices(llm, tokenizer, lists, batch_size) == chosen
    right = sum(k == rec_list.target for k, rec_list in zip(chosen, lists))
    assert rec_list_accuracy(llm, tokenizer, lists) == right / len(lists)
