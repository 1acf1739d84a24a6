"""Start a training module on every rank, and join the process group from inside one.

`launch` is the parent side: one node runs `torchrun --standalone`; several nodes run the
`deepspeed` launcher with a hostfile. `init_distributed` is the worker side: it works under
either launcher and in a plain single process.
"""

from __future__ import annotations

import collections
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

# Where DeepSpeed keeps the ops it compiles on first use (about a minute of building on a CPU):
# a persistent folder, so only the first run of a machine pays for it.
TORCH_EXTENSIONS_DIR = Path.home() / ".cache" / "rgpt" / "torch_extensions"
# how much of a failed run's output the error repeats
FAILURE_TAIL_LINES = 40


def _rank_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """Variables every rank gets on top of the launcher's: `env` wins over the defaults."""
    return {
        # each rank one BLAS thread: N ranks x all cores each oversubscribe the CPU (~5x slower)
        "OMP_NUM_THREADS": "1",
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(TORCH_EXTENSIONS_DIR)),
        **(env or {}),
    }


def launch(
    module: str,
    args: list[str],
    *,
    nproc_per_node: int,
    nnodes: int = 1,
    hostfile: Path | None = None,
    env: dict[str, str] | None = None,
) -> None:
    """Run `python -m module *args` on `nproc_per_node` processes per node; raise if a rank fails.

    The ranks' output is streamed to ours as it comes. On failure the error carries the exit code
    and the last lines of output, where the failing rank's traceback is.
    """
    rank_env = _rank_environment(env)
    if nnodes == 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc_per_node}", "-m", module, *args]
        _run(cmd, {**os.environ, **rank_env})
        return
    if hostfile is None:
        raise ValueError(f"{nnodes} nodes need a hostfile (train.hostfile in params.yaml): "
                         "see infra/deepspeed/hostfile.example")
    # The deepspeed launcher starts the remote ranks over ssh and passes them only the variables
    # listed in the file named by DS_ENV_FILE (one KEY=VALUE a line).
    with tempfile.NamedTemporaryFile("w", suffix=".deepspeed_env") as env_file:
        env_file.write("".join(f"{key}={value}\n" for key, value in rank_env.items()))
        env_file.flush()
        cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--hostfile", str(hostfile),
               "--num_nodes", str(nnodes), "--num_gpus", str(nproc_per_node), "--module", module, *args]
        _run(cmd, {**os.environ, **rank_env, "DS_ENV_FILE": env_file.name})


def _run(cmd: list[str], env: dict[str, str]) -> None:
    tail: collections.deque[str] = collections.deque(maxlen=FAILURE_TAIL_LINES)
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            print(line, end="", flush=True)  # as it comes, also when our stdout is a pipe
            tail.append(line)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}\nfailed with exit code {proc.returncode}; its last lines:\n"
                           + "".join(tail))


def init_distributed() -> None:
    """Join the process group the launcher set up, or make a group of one without a launcher.

    gloo on CPU, NCCL on GPU (each rank on the GPU of its LOCAL_RANK). Does nothing when the
    group already exists.
    """
    import deepspeed  # a few seconds of import: only where training happens
    import torch.distributed as dist

    if dist.is_initialized():
        return
    # Without these DeepSpeed looks for an MPI launcher (mpi4py) and fails.
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}.items():
        os.environ.setdefault(key, value)
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(_free_port())
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
