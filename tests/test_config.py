"""params.yaml: profiles, validation errors, switching."""

from __future__ import annotations

import shutil

import pytest
import yaml

from rgpt.config import load_params, params_hash, resolve, set_profile

from conftest import REPO


def test_embedded_is_the_default_and_paper_overlays_it(tmp_path):
    params = load_params(REPO / "params.yaml")
    assert params.profile == "embedded" and params.data.source == "synthetic"
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    paper = resolve({**raw, "profile": "paper"})
    assert paper["data"]["source"] == "download"
    assert paper["data"]["root"] == raw["data"]["root"]  # what the overlay does not name is kept
    assert paper["balance"] == raw["balance"]  # the paper's caps are the default everywhere


def test_set_profile_rewrites_one_line_and_keeps_comments(tmp_path):
    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    before = path.read_text()
    set_profile("paper", path)
    after = path.read_text()
    assert load_params(path).profile == "paper" and load_params(path).data.source == "download"
    assert [a for a, b in zip(before.splitlines(), after.splitlines()) if a != b] == ["profile: embedded"]
    set_profile("embedded", path)
    assert path.read_text() == before


def test_unknown_profile_and_bad_values_name_the_key(tmp_path):
    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    with pytest.raises(ValueError, match="unknown profile 'cluster'"):
        set_profile("cluster", path)
    raw = yaml.safe_load(path.read_text())
    raw["balance"]["coco_per_clas"] = 20
    raw["validate"]["max_bad_fraction"] = 2
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError) as e:
        load_params(path)
    assert "balance.coco_per_clas: Extra inputs are not permitted" in str(e.value)
    assert "validate.max_bad_fraction: Input should be less than or equal to 1" in str(e.value)


def test_finetune_cap_cannot_exceed_pretrain_cap(tmp_path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["balance"]["v3det_finetune_per_class"] = 200
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="v3det_finetune_per_class must not exceed"):
        load_params(path)


def test_stage_params_and_their_hash():
    params = load_params(REPO / "params.yaml")
    section = params.stage_params("balance")
    assert set(section) == {"profile", "balance"} and section["balance"]["coco_per_class"] == 20
    assert params_hash(section) == params_hash(dict(reversed(section.items())))  # key order does not matter
    assert params_hash(section) != params_hash(params.stage_params("validate"))
    with pytest.raises(ValueError, match="unknown stage 'train'"):
        params.stage_params("train")
