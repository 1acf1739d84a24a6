"""download: the raw corpus under data/ (the synthetic twin, or the real datasets).

Not a dvc stage: its output is data/ itself, which `dvc add data` records in data.dvc
(`make data` runs both). A second run with the same params does nothing.
"""

from prefect import flow

from rgpt.config import load_params
from rgpt.data import stages
from rgpt.tracking import flow_version, log_outputs, stage_run

PARAMS = load_params()


@flow(name="download", version=flow_version("download", PARAMS), log_prints=True)
def download() -> dict:
    with stage_run("download", PARAMS):
        result = stages.produce_corpus(PARAMS)
        log_outputs(result)
        print(f"{PARAMS.data.source} corpus ready in {PARAMS.data.root}/: {result.metrics}")
    return result.metrics


if __name__ == "__main__":
    download()
