"""Shared fixtures: a small synthetic corpus written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from rgpt.config import SyntheticParams, load_params

REPO = Path(__file__).resolve().parents[1]


def small_synthetic_params(**overrides) -> SyntheticParams:
    """The embedded profile's synthetic params, scaled down so a corpus writes in a second or two."""
    params = load_params(REPO / "params.yaml").synthetic.model_dump()
    params.update(
        images={"v3det_train": 60, "v3det_val": 12, "vg": 40, "coco_train2017": 60, "coco_val2017": 40, "llava": 12},
        refcocog_images={"train": 20, "val": 8, "test": 8},
        lvis_val_from_train2017=5,
        vg_negative_coordinate_regions=2,
        pope={"images": 12, "sample_num": 3},
    )
    params.update(overrides)
    return SyntheticParams.model_validate(params)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """A small synthetic corpus in the real datasets' layout (read-only for tests)."""
    from rgpt.data.synthetic import write_corpus

    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root, small_synthetic_params(), progress=False)
    return root
