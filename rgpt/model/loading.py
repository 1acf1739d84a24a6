"""Loading a trained RGPT: from a saved folder (a training stage's output) or from MLflow.

    load_model("models/stage2")          # a folder holding config.json, weights and the processor
    load_model("models:/rgpt/3")         # a registered version, or runs:/<run id>/rgpt
"""

from __future__ import annotations

from pathlib import Path

MODEL_ARTIFACT = "model"  # the saved RGPT folder inside an MLflow model (rgpt.serve.pyfunc logs it so)


def resolve_model(ref: str | Path) -> Path:
    """A saved RGPT folder from a path, or from an MLflow URI (models:/rgpt/3, runs:/<id>/rgpt)."""
    ref = str(ref)
    if ":/" not in ref:
        return Path(ref)
    import mlflow
    import yaml

    from ..tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())  # the project's store (sqlite:///mlflow.db) unless the environment names one
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=ref))
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    artifacts = mlmodel["flavors"]["python_function"].get("artifacts", {})
    if MODEL_ARTIFACT not in artifacts:
        raise ValueError(f"{ref} is not an RGPT model logged by rgpt.serve.pyfunc (no '{MODEL_ARTIFACT}' artifact)")
    return local / artifacts[MODEL_ARTIFACT]["path"]


def load_model(ref: str | Path):
    """The model (in eval mode) and its processor, saved together in one folder or MLflow model."""
    from .modeling_rgpt import RGPTForConditionalGeneration
    from .processing_rgpt import RGPTProcessor

    path = resolve_model(ref)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} is not a saved RGPT model (no config.json): train one with `make pipeline`")
    return RGPTForConditionalGeneration.from_pretrained(path).eval(), RGPTProcessor.from_pretrained(path)
