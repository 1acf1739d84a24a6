"""dvc stage `train_stage2`: fine-tuning (only the vision tower frozen), from stage 1's model, registered
in MLflow as `rgpt`.

Launches DeepSpeed ranks (train.nproc_per_node x train.nnodes) that log every optimizer step
into this flow's MLflow run; a killed run started again resumes from its last checkpoint.
"""

from prefect import flow

from rgpt.config import load_params
from rgpt.tracking import flow_version, stage_run
from rgpt.train import stages

PARAMS = load_params()
STAGE_PARAMS = PARAMS.for_stage("train_stage2")  # what the stage may read: the keys dvc.yaml lists for it


@flow(name="train_stage2", version=flow_version("train_stage2", PARAMS))
def train_stage2() -> dict:
    with stage_run("train_stage2", PARAMS) as run:
        return stages.train_and_log(STAGE_PARAMS, 2, run).metrics


if __name__ == "__main__":
    train_stage2()
