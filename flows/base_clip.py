"""dvc stage `base_clip`: the CLIP RecapD's filter scores with and RGPT's vision tower comes from.

Embedded: trained here on the validated regions of whole images, with its own tokenizer (which
also learns the words of the RecapD captions; a few CPU minutes). Paper: CLIP ViT-L/14-336
snapshotted from the Hugging Face hub (HF_TOKEN from the environment). It runs before the
instruction data, which clip_filter's captions go into.
"""

from prefect import flow

from rgpt.base_models import clip as stages
from rgpt.config import load_params
from rgpt.tracking import flow_version, log_outputs, stage_run

PARAMS = load_params()
STAGE_PARAMS = PARAMS.for_stage("base_clip")  # what the stage may read: the keys dvc.yaml lists for it


@flow(name="base_clip", version=flow_version("base_clip", PARAMS))
def base_clip() -> dict:
    with stage_run("base_clip", PARAMS):
        result = stages.run_base_clip(STAGE_PARAMS)
        log_outputs(result)
    return result.metrics


if __name__ == "__main__":
    base_clip()
