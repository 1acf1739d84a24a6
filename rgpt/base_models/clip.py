"""The base_clip stage: base_models/clip/, the CLIP and its own tokenizer, trained on the
validated regions (embedded) or snapshotted from the hub (paper), with clip/base_clip.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

from ..config import Params
from ..paths import BASE_CLIP, CAPTIONS, VALIDATED, stage_reports
from ..reports import write_json
from ..tracking import StageResult
from .layout import CLIP_MANIFEST, hub_snapshot, refuse_foreign, use_every_core


def run_base_clip(params: Params) -> StageResult:
    """base_models/clip/: the CLIP and its tokenizer, trained on the validated regions (its
    tokenizer also on the RecapD captions' words) here (embedded), or fetched (paper)."""
    use_every_core()
    manifest = build_base_clip(params, BASE_CLIP, validated=VALIDATED, captions=CAPTIONS)
    metrics = manifest.get("clip", {})
    return StageResult(metrics, {"metrics.json": write_json(stage_reports("base_clip") / "metrics.json", metrics)})


def build_base_clip(params: Params, out_dir: Path, *, validated: Path, captions: Path | None = None,
                    snapshot: Callable[[str, str, Path], str] | None = None, progress: bool = True) -> dict[str, Any]:
    """Write the CLIP to `out_dir` (base_models/clip) and return its manifest (also in `out_dir`).

    The CLIP is its own stage, ahead of the instruction data: RecapD's filter (clip_filter) scores
    with it before the conversations that the tokenizer and the LLM learn from exist, as the
    paper's filter uses a CLIP trained elsewhere. So, like OpenAI's CLIP, it has its own tokenizer
    (`clip_tokenizer`). validated: the validate stage's outputs; captions: the recap stage's
    captions (JSON Lines), whose words the tokenizer learns too (both read by `source: train`);
    snapshot: how `source: hub` fetches.
    """
    bm = params.base_models
    out_dir = Path(out_dir)
    refuse_foreign(out_dir, CLIP_MANIFEST, ignore=())
    staging = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    if bm.source == "hub":
        commit = (snapshot or hub_snapshot)(bm.hub.vision, bm.hub.revision, staging)
        figures = {"hub": {"repo": bm.hub.vision, "revision": bm.hub.revision, "commit": commit}}
    else:
        from ..embedded.clip import train_base_clip

        figures = {"clip": train_base_clip(bm, staging, data_root=Path(params.data.root), validated=Path(validated),
                                           captions=captions, feature_layer=params.model.vision_feature_layer,
                                           progress=progress)}
    manifest = {"source": bm.source, "params": json.loads(bm.clip.model_dump_json()), **figures}
    (staging / CLIP_MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return manifest
