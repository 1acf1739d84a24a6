"""dvc stage `clip_filter`: RecapD's CLIP filter (paper Sec. 3.3).

Scores every recap caption against its region with the base CLIP (long captions chunk by chunk),
keeps those at or above clip_filter.threshold, and reports kept/dropped, words per caption and,
where the stand-in's corruption truth exists, the filter's precision and recall.
"""

from prefect import flow

from rgpt.config import load_params
from rgpt.recap import clip_filter as stage
from rgpt.tracking import flow_version, log_outputs, stage_run

PARAMS = load_params()
STAGE_PARAMS = PARAMS.for_stage("clip_filter")  # what the stage may read: the keys dvc.yaml lists for it


@flow(name="clip_filter", version=flow_version("clip_filter", PARAMS))
def clip_filter() -> dict:
    with stage_run("clip_filter", PARAMS):
        result = stage.run_clip_filter(STAGE_PARAMS)
        log_outputs(result)
    return result.metrics


if __name__ == "__main__":
    clip_filter()
