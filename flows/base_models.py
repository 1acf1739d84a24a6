"""dvc stage `base_models`: the tokenizer and the LLM RGPT starts from (the CLIP is base_clip's).

Embedded: trained here on REC drills and the conversations (~37 CPU minutes). Paper: Vicuna-7B v1.5
snapshotted from the Hugging Face hub (HF_TOKEN from the environment).
"""

from prefect import flow

from rgpt.base_models import llm as stages
from rgpt.config import load_params
from rgpt.tracking import flow_version, log_outputs, stage_run

PARAMS = load_params()
STAGE_PARAMS = PARAMS.for_stage("base_models")  # what the stage may read: the keys dvc.yaml lists for it


@flow(name="base_models", version=flow_version("base_models", PARAMS))
def base_models() -> dict:
    with stage_run("base_models", PARAMS):
        result = stages.run_base_models(STAGE_PARAMS)
        log_outputs(result)
    return result.metrics


if __name__ == "__main__":
    base_models()
