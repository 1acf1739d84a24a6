"""dvc stage `evaluate`: the stage-2 model on every benchmark (paper Sec. 4.2): COCO region
classification, RefCOCOg / VG region captioning, RefCOCOg REC and POPE; the synthetic twins in
the embedded profile, the real sets in the paper profile.

Predictions are cached per benchmark (outputs/evaluate/), so a killed run resumes; the figures go
to this flow's MLflow run and onto the evaluated model's run and registered version.
"""

from prefect import flow

from rgpt.config import load_params
from rgpt.eval import stages
from rgpt.paths import MODELS
from rgpt.tracking import flow_version, log_outputs, stage_run

PARAMS = load_params()
STAGE_PARAMS = PARAMS.for_stage("evaluate")  # what the stage may read: the keys dvc.yaml lists for it


@flow(name="evaluate", version=flow_version("evaluate", PARAMS))
def evaluate() -> dict:
    with stage_run("evaluate", PARAMS):
        result = stages.run_evaluate(STAGE_PARAMS)
        log_outputs(result)
        if STAGE_PARAMS.evaluate.model == MODELS / "stage2":  # the model the record names
            stages.log_to_registered_model(result.metrics)
    return result.metrics


if __name__ == "__main__":
    evaluate()
