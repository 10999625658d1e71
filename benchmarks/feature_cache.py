"""Epoch 2 vs epoch 1: time spent getting encoder features with the on-disk feature cache.

A short training run (forward, backward, AdamW step) over ``--items`` conversations, each with
its own input image, with ``model.feature_cache`` set to a fresh
:class:`codi2.training.cache.FeatureCache` folder. Epoch 1 misses every item (ImageBind runs,
the features are written), epoch 2 hits every item (read back; the encoder must not run: checked
with the cache's counters and a call counter on ``encoder.encode``). The time measured is
all of :meth:`CoDi2Model.encode_media` (hashing, cache look-ups, encoder, writes).

The encoder is a mid-sized ImageBind (random weights, the real architecture at 224 x 224 input;
``--encoder``): a cache read is a small fixed cost, so with the real ImageBind-huge (about 60x
more compute per image than ``medium``) the ratio is smaller still. Each repeat is a fresh cache
and a fresh pair of epochs (epoch 1, epoch 2, epoch 1, epoch 2, ...).

Figure: ``epoch2_over_epoch1`` = median over repeats of (encoder time in epoch 2 / in epoch 1).
Goal <= 0.05.

    python benchmarks/feature_cache.py [--json] [--repeats N] [--items N] [--encoder tiny|small|medium]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # first: it sets the offline environment before any model library loads


class MemoryCache:
    """A dict with the FeatureCache interface (used only when codi2.training.cache is absent)."""

    def __init__(self, root: Path):
        self.store: dict = {}

    def get(self, key):
        return self.store.get(key)

    def put(self, key, tensor) -> None:
        self.store[key] = tensor.detach().cpu().clone()


def main(argv: list[str] | None = None) -> dict:
    parser = _common.base_parser(__doc__.splitlines()[0], repeats=3, warmup=0)
    parser.add_argument("--items", type=int, default=16, help="conversations per epoch, one image each (default 16)")
    parser.add_argument("--batch", type=int, default=4, help="conversations per step (default 4)")
    parser.add_argument("--encoder", choices=("tiny", "small", "medium"), default="medium", help="ImageBind size (default medium)")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    _common.setup(args)

    import _stack
    import torch

    notes = []
    try:
        from codi2.training.cache import FeatureCache as Cache
    except ImportError:  # the trainer's cache is not installed: measure the hook with a dict
        Cache = MemoryCache
        notes.append("codi2.training.cache is absent: an in-memory dict cache was measured instead")

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        model = _stack.build_model(workdir, llm="tiny", encoder=args.encoder, decoder=False)
        model.set_trainable(llm="lora")
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        conversations = [_describe(img) for img in _stack.images(args.items, seed=7, side=64)]
        batches = [model.collate(conversations[i : i + args.batch]) for i in range(0, args.items, args.batch)]

        spent = {"wall": 0.0, "cpu": 0.0}
        encode_calls = [0]
        encode_media, encoder = model.encode_media, model.encoder_for["image"]
        encode = encoder.encode

        def timed_encode_media(items, modality):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return encode_media(items, modality)
            finally:
                spent["wall"] += time.perf_counter() - wall
                spent["cpu"] += time.process_time() - cpu

        def counted_encode(items, modality):
            encode_calls[0] += 1
            return encode(items, modality)

        model.encode_media, encoder.encode = timed_encode_media, counted_encode

        def epoch() -> dict:
            spent.update(wall=0.0, cpu=0.0)
            encode_calls[0] = 0
            for batch in batches:
                loss = model(batch)["total"]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            return {**spent, "encoder_calls": encode_calls[0]}

        runs = []
        for r in range(args.repeats):
            model.feature_cache = Cache(workdir / f"cache{r}")
            first, second = epoch(), epoch()
            if second["encoder_calls"]:
                raise AssertionError(f"epoch 2 ran the encoder {second['encoder_calls']} time(s): the cache missed")
            stats = getattr(model.feature_cache, "stats", None)
            runs.append({"epoch1": first, "epoch2": second, "cache_stats": stats.as_dict() if stats else None})
        model.feature_cache = None

    clock = args.clock
    ratios = [run["epoch2"][clock] / run["epoch1"][clock] for run in runs]
    report = _common.Report("feature_cache", notes=notes)
    report.add("epoch2_over_epoch1", _common.median(ratios), "x", "<= 0.05",
               f"encoder time with the cache, epoch 2 / epoch 1 ({clock} time)")
    other = "wall" if clock == "cpu" else "cpu"
    report.add(f"epoch2_over_epoch1_by_{other}", _common.median([r["epoch2"][other] / r["epoch1"][other] for r in runs]), "x")
    report.add("miss_ms_per_item", 1000 * _common.median([r["epoch1"][clock] for r in runs]) / args.items, "ms",
               note="epoch 1: hash + encoder + write")
    report.add("hit_ms_per_item", 1000 * _common.median([r["epoch2"][clock] for r in runs]) / args.items, "ms",
               note="epoch 2: hash + read")
    report.details.update({"items": args.items, "batch": args.batch, "encoder": args.encoder, "cache": Cache.__name__,
                           "clock": clock, "repeats": args.repeats, "runs": runs})
    return report.emit(args.json)


def _describe(image) -> list[dict]:
    return [
        {"role": "user", "content": [{"type": "image", "data": image}, {"type": "text", "text": " What is this?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A picture of shapes."}]},
    ]


if __name__ == "__main__":
    main()
