"""Distributed training verified: ``accelerate launch`` with two CPU processes (gloo), from
WebDataset shards, one run killed with SIGKILL and resumed onto the loss curve of an
uninterrupted one.

FSDP is not launched through accelerate here: accelerate (1.16) sets up FSDP only for
accelerator devices (see docs/training.md, "From one GPU to many nodes"). What the CPU allows is
checked instead: torch's own FSDP over codi2's model on two gloo processes.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_training import run_config, totals, write_dataset

from codi2.training.checkpoint import latest_checkpoint
from codi2.training.shards import convert

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(config: Path, mode: str, arg: str) -> subprocess.CompletedProcess:
    # on CPUs accelerate starts its processes through torchrun (--multi_gpu) and ACCELERATE_USE_CPU
    # makes each one a CPU process joined over gloo (a MULTI_CPU run)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), str(HERE / "_distributed_run.py"), str(config), mode, arg]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=240, check=False)


@pytest.mark.timeout(300)
def test_ddp_on_two_cpu_processes_from_shards_killed_and_resumed_matches_an_uninterrupted_run(tmp_path):
    convert(write_dataset(tmp_path / "jsonl", n=8), tmp_path / "shards", shard_size=2)  # 4 shards: 2 per rank
    settings = {"batch_size": 1, "max_steps": 8, "num_workers": 0, "save_every": 2, "keep_last": 2}
    configs = tmp_path / "configs.json"
    configs.write_text(json.dumps({"straight": run_config(tmp_path / "a", tmp_path / "shards", **settings),
                                   "killed": run_config(tmp_path / "b", tmp_path / "shards", **settings), "kill_at": 6}))

    dead = launch(configs, "kill", str(tmp_path / "straight-out.json"))  # an uninterrupted run, then the killed one
    assert (tmp_path / "straight-out.json").is_file(), dead.stderr[-3000:]
    reference = json.loads((tmp_path / "straight-out.json").read_text())
    assert reference["processes"] == 2 and reference["distributed_type"] == "DistributedType.MULTI_CPU"
    assert [h["step"] for h in reference["history"]] == list(range(1, 9))
    assert dead.returncode != 0, "the second run was to be killed"
    checkpoint = latest_checkpoint(tmp_path / "b" / "run" / "checkpoints")
    assert checkpoint is not None and checkpoint.name == "step-000004", "killed during step 6: step 4 is the last checkpoint"

    resumed = launch(configs, "resume", str(tmp_path / "resumed-out.json"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    history = json.loads((tmp_path / "resumed-out.json").read_text())["history"]
    assert [h["step"] for h in history] == list(range(5, 9))
    np.testing.assert_allclose(totals(history), totals(reference["history"][4:]), rtol=1e-6, atol=1e-7)


def test_the_documented_accelerate_configs_load_and_deepspeed_matches_the_paper_config():
    """The configs of docs/training.md ("From one GPU to many nodes") as far as a CPU checks
    them: accelerate reads each (unknown or misspelled keys fail), and DeepSpeed's file builds
    accelerate's DeepSpeed plugin (deepspeed itself is not installed here) with the micro-batch
    and accumulation of the documented paper-scale training config."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DeepSpeedPlugin, DistributedType

    folder = HERE.parent / "docs" / "accelerate"
    kinds = {path.name: load_config_from_file(str(path)).distributed_type for path in sorted(folder.glob("*.yaml"))}
    assert kinds == {"ddp-2nodes.yaml": DistributedType.MULTI_GPU, "ddp-8gpu.yaml": DistributedType.MULTI_GPU,
                     "deepspeed-zero2-8gpu.yaml": DistributedType.DEEPSPEED, "fsdp-8gpu.yaml": DistributedType.FSDP}
    deepspeed = load_config_from_file(str(folder / "deepspeed-zero2-8gpu.yaml")).deepspeed_config
    plugin = DeepSpeedPlugin(hf_ds_config=str(HERE.parent / deepspeed["deepspeed_config_file"]))
    assert plugin.zero_stage == 2
    docs = (HERE.parent / "docs" / "training.md").read_text()
    assert "batch_size: 4\ngrad_accumulation: 8\n" in docs, "the paper-scale config of docs/training.md"
    assert plugin.deepspeed_config["train_micro_batch_size_per_gpu"] == 4 and plugin.deepspeed_config["gradient_accumulation_steps"] == 8


def test_torch_fsdp_shards_the_model_on_two_cpu_processes_with_ddp_gradients(tmp_path):
    """What the CPU allows for FSDP (accelerate will not set it up on CPUs, see the module doc):
    torch's own FSDP (fully_shard) over codi2's model on two gloo processes, each with its own
    sample. Every parameter becomes a shard, and the gathered gradients equal DDP's (the mean
    of the processes' unsharded gradients)."""
    import _fsdp_worker
    import torch.multiprocessing as mp

    out = tmp_path / "fsdp.json"
    mp.spawn(_fsdp_worker.run, args=(2, free_port(), str(out)), nprocs=2)
    result = json.loads(out.read_text())
    assert result["names_equal"] and result["trained"] > 20 and result["dtensors"] > result["trained"]
    assert result["worst"] < 1e-6
