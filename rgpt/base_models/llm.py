"""The base_models stage: base_models/{tokenizer,llm}/ and base_models.json, the LLM and its
tokenizer, trained on the conversations and REC drills (embedded) or snapshotted from the hub and
extended with RGPT's two placeholders (paper)."""

from __future__ import annotations

import json
import os
import shutil
from itertools import accumulate
from pathlib import Path
from typing import Any, Callable

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from ..config import HubParams, Params
from ..data.templates import IMAGE, REGION
from ..paths import BASE_MODELS, CLIP_DIR, CONVERSATIONS, LLM_DIR, TOKENIZER_DIR, stage_reports
from ..reports import pyplot, save_figure, write_csv, write_json
from ..tracking import StageResult
from .layout import MANIFEST, hub_snapshot, refuse_foreign, use_every_core


def run_base_models(params: Params) -> StageResult:
    """base_models/{tokenizer,llm}: trained on the conversations here (embedded) or fetched (paper)."""
    use_every_core()
    manifest = build_base_models(params, BASE_MODELS, conversations=CONVERSATIONS)
    metrics = {k: v for k, v in manifest.items() if k in ("tokenizer", "llm")}
    reports = stage_reports("base_models")
    llm = metrics.get("llm", {})
    curve = [{"step": step, "drill_rec_accuracy": accuracy} for step, accuracy in llm.get("check_curve", [])]
    return StageResult(metrics, {"metrics.json": write_json(reports / "metrics.json", metrics),
                                 "check_curve.csv": write_csv(reports / "check_curve.csv", curve,
                                                                ["step", "drill_rec_accuracy"]),
                                 "check_curve.png": plot_check_curve(llm, reports / "check_curve.png")})


def plot_check_curve(llm: dict[str, Any], path: Path) -> Path:
    """The base LLM's REC on fresh drills during its training, against chance, and the check that
    ends the lists' phase; empty for an LLM from the hub (no drills, no curve)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    if llm.get("check_curve"):
        steps, accuracy = zip(*llm["check_curve"])
        ax.plot(steps, accuracy, marker=".", label="fresh drills among 2..n proposals")
        ax.axhline(llm["drill_rec_chance"], color="grey", linestyle="--", linewidth=0.8, label="chance")
        if llm.get("list_curve"):
            steps, accuracy = zip(*llm["list_curve"])
            ax.plot(steps, accuracy, marker=".", label="fresh REC lists (the lists' phase check)")
            ax.axhline(llm["list_target"], color="C1", linestyle=":", linewidth=0.8, label="its target")
        # where each drills-alone phase ends
        ends = list(accumulate(llm.get(f"{phase}_steps", 0) for phase in ("list", "template")))
        for end, phase in zip(ends, ("lists", "template drills")):
            if end:
                ax.axvline(end, color="grey", linewidth=0.5)
                ax.annotate(f"end of {phase}", (end, 0.02), rotation=90, fontsize=6, color="grey")
        ax.legend(fontsize=7, loc="upper left")
    ax.set(title="base_models: LLM REC accuracy during training", xlabel="optimizer step", ylabel="accuracy",
           ylim=(0, 1))
    return save_figure(fig, path)


def build_base_models(params: Params, out_dir: Path, *, conversations: Path,
                      snapshot: Callable[[str, str, Path], str] | None = None, progress: bool = True) -> dict[str, Any]:
    """Write the tokenizer and the LLM into `out_dir` and return the manifest; clip/ (the base_clip
    stage's) is left as it is.

    conversations: the conversations stage's outputs (read by `source: train`). snapshot: how
    `source: hub` fetches a repository (`layout.hub_snapshot`). Each part is written beside `out_dir` and
    moved into place at the end, the manifest last, so a failed run never leaves half of one.
    """
    out_dir = Path(out_dir)
    refuse_foreign(out_dir, MANIFEST, ignore=(CLIP_DIR,))
    staging = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    bm = params.base_models
    if bm.source == "hub":
        tokenizer, figures = fetch_from_hub(bm.hub, staging, snapshot or hub_snapshot)
    else:
        from ..embedded.base_llm import train_base_models

        tokenizer, figures = train_base_models(bm, staging, conversations=Path(conversations),
                                               rec_max_proposals=params.conversations.rec_max_proposals,
                                               num_image_tokens=num_image_tokens(params), progress=progress)
    manifest = {"source": bm.source, "params": json.loads(bm.model_dump_json()),
                "tokenizer": tokenizer_summary(tokenizer), **figures}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    out_dir.mkdir(parents=True, exist_ok=True)
    for part in (TOKENIZER_DIR, LLM_DIR, MANIFEST):
        shutil.rmtree(out_dir / part, ignore_errors=True)  # a folder; the manifest file os.replace overwrites
        os.replace(staging / part, out_dir / part)
    staging.rmdir()
    return manifest


def num_image_tokens(params: Params) -> int:
    """How many image tokens RGPT puts where `<image>` stands (`RGPTConfig.num_image_tokens`) with
    the embedded CLIP."""
    clip = params.base_models.clip
    h, w = params.model.image_tokens or (clip.image_size // clip.patch_size,) * 2
    return h * w


def fetch_from_hub(params: HubParams, out_dir: Path,
                   snapshot: Callable[[str, str, Path], str]) -> tuple[PreTrainedTokenizerBase, dict[str, Any]]:
    """The paper's LLM into llm/, and its tokenizer with <image> and <region> added into tokenizer/
    (the CLIP is the base_clip stage's: `build_base_clip`); returns the tokenizer and the commit.
    `snapshot(repo, revision, dest)` fetches a repository and returns its commit."""
    commit = snapshot(params.llm, params.revision, out_dir / LLM_DIR)
    tokenizer = AutoTokenizer.from_pretrained(out_dir / LLM_DIR)
    tokenizer.add_special_tokens({"extra_special_tokens": [IMAGE, REGION]}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:  # Vicuna has none; LLaVA pads with <unk>
        tokenizer.pad_token = tokenizer.unk_token
    tokenizer.save_pretrained(out_dir / TOKENIZER_DIR)
    return tokenizer, {"hub": {LLM_DIR: {"repo": params.llm, "revision": params.revision, "commit": commit}}}


def tokenizer_summary(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """The manifest's record of the tokenizer: its size and the ids RGPT relies on."""
    return {"vocab_size": len(tokenizer), "image_token_id": tokenizer.convert_tokens_to_ids(IMAGE),
            "region_token_id": tokenizer.convert_tokens_to_ids(REGION), "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
