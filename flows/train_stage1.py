"""dvc stage `train_stage1`: pre-training (vision tower and LLM frozen; refinement + connector trained).

Launches DeepSpeed ranks (train.nproc_per_node x train.nnodes) that log every optimizer step
into this flow's MLflow run; a killed run started again resumes from its last checkpoint.
"""

from prefect import flow

from rgpt.config import load_params
from rgpt.tracking import flow_version, stage_run
from rgpt.train import stages

PARAMS = load_params()
STAGE_PARAMS = PARAMS.for_stage("train_stage1")  # what the stage may read: the keys dvc.yaml lists for it


@flow(name="train_stage1", version=flow_version("train_stage1", PARAMS))
def train_stage1() -> dict:
    with stage_run("train_stage1", PARAMS) as run:
        return stages.train_and_log(STAGE_PARAMS, 1, run).metrics


if __name__ == "__main__":
    train_stage1()
