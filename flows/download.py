"""download: the raw corpus under data/ (the synthetic twin, or the real datasets).

Not a dvc stage: its output is data/ itself, which `dvc add data` records in data.dvc
(`make data` runs both). A second run with the same params does nothing.
"""

from prefect import flow

from rgpt.config import load_params
from rgpt.data import corpus
from rgpt.tracking import flow_version, log_outputs, stage_run

PARAMS = load_params()
STAGE_PARAMS = PARAMS.for_stage("download")  # what the stage may read (config.DOWNLOAD_KEYS)


@flow(name="download", version=flow_version("download", PARAMS), log_prints=True)
def download() -> dict:
    with stage_run("download", PARAMS):
        result = corpus.produce_corpus(STAGE_PARAMS)
        log_outputs(result)
        print(f"{STAGE_PARAMS.data.source} corpus ready in {STAGE_PARAMS.data.root}/: {result.metrics}")
    return result.metrics


if __name__ == "__main__":
    download()
