"""The raw corpus under `data.root`: the synthetic twin (embedded) or the real datasets (paper).

What the download flow runs; its output is data/ itself, which `dvc add data` records in data.dvc.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..config import Params
from ..reports import write_json
from ..tracking import StageResult
from .download import fetch_all
from .layout import SYNTHETIC_MANIFEST


def produce_corpus(params: Params, *, progress: bool = True) -> StageResult:
    """The raw corpus under `data.root`: the synthetic twin (embedded) or the real datasets (paper)."""
    root = Path(params.data.root)
    if params.data.source == "download":
        d = params.download
        fetched = fetch_all(d.sources, root, images=d.images, retries=d.retries, timeout_s=d.timeout_s,
                            progress=progress)
        return StageResult({"sources": len(fetched), "paths": sum(len(p) for p in fetched.values())})
    return StageResult(write_synthetic_root(root, params, progress=progress))


def write_synthetic_root(root: Path, params: Params, *, progress: bool = True) -> dict[str, int]:
    """Write the synthetic corpus to `root`, replacing an older synthetic corpus there atomically.

    A root whose manifest already records these params is left as it is (a second run is free).
    A root that holds anything else (real downloads) is never touched.
    """
    from ..embedded.synthetic.corpus import GENERATOR, write_corpus

    manifest = {"generator": GENERATOR, "params": json.loads(params.synthetic.model_dump_json())}
    manifest_path = root / SYNTHETIC_MANIFEST
    if manifest_path.exists():
        existing = json.loads(manifest_path.read_text())
        if existing["params"] == manifest["params"]:
            return existing["counts"]
    elif root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} holds files the synthetic generator did not write (no {SYNTHETIC_MANIFEST}); "
                              f"move them away, or point data.root in params.yaml elsewhere")
    staging = root.with_name(root.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    counts = write_corpus(staging, params.synthetic, progress=progress)
    write_json(staging / SYNTHETIC_MANIFEST, {**manifest, "counts": counts})
    if root.exists():
        shutil.rmtree(root)
    staging.rename(root)
    return counts
