"""Peak memory (RSS) of a training step, codi2 vs the raw components; frozen parts hold nothing.

Each side runs in its own fresh Python process (``--child codi2|raw|codi2-checkpointing``), so neither inherits the
other's allocator state; a pair runs concurrently (RSS is per process). A child builds the
benchmark stack, collates a batch, builds AdamW over the trainable parameters, and runs
``--steps`` training steps (forward, backward, optimizer step, ``zero_grad``): the codi2 side
``model(batch)``, the raw side :class:`_raw.RawTrainStep` on the same components. Before each step
the kernel's peak-RSS mark is reset (``/proc/self/clear_refs``; where that is not allowed, a 1 ms
sampling thread measures instead) and read after it.

A third child, ``codi2-checkpointing``, runs codi2's step with gradient checkpointing through
the whole model (LLM, denoisers that offer it, projectors: what ``gradient_checkpointing: true``
switches on in the trainer); ``checkpointing_growth_ratio`` is its step growth over codi2's.

Figures: ``peak_rss_ratio`` (whole-process peak during a step, codi2 / raw: both hold the same
libraries and weights) and ``step_growth_ratio`` (peak during the step minus the RSS before it).
The codi2 child also checks, after the first backward, that no frozen parameter (encoder, LLM
base weights, decoder) has a gradient and that the optimizer holds state only for trainable
ones, and reports the bytes of each.

    python benchmarks/memory.py [--json] [--repeats N] [--steps N] [--batch B]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # first: it sets the offline environment before any model library loads
import _stack

PAGE = os.sysconf("SC_PAGE_SIZE")
#: codi2's step, the raw components' step, and codi2's step with gradient checkpointing through
#: the whole model (codi2.training.stages.enable_gradient_checkpointing)
SIDES = ("codi2", "raw", "codi2-checkpointing")


def main(argv: list[str] | None = None) -> dict:
    parser = _common.base_parser(__doc__.splitlines()[0], repeats=1, warmup=0)
    parser.add_argument("--steps", type=int, default=3, help="training steps per process; the first is a warm-up (default 3)")
    parser.add_argument("--batch", type=int, default=4, help="conversations per step (default 4)")
    parser.add_argument("--size", choices=("tiny", "small"), default="small", help="LLM shape (default small)")
    parser.add_argument("--child", choices=SIDES, default=None, help=argparse_hidden())
    parser.add_argument("--smoke", action="store_true",
                        help="run both sides in this process, one after the other (fast: checks the code, not the figures)")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    _common.setup(args)
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return {}

    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or tmp
        results: dict[str, list[dict]] = {side: [] for side in SIDES}
        _stack.tokenizer_dir(workdir), _stack.sd_unclip_dir(workdir)  # build the backbones once, before the children
        for i in range(0 if args.smoke else args.repeats):
            # the pair runs concurrently: a process's RSS does not depend on its neighbour's
            children = {side: _spawn(side, args, workdir) for side in (SIDES if i % 2 == 0 else SIDES[::-1])}
            for side, process in children.items():
                results[side].append(_collect(side, process))
        if args.smoke:
            for side in SIDES:
                results[side].append(child(argparse_namespace(args, child=side, workdir=workdir)))

    report = _common.Report("memory")
    peak = {s: _common.median([r["peak_rss"] for r in rs]) for s, rs in results.items()}
    growth = {s: _common.median([r["step_growth"] for r in rs]) for s, rs in results.items()}
    report.add("peak_rss_ratio", peak["codi2"] / peak["raw"], "x", note="peak RSS during a training step, codi2 / raw")
    report.add("step_growth_ratio", growth["codi2"] / max(growth["raw"], 1), "x", note="RSS growth during the step, codi2 / raw")
    report.add("checkpointing_growth_ratio", growth["codi2-checkpointing"] / max(growth["codi2"], 1), "x",
               note="RSS growth during a step with gradient checkpointing through the whole model / without")
    for side in SIDES:
        report.add(f"{side}_peak_rss", peak[side] / 2**20, "MiB")
        report.add(f"{side}_step_growth", growth[side] / 2**20, "MiB")
    check = results["codi2"][0]["frozen_check"]
    report.add("frozen_grad_bytes", check["frozen_grad_bytes"], "B", "<= 0", "gradients held by frozen parameters")
    report.add("frozen_optimizer_bytes", check["frozen_optimizer_bytes"], "B", "<= 0", "optimizer state of frozen parameters")
    report.add("frozen_params_in_optimizer", len(check["frozen_in_optimizer"]), "", "<= 0", "frozen tensors handed to the optimizer")
    report.add("trainable_without_grad", len(check["trainable_without_grad"]), "", "<= 0", "trainable tensors the loss did not reach")
    report.add("trainable_param_bytes", check["trainable_param_bytes"], "B")
    report.add("grad_bytes", check["grad_bytes"], "B")
    report.add("optimizer_state_bytes", check["optimizer_state_bytes"], "B")
    report.add("frozen_param_bytes", check["frozen_param_bytes"], "B")
    if args.smoke:
        report.notes.append("smoke run: both sides in one process; the figures mean little")
    report.details.update({"smoke": args.smoke, "method": results["codi2"][0]["method"],
                           "optimizer": results["codi2"][0]["optimizer"], "steps": args.steps, "batch": args.batch,
                           "size": args.size, "repeats": args.repeats, "children": results})
    return report.emit(args.json)


def argparse_namespace(args, **changes):
    import argparse

    return argparse.Namespace(**{**vars(args), **changes})


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


def _spawn(side: str, args, workdir: str) -> subprocess.Popen:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", side, "--steps", str(args.steps),
               "--batch", str(args.batch), "--size", args.size, "--workdir", str(workdir)]
    if args.threads is not None:
        command += ["--threads", str(args.threads)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _collect(side: str, process: subprocess.Popen) -> dict:
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"memory child {side!r} failed ({process.returncode}):\n{stderr[-3000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


# --- inside a child ------------------------------------------------------------------------------


def child(args) -> dict:
    import _raw
    import torch

    model = _stack.build_model(Path(args.workdir), llm=args.size, encoder="tiny")
    model.set_trainable(llm="lora")
    model.train()
    if args.child == "codi2-checkpointing":
        from codi2.training.stages import enable_gradient_checkpointing

        enable_gradient_checkpointing(model)
    conversations = [_stack.edit_conversation(s, t) for s, t in zip(_stack.images(args.batch, seed=1), _stack.images(args.batch, seed=2))]
    batch = model.collate(conversations)
    try:  # the optimizer exactly as codi2's trainer builds it, when the trainer is installed
        from codi2.training.stages import param_groups

        groups, _ = param_groups(model, weight_decay=0.01)
        optimizer_source = "codi2.training.stages.param_groups"
    except ImportError:
        groups, optimizer_source = [{"params": [p for p in model.parameters() if p.requires_grad]}], "requires_grad filter"
    opt = torch.optim.AdamW(groups, lr=1e-4)
    raw = _raw.RawTrainStep(model, batch) if args.child == "raw" else None
    meter = PeakMeter()
    peaks, growths, check = [], [], None
    for step in range(args.steps):
        before = rss()
        meter.start()
        losses = model(batch, generator=torch.Generator().manual_seed(step)) if raw is None else raw.losses(torch.Generator().manual_seed(step))
        losses["total"].backward()
        if check is None:
            check = frozen_check(model, opt)
        opt.step()
        opt.zero_grad(set_to_none=True)
        del losses
        peak = meter.stop()
        if step > 0 or args.steps == 1:  # the first step also allocates the optimizer state
            peaks.append(peak)
            growths.append(peak - before)
    check = {**check, "optimizer_state_bytes": _state_bytes(opt)}
    check["frozen_optimizer_bytes"] = _state_bytes(opt, frozen=True, model=model)
    return {"side": args.child, "peak_rss": max(peaks), "step_growth": max(growths), "method": meter.method,
            "optimizer": optimizer_source, "frozen_check": check}


def frozen_check(model, opt) -> dict:
    """Bytes of parameters, gradients and optimizer entries, split trainable / frozen."""
    out = {"trainable_param_bytes": 0, "frozen_param_bytes": 0, "grad_bytes": 0, "frozen_grad_bytes": 0,
           "frozen_with_grad": [], "frozen_in_optimizer": [], "trainable_without_grad": []}
    in_optimizer = {id(p) for group in opt.param_groups for p in group["params"]}
    for name, p in model.named_parameters():
        size = p.numel() * p.element_size()
        if p.requires_grad:
            out["trainable_param_bytes"] += size
            if p.grad is None:
                out["trainable_without_grad"].append(name)
            else:
                out["grad_bytes"] += p.grad.numel() * p.grad.element_size()
        else:
            out["frozen_param_bytes"] += size
            if p.grad is not None:
                out["frozen_grad_bytes"] += p.grad.numel() * p.grad.element_size()
                out["frozen_with_grad"].append(name)
            if id(p) in in_optimizer:
                out["frozen_in_optimizer"].append(name)
    return out


def _state_bytes(opt, *, frozen: bool = False, model=None) -> int:
    frozen_ids = {id(p) for p in model.parameters() if not p.requires_grad} if frozen else None
    total = 0
    for p, state in opt.state.items():
        if frozen_ids is not None and id(p) not in frozen_ids:
            continue
        total += sum(v.numel() * v.element_size() for v in state.values() if hasattr(v, "numel"))
    return total


def rss() -> int:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * PAGE


def _hwm() -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


class PeakMeter:
    """Peak RSS between ``start`` and ``stop``: the kernel's high-water mark, reset at ``start``
    through ``/proc/self/clear_refs`` (Linux >= 4.0); else a thread sampling RSS every 1 ms."""

    def __init__(self):
        self.method = "clear_refs"
        self._peak, self._thread, self._running = 0, None, False

    def start(self) -> None:
        if self.method == "clear_refs":
            try:
                with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
                    handle.write("5")
                if _hwm() <= rss() * 1.01 + PAGE:
                    return
            except OSError:
                pass
            self.method = "sampling"
        self._peak, self._running = rss(), True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while self._running:
            self._peak = max(self._peak, rss())
            time.sleep(0.001)

    def stop(self) -> int:
        if self.method == "clear_refs":
            return _hwm()
        self._running = False
        self._thread.join()
        return max(self._peak, rss())


if __name__ == "__main__":
    main()
