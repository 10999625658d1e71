"""What every benchmark script shares: arguments, side-by-side timing, the report.

Not a package: each script is run as ``python benchmarks/NAME.py`` (its folder is then first on
``sys.path``) and imports this module as ``_common``. The tests import the scripts the same way.

Rules every script follows (results and method: ``benchmarks/RESULTS.md``):

- every figure is a ratio of two sides measured in the same process, in the same run;
- the two sides are interleaved (A B, B A, A B, ...) so that drift on a shared machine (other
  jobs, thermal state, allocator growth) falls on both alike, and the order within a round
  alternates so that neither side always runs "second, with warm caches";
- the first ``--warmup`` rounds are dropped; a figure divides the medians over ``--repeats``
  rounds (other estimators of the same ratio are kept in the details).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Benchmarks never reach a model hub (set before transformers/diffusers are imported).
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def base_parser(description: str, *, repeats: int, warmup: int = 2, threads: int | None = 1) -> argparse.ArgumentParser:
    """The options every benchmark takes: ``--json``, ``--repeats``, ``--warmup``, ``--threads``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--repeats", type=int, default=repeats, help=f"measured rounds per side (default {repeats})")
    parser.add_argument("--warmup", type=int, default=warmup, help=f"rounds dropped before measuring (default {warmup})")
    parser.add_argument(
        "--threads", type=int, default=threads,
        help="torch CPU threads (default %(default)s: steadier timings on a shared machine; 0 = torch's default)",
    )
    parser.add_argument(
        "--clock", choices=("auto", "cpu", "wall"), default="auto",
        help="what the figures divide: process CPU time or wall time (auto: cpu with one thread on a CPU)",
    )
    return parser


def add_aa_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--aa", action="store_true",
        help="A/A run: time the codi2 side against itself, to see this machine's noise floor for the ratio",
    )


def setup(args: argparse.Namespace) -> None:
    """Apply ``--threads`` and silence library progress bars and warnings about random weights."""
    import torch

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    if getattr(args, "clock", "auto") == "auto":
        args.clock = default_clock(getattr(args, "threads", None))
    quiet()


def quiet() -> None:
    import logging
    import warnings

    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        import diffusers

        diffusers.logging.set_verbosity_error()
        diffusers.logging.disable_progress_bar()
    except ImportError:
        pass
    logging.getLogger("peft").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*requires_grad=True to a scalar.*")


# --- timing ------------------------------------------------------------------------------------


def interleave(
    sides: Mapping[str, Callable[[], Any]],
    *,
    repeats: int,
    warmup: int,
    sync: Callable[[], None] | None = None,
) -> Timings:
    """Time each side ``warmup + repeats`` times, interleaved, and return the kept times.

    Round ``i`` runs the sides in the given order when ``i`` is even and reversed when odd
    (A B, B A, A B, ...). Both the wall clock and this process's CPU time are recorded.
    ``sync`` (e.g. ``torch.cuda.synchronize``) runs before each clock read.
    """
    names = list(sides)
    out = Timings({n: [] for n in names}, {n: [] for n in names})
    for i in range(warmup + repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            if sync:
                sync()
            wall, cpu = time.perf_counter(), time.process_time()
            sides[name]()
            if sync:
                sync()
            if i >= warmup:
                out.wall[name].append(time.perf_counter() - wall)
                out.cpu[name].append(time.process_time() - cpu)
    return out


@dataclass
class Timings:
    """Seconds per side and round: ``wall`` (elapsed) and ``cpu`` (this process's CPU time).

    On a CPU shared with other jobs the wall clock also counts the time the scheduler gave
    to others; with one torch thread the process's CPU time counts only its own work, so it
    is the steadier measure of *work done* (the figure on CPU; the wall ratio is reported too).
    On a GPU only the wall clock (after synchronising) means anything.
    """

    wall: dict[str, list[float]]
    cpu: dict[str, list[float]]

    def clock(self, name: str) -> dict[str, list[float]]:
        return self.cpu if name == "cpu" else self.wall

    def as_dict(self) -> dict[str, Any]:
        return {"wall_s": self.wall, "cpu_s": self.cpu}


def default_clock(threads: int | None) -> str:
    """``cpu`` when torch runs on one thread of a CPU, else ``wall``."""
    import torch

    return "cpu" if threads == 1 and not torch.cuda.is_available() else "wall"


def own_time(
    sides: Mapping[str, Callable[[], Any]],
    components: Sequence[tuple[Any, str]],
    *,
    repeats: int,
    warmup: int = 1,
    labels: Sequence[str] | None = None,
) -> dict[str, dict[str, float]]:
    """Per side, the median CPU time spent OUTSIDE the given component calls (``own_ms``), the
    total (``total_ms``) and, per component, the time inside it (``<label>_ms``; ``labels``
    name the components, default ``owner-class.method``).

    Each ``(owner, name)`` is wrapped in place for the measurement (an instance's method, or a
    class's ``__call__``) and restored afterwards. Both sides call the same components doing the
    same work, so the difference of their own times is the wrapper's overhead, measured without
    the much larger noise of the components' own run times (a diagnostic next to the ratios);
    the components' times say which part of the work gains how much on one side.
    """
    labels = list(labels or [f"{type(owner).__name__}.{name}" for owner, name in components])
    spent = dict.fromkeys(labels, 0.0)

    def wrap(fn: Callable[..., Any], label: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] += time.process_time() - start

        return timed

    saved = []
    for (owner, name), label in zip(components, labels):
        own_attr = name in vars(owner)
        saved.append((owner, name, own_attr, vars(owner).get(name)))
        setattr(owner, name, wrap(getattr(owner, name), label))
    out: dict[str, dict[str, list[float]]] = {n: {key: [] for key in ("own", "total", *labels)} for n in sides}
    try:
        names = list(sides)
        for i in range(warmup + repeats):
            for name in names if i % 2 == 0 else names[::-1]:
                spent.update(dict.fromkeys(labels, 0.0))
                start = time.process_time()
                sides[name]()
                total = time.process_time() - start
                if i >= warmup:
                    out[name]["own"].append(total - sum(spent.values()))
                    out[name]["total"].append(total)
                    for label in labels:
                        out[name][label].append(spent[label])
    finally:
        for owner, name, own_attr, value in reversed(saved):
            if own_attr:
                setattr(owner, name, value)
            else:
                delattr(owner, name)
    return {n: {f"{key}_ms": 1000 * median(v) for key, v in values.items()} for n, values in out.items()}


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float]) -> float:
    """Relative spread of a sample: (max - min) / median (0 for fewer than two values)."""
    if len(values) < 2:
        return 0.0
    mid = statistics.median(values)
    return float((max(values) - min(values)) / mid) if mid else 0.0


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median of the per-round ratios: each round's two sides ran back to back, so their
    ratio is less exposed to slow drift than the ratio of the two medians."""
    return median([a / b for a, b in zip(numerator, denominator)])


# --- the machine --------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# --- the report ---------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    value: float
    unit: str = ""
    goal: str | None = None  # e.g. "<= 1.05"
    note: str = ""

    @property
    def passed(self) -> bool | None:
        if not self.goal:
            return None
        op, bound = self.goal.split()
        return self.value <= float(bound) if op == "<=" else self.value >= float(bound)


@dataclass
class Report:
    """A benchmark's result: a table of rows (the figures), details and the machine."""

    benchmark: str
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, value: float, unit: str = "", goal: str | None = None, note: str = "") -> None:
        self.rows.append(Row(name, float(value), unit, goal, note))

    def compare(
        self, name: str, timings: Timings, clock: str, sides: tuple[str, str], *, goal: str | None = None,
        note: str = "", other_clock: bool = True,
    ) -> float:
        """Add ``name`` = median(``sides[0]``) / median(``sides[1]``) by ``clock``, the same by the
        other clock (for information) and each side's median time; return the ratio. The
        details also get two other estimators of the same ratio: the median of the per-round
        ratios and the ratio of the fastest rounds (the least disturbed by other jobs)."""
        a, b = sides
        times = timings.clock(clock)
        ratio = median(times[a]) / median(times[b])
        self.add(name, ratio, "x", goal, f"{note} ({clock} time)" if note else f"{clock} time")
        other = "wall" if clock == "cpu" else "cpu"
        if other_clock:
            self.add(f"{name}_by_{other}", median(timings.clock(other)[a]) / median(timings.clock(other)[b]), "x")
        for side in sides:
            self.add(f"{side}_ms", 1000 * median(times[side]), "ms")
        self.details.setdefault("estimators", {})[name] = {
            "ratio_of_medians": ratio, "median_of_paired_ratios": paired_ratio(times[a], times[b]),
            "ratio_of_minimums": min(times[a]) / min(times[b]),
            "spread": {s: spread(times[s]) for s in sides},
        }
        return ratio

    def as_dict(self) -> dict[str, Any]:
        figures = {r.name: {"value": r.value, "unit": r.unit, "goal": r.goal, "passed": r.passed} for r in self.rows}
        return {"benchmark": self.benchmark, "figures": figures, "details": self.details,
                "notes": self.notes, "machine": machine()}

    def table(self) -> str:
        head = ("figure", "value", "unit", "goal", "ok")
        body = [(r.name, _fmt(r.value), r.unit, r.goal or "", {True: "yes", False: "NO", None: ""}[r.passed]) for r in self.rows]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
        line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
        out = [f"== {self.benchmark} ==", line(head), line(["-" * w for w in widths]), *map(line, body)]
        for r in self.rows:
            if r.note:
                out.append(f"  {r.name}: {r.note}")
        out.extend(f"note: {n}" for n in self.notes)
        return "\n".join(out)

    def emit(self, as_json: bool) -> dict[str, Any]:
        """Print the table (and with ``as_json`` the JSON object as the last line)."""
        print(self.table(), flush=True)
        data = self.as_dict()
        if as_json:
            print(json.dumps(data, default=float), flush=True)
        return data


def _fmt(value: float) -> str:
    if value == 0 or 0.001 <= abs(value) < 1e6:
        return f"{value:.4g}"
    return f"{value:.3e}"
