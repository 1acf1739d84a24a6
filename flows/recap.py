"""dvc stage `recap`: RecapD region captions from a VLM in two stages (paper Sec. 3.3).

One Prefect task per shard of images, on the task runner recap.task_runner names (threads, or
dask / ray when prefect-dask / prefect-ray are installed); the stage fails when more regions than
recap.max_failure_ratio got no caption (reports/recap/metrics.json, outputs/recap/failures.jsonl).
"""

from prefect import flow, task, unmapped

from rgpt.config import load_params
from rgpt.recap import stages
from rgpt.recap.generate import caption_shard
from rgpt.tracking import flow_version, log_outputs, stage_run

PARAMS = load_params()
STAGE_PARAMS = PARAMS.for_stage("recap")  # what the stage may read: the keys dvc.yaml lists for it


@task(task_run_name="recap shard {shard.index}")
def recap_shard(shard, job):
    return caption_shard(shard, job)


def map_shards(job, shards):
    return recap_shard.map(shards, unmapped(job)).result()


@flow(name="recap", version=flow_version("recap", PARAMS), task_runner=stages.task_runner(STAGE_PARAMS.recap))
def recap() -> dict:
    with stage_run("recap", PARAMS):
        result = stages.run_recap(STAGE_PARAMS, map_shards=map_shards, gate=False)
        log_outputs(result)
        stages.check_gate(result.metrics, STAGE_PARAMS.recap.max_failure_ratio)  # after logging: a failed run shows why
    return result.metrics


if __name__ == "__main__":
    recap()
