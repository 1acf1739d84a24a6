"""RGPT as an MLflow pyfunc model: the saved Hugging Face folder plus the code that answers.

`mlflow.pyfunc.load_model("models:/rgpt/<version>").predict(frame)` takes a DataFrame with
columns `image` (a path), `question` (with one `<region>` per region) and `regions` (a list of
{"box": [x1, y1, x2, y2]} dicts in image pixels, or its JSON; the one box convention of every
user-facing surface, `rgpt.user_regions`) and returns the answers.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd

from rgpt.model.loading import MODEL_ARTIFACT


class RGPTModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from rgpt.model.loading import load_model

        self.model, self.processor = load_model(context.artifacts[MODEL_ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> list[str]:
        from PIL import Image

        from rgpt.model.inference import Request, answer
        from rgpt.user_regions import box_region, image_question

        requests = []
        for row in model_input.itertuples():
            regions = json.loads(row.regions) if isinstance(row.regions, str) else list(row.regions)
            question = image_question(row.question)
            with Image.open(row.image) as image:
                image = image.convert("RGB")
            requests.append(Request(image, [(question, None)], [box_region(r["box"], *image.size) for r in regions]))
        return answer(self.model, self.processor, requests, max_new_tokens=int((params or {}).get("max_new_tokens", 64)))


def log_model(folder: str | Path, registered_name: str | None = None) -> mlflow.models.model.ModelInfo:
    """Log a saved RGPT folder as a pyfunc model in the active run (and register it, if named)."""
    import rgpt

    package = Path(rgpt.__file__).parent
    requirements = (package.parent / "requirements.lock").read_text().splitlines()
    return mlflow.pyfunc.log_model(
        name="rgpt", python_model=RGPTModel(), artifacts={MODEL_ARTIFACT: str(folder)},
        code_paths=[str(package)], registered_model_name=registered_name,
        pip_requirements=[r for r in requirements if r and not r.startswith("#")])


def write_model_record(info: mlflow.models.model.ModelInfo, path: str | Path, name: str) -> Path:
    """Which MLflow run and registered version hold a model (the evaluate stage attaches its figures there)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"name": name, "version": info.registered_model_version, "run_id": info.run_id,
              "model_uri": info.model_uri}
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path
