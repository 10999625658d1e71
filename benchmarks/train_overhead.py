"""One CoDi-2 training step vs the same components' forward + backward run directly.

codi2 side: ``losses = model(batch); losses["total"].backward()`` on a collated batch (all three
loss terms: text cross-entropy, feature MSE, diffusion). Baseline: :class:`_raw.RawTrainStep`,
the same mathematics written straight against the components (``encoder.encode``, the input
projector, the transformers model on ``inputs_embeds``, the output projector,
``decoder.target_features`` and ``decoder.diffusion_loss``), then ``backward``. Both sides start
from ``zero_grad(set_to_none=True)`` and the same seeds; the run first checks that both give the
same losses and the same gradients, so they do the same work. Collation (chat template,
tokenizer, media loading) is data-loader work and is timed apart, for information.

Figure: ``step_ratio`` = median codi2 step time / median baseline step time (CPU time of this
process on a CPU with one thread, see ``_common.Timings``). Goal <= 1.05. Next to it,
``overhead_ms``: the forward pass's CPU time outside the component calls both sides make
(encoder, transformers forward, ``target_features``, ``diffusion_loss``), codi2 minus baseline
(``_common.own_time``): the wrapper's cost without the components' run-time noise.

The stack (``_stack.py``): ImageBind, Llama and SD-2.1-unCLIP at small random-weight sizes, built
through the registry with the real plugins (LLM ``small``: 256 wide, 4 layers, LoRA r=32).

    python benchmarks/train_overhead.py [--json] [--repeats N] [--batch B] [--size tiny|small] [--aa]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # first: it sets the offline environment before any model library loads


def main(argv: list[str] | None = None) -> dict:
    parser = _common.base_parser(__doc__.splitlines()[0], repeats=40, warmup=2)
    parser.add_argument("--batch", type=int, default=4, help="conversations per step (default 4)")
    parser.add_argument("--size", choices=("tiny", "small"), default="small", help="LLM shape (default small)")
    parser.add_argument("--attribute-repeats", type=int, default=20, help="rounds of the overhead attribution (default 20)")
    parser.add_argument("--workdir", default=None, help="folder for the built backbones (default: a temp folder)")
    _common.add_aa_option(parser)
    args = parser.parse_args(argv)
    _common.setup(args)

    import _raw
    import _stack
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        model = _stack.build_model(workdir, llm=args.size, encoder="tiny")
        model.set_trainable(llm="lora")
        model.train()
        sources, targets = _stack.images(args.batch, seed=1), _stack.images(args.batch, seed=2)
        conversations = [_stack.edit_conversation(s, t) for s, t in zip(sources, targets)]
        start = time.perf_counter()
        batch = model.collate(conversations)
        collate_s = time.perf_counter() - start
        raw = _raw.RawTrainStep(model, batch)
        params = [p for p in model.parameters() if p.requires_grad]

        def codi2_step() -> dict:
            model.zero_grad(set_to_none=True)
            torch.manual_seed(0)  # LoRA dropout draws
            losses = model(batch, generator=torch.Generator().manual_seed(0))
            losses["total"].backward()
            return losses

        def raw_step() -> dict:
            model.zero_grad(set_to_none=True)
            torch.manual_seed(0)
            losses = raw.losses(generator=torch.Generator().manual_seed(0))
            losses["total"].backward()
            return losses

        parity = check_parity(codi2_step, raw_step, params)
        times = _common.interleave({"codi2": codi2_step, "raw": codi2_step if args.aa else raw_step},
                                   repeats=args.repeats, warmup=args.warmup)
        # the forward pass alone, timed outside the components both sides share
        decoder = model.decoders["image"]
        components = [(model.encoder_for["image"], "encode"), (raw.hf, "forward"),
                      (decoder, "target_features"), (decoder, "diffusion_loss")]
        forwards = {"codi2": lambda: model(batch, generator=torch.Generator().manual_seed(0)),
                    "raw": lambda: raw.losses(generator=torch.Generator().manual_seed(0))}
        own = _common.own_time(forwards, components, repeats=args.attribute_repeats)

    report = _common.Report("train_overhead")
    if args.aa:
        report.notes.append("A/A run: both sides are the codi2 step; the ratio shows this machine's noise floor")
    report.compare("step_ratio", times, args.clock, ("codi2", "raw"), goal="<= 1.05",
                   note="codi2 training step / the same components run directly")
    report.add("collate", 1000 * collate_s, "ms", note="once, for information: data-loader work, not in the step")
    extra = own["codi2"]["own_ms"] - own["raw"]["own_ms"]
    report.add("overhead_ms", extra, "ms", note="forward CPU time outside the shared component calls, codi2 minus baseline")
    report.add("overhead_share", extra / (1000 * _common.median(times.cpu["raw"])), "", note="overhead_ms / the baseline step")
    report.details["own_time"] = own
    report.details.update({
        "aa": args.aa, "batch": args.batch, "size": args.size, "sequence_length": int(batch.ids.shape[1]), "clock": args.clock,
        "repeats": args.repeats, "warmup": args.warmup, "parity": parity, **times.as_dict(),
    })
    return report.emit(args.json)


def check_parity(codi2_step, raw_step, params) -> dict:
    """Run both sides once from the same seeds: same losses and same gradients, or fail."""

    a = {k: v.detach().clone() for k, v in codi2_step().items()}
    grads_a = [p.grad.clone() if p.grad is not None else None for p in params]
    b = {k: v.detach().clone() for k, v in raw_step().items()}
    grads_b = [p.grad.clone() if p.grad is not None else None for p in params]
    loss_diff = max(float((a[k] - b[k]).abs()) for k in a)
    grad_diff = 0.0
    for ga, gb in zip(grads_a, grads_b):
        if (ga is None) != (gb is None):
            raise AssertionError("codi2 and the baseline reach different parameters")
        if ga is not None:
            grad_diff = max(grad_diff, float((ga - gb).abs().max()))
    if loss_diff > 1e-4 or grad_diff > 1e-4:
        raise AssertionError(f"the baseline does not compute what codi2 computes: loss diff {loss_diff}, grad diff {grad_diff}")
    return {"losses": {k: float(v) for k, v in a.items()}, "max_loss_diff": loss_diff, "max_grad_diff": grad_diff,
            "trained_tensors": sum(g is not None for g in grads_a)}


if __name__ == "__main__":
    main()
