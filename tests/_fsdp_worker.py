"""A process of tests/test_distributed.py's FSDP check (torch.multiprocessing.spawn target)."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def run(rank: int, world: int, port: int, out: str) -> None:
    import json

    import torch
    import torch.distributed as dist
    from test_training import make_registry, model_config
    from torch.distributed.fsdp import fully_shard

    from codi2.assembly import assemble
    from codi2.testing import test_media

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = assemble(model_config(), registry=make_registry())
        model.set_trainable(llm="full")
        image = test_media("image", rank)  # each process its own sample, as under data parallelism
        batch = model.collate([[{"role": "user", "content": [{"type": "text", "text": "Invert "}, {"type": "image", "data": image}]},
                                {"role": "assistant", "content": [{"type": "text", "text": "Done: "}, {"type": "image", "data": image}]}]])
        model(batch, generator=torch.Generator().manual_seed(rank))["total"].backward()
        plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        for grad in plain.values():  # what DDP computes: the mean over processes
            dist.all_reduce(grad)
            grad /= world
        model.zero_grad(set_to_none=True)
        fully_shard(model)
        model(batch, generator=torch.Generator().manual_seed(rank))["total"].backward()
        sharded = {n: p.grad.full_tensor() for n, p in model.named_parameters() if p.grad is not None}
        dtensors = sum(type(p).__name__ == "DTensor" for p in model.parameters())
        if rank == 0:
            worst = max(float((sharded[n] - g).abs().max()) for n, g in plain.items())
            Path(out).write_text(json.dumps({"names_equal": sorted(sharded) == sorted(plain), "worst": worst,
                                             "trained": len(plain), "dtensors": dtensors}))
    finally:
        dist.destroy_process_group()
