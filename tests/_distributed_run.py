"""Run by tests/test_distributed.py under ``accelerate launch``: training with the tiny
components of test_training.py on every process.

    _distributed_run.py CONFIGS_JSON kill OUT_JSON   # configs["straight"] uninterrupted (rank 0 writes its
                                                     # history), then configs["killed"], SIGKILLed mid-step
                                                     # configs["kill_at"] (one launch: start-up is the slow part)
    _distributed_run.py CONFIGS_JSON resume OUT_JSON # configs["killed"] with resume='auto'
"""

import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch

torch.set_num_threads(1)

from test_training import make_registry

from codi2.training import trainer

config_path, mode, out = sys.argv[1:4]
configs = json.loads(Path(config_path).read_text())


def write(result) -> None:
    import accelerate

    state = accelerate.PartialState()
    if state.is_main_process:
        Path(out).write_text(json.dumps({"history": result.history, "processes": state.num_processes,
                                         "distributed_type": str(state.distributed_type)}))


if mode == "kill":  # rank 0 kills itself in the middle of a step; the launcher then ends the other rank
    write(trainer.train(configs["straight"], make_registry()))
    kill_at, micro_step = configs["kill_at"], trainer._Run._micro_step

    def killing_micro_step(self, item):
        if self.step + 1 == kill_at and self.acc.is_main_process:
            os.kill(os.getpid(), signal.SIGKILL)
        return micro_step(self, item)

    trainer._Run._micro_step = killing_micro_step
    trainer.train(configs["killed"], make_registry())
    raise SystemExit("the run was not killed")

write(trainer.train(configs["killed"], make_registry(), resume="auto"))
