"""dvc stage `train_stage2`: fine-tuning (only the vision tower frozen), from stage 1's model.

Launches DeepSpeed ranks (train.nproc_per_node x train.nnodes) that log every optimizer step
into this flow's MLflow run; a killed run started again resumes from its last checkpoint.
"""

from prefect import flow

from rgpt.config import load_params
from rgpt.serve.pyfunc import log_model, write_model_record
from rgpt.tracking import flow_version, log_inputs, log_outputs, stage_run, tracking_uri
from rgpt.train import stages

PARAMS = load_params()


@flow(name="train_stage2", version=flow_version("train_stage2", PARAMS))
def train_stage2() -> dict:
    with stage_run("train_stage2", PARAMS) as run:
        log_inputs({"conversations": stages.CONVERSATIONS / "finetune.jsonl"}, context="training")
        env = {"MLFLOW_RUN_ID": run.info.run_id, "MLFLOW_TRACKING_URI": tracking_uri()}
        result = stages.run_stage(PARAMS, 2, env)
        log_outputs(result)
        info = log_model(stages.MODELS / "stage2", registered_name="rgpt")
        write_model_record(info, stages.REPORTS / "train_stage2" / "model.json", "rgpt")
    return result.metrics


if __name__ == "__main__":
    train_stage2()
