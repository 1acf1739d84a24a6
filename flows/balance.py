"""dvc stage `balance`: the paper's per-class and per-image sampling caps (Sec. 3.2, Tables 9-10)."""

from prefect import flow

from rgpt.config import load_params
from rgpt.data import stages
from rgpt.tracking import flow_version, log_outputs, stage_run

PARAMS = load_params()
STAGE_PARAMS = PARAMS.for_stage("balance")  # what the stage may read: the keys dvc.yaml lists for it


@flow(name="balance", version=flow_version("balance", PARAMS))
def balance() -> dict:
    with stage_run("balance", PARAMS):
        result = stages.run_balance(STAGE_PARAMS)
        log_outputs(result)
    return result.metrics


if __name__ == "__main__":
    balance()
