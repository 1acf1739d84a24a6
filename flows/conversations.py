"""dvc stage `conversations`: multi-turn instruction data for pre-training and fine-tuning."""

from prefect import flow

from rgpt.config import load_params
from rgpt.data import stages
from rgpt.data.validate import check_gate
from rgpt.tracking import flow_version, log_outputs, stage_run

PARAMS = load_params()
STAGE_PARAMS = PARAMS.for_stage("conversations")  # what the stage may read: the keys dvc.yaml lists for it


@flow(name="conversations", version=flow_version("conversations", PARAMS))
def conversations() -> dict:
    with stage_run("conversations", PARAMS):
        result, reports = stages.run_conversations(STAGE_PARAMS)
        log_outputs(result)
        check_gate(reports, STAGE_PARAMS.validate_.max_bad_fraction, stages.CONVERSATION_QUARANTINE)
    return result.metrics


if __name__ == "__main__":
    conversations()
