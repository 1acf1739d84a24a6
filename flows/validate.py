"""dvc stage `validate`: Great Expectations contracts on every raw dataset split.

Bad records are quarantined (reports/validate/quarantine.jsonl) and the rest written to
outputs/validate/; the stage fails when a split's bad share passes validate.max_bad_fraction.
"""

from prefect import flow, task

from rgpt.config import load_params
from rgpt.data import stages
from rgpt.data.formats import SPLITS
from rgpt.data.validate import check_gate
from rgpt.tracking import flow_version, log_outputs, stage_run

PARAMS = load_params()
STAGE_PARAMS = PARAMS.for_stage("validate")  # what the stage may read: the keys dvc.yaml lists for it


@task(task_run_name="validate {dataset}/{split}")
def validate_split(dataset: str, split: str):
    return stages.validate_one(STAGE_PARAMS, dataset, split)


@flow(name="validate", version=flow_version("validate", PARAMS))
def validate() -> dict:
    with stage_run("validate", PARAMS):
        reports = [validate_split(dataset, split) for dataset, splits in SPLITS.items() for split in splits]
        result = stages.finish_validation(STAGE_PARAMS, reports)
        log_outputs(result)
        # after logging, so that a failed run shows why
        check_gate(reports, STAGE_PARAMS.validate_.max_bad_fraction, stages.QUARANTINE)
    return result.metrics


if __name__ == "__main__":
    validate()
