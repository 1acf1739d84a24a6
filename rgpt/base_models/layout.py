"""What both base-model stages share: the manifests' names, never overwriting foreign files,
the hub download, and the cores."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

MANIFEST = "base_models.json"  # tokenizer and LLM
CLIP_MANIFEST = "base_clip.json"  # in clip/: how the CLIP was made


def use_every_core() -> None:
    """The base models train in the stage's one process, so it takes every core (make sets
    OMP_NUM_THREADS=1 for the training stages' ranks, which would leave all but one idle here)."""
    torch.set_num_threads(os.cpu_count() or 1)


def refuse_foreign(out_dir: Path, manifest: str, ignore: Sequence[str]) -> None:
    """Never replace files this code did not write: `out_dir` must be absent, empty (but for
    `ignore`) or hold `manifest`."""
    if not out_dir.exists() or (out_dir / manifest).exists():
        return
    if any(p.name not in ignore for p in out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} holds files but no {manifest}, so it is not a layout this stage "
                              "wrote; move them away or choose another output directory")


# Weight formats the transformers (PyTorch) loaders never read: skipped to save gigabytes.
UNUSED_WEIGHTS = ["*.h5", "*.msgpack", "*.onnx", "*.ot", "flax_model*", "tf_model*"]


def hub_snapshot(repo: str, revision: str, dest: Path) -> str:
    """Download `repo` at `revision` into `dest`; return the commit it resolved to.

    The hub token comes from HF_TOKEN in the environment, read by huggingface_hub itself.
    """
    from huggingface_hub import HfApi, snapshot_download

    commit = HfApi().model_info(repo, revision=revision).sha
    snapshot_download(repo, revision=commit, local_dir=dest, ignore_patterns=UNUSED_WEIGHTS)
    return commit
