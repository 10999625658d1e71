"""``codi2 bench toy``: the in-context benchmark on the shapes & tones world.

For every task, ``n`` fresh *seen* samples and (where a task's answers can be held out)
``n`` *held-out* samples; each answer is judged by the deterministic analysers. A sample
passes when every expected output passes. Two baselines are measured in the same run:

- **copy-input** — answer with the input itself: the last input item of the expected
  modality (the last frame of a clip for an image; in multi-round, the previous round's
  ground truth), the prompt text for text answers, nothing where there is no input;
- **no-examples** — the same model on the exemplar tasks with the in-context examples taken
  out (``"Apply the same editing to {c}."``, ``"Apply this same new sound to {c}."``).

Audio edits (``audio_edit`` and ``audio_exemplar``) are also scored by LSD against the
ground-truth target (:func:`codi2.toy.analysers.lsd`; a missing audio output counts as
silence). A generation error of :mod:`codi2.errors` fails that sample and is counted
(``errors``, ``first_error``). Goals, printed beside the measurements: >= 90 % exemplar accuracy on held-out
combinations; audio-edit LSD <= 0.5 x copy-input. :func:`run_bench` returns a JSON-able dict.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from codi2.core.types import Media
from codi2.errors import Codi2Error
from codi2.toy import world as w
from codi2.toy.analysers import judge, lsd
from codi2.toy.tasks import TASKS, Sample, make_samples

EXEMPLAR_TASKS = tuple(name for name, info in TASKS.items() if info.exemplar)
AUDIO_EDIT_TASKS = ("audio_edit", "audio_exemplar")
GOALS = {
    "exemplar_held_out_accuracy": {"goal": ">= 0.90", "threshold": 0.90},
    "audio_edit_lsd_ratio": {"goal": "<= 0.50", "threshold": 0.50},
}


def answer_model(model: Any, sample: Sample, options: dict[str, Any], seed: int) -> list[tuple[list[Media], str]]:
    """The model's answer to every user turn of ``sample``: ``[(media, text), ...]``."""
    if not sample.followups:
        answer = model.generate(sample.prompt, media=sample.media, seed=seed, **options)
        return [(answer.media, answer.text)]
    chat = model.chat()
    out = []
    for k, prompt in enumerate(sample.prompts):
        answer = chat.ask(prompt, sample.media if k == 0 else None, seed=seed, **options)
        out.append((answer.media, answer.text))
    return out


def answer_copy(sample: Sample) -> list[tuple[list[Media], str]]:
    """The copy-the-input baseline's answer to every user turn."""
    out = []
    previous: list[Media] = []
    start = 0
    for k, prompt in enumerate(sample.prompts):
        inputs = [m for name, m in sample.media.items() if "{" + name + "}" in prompt] if k == 0 else previous
        media: list[Media] = []
        for modality in ("image", "audio"):
            wanted = sum(1 for e in sample.expected[start : start + sample.rounds[k]] if _modality(e) == modality)
            pool = [m for m in inputs if m.modality == modality]
            pool += [Media("image", m.data[-1], name=m.name) for m in inputs if m.modality == "video" and modality == "image"]
            media += pool[-1:] * min(wanted, 1) if pool else []
        out.append((media, prompt))
        previous = [t for t in sample.targets[start : start + sample.rounds[k]] if isinstance(t, Media)]
        start += sample.rounds[k]
    return out


def _modality(expected: Any) -> str:
    return "text" if isinstance(expected, str) else "image" if isinstance(expected, w.ImageItem) else "audio"


def _score(sample: Sample, turns: list[tuple[list[Media], str]]) -> tuple[bool, int, int, float | None]:
    """(sample passed, outputs passed, outputs expected, LSD of the audio answer or None)."""
    checks, start = [], 0
    for k, (media, text) in enumerate(turns):
        checks += judge(sample.expected[start : start + sample.rounds[k]], media, text)
        start += sample.rounds[k]
    distance = None
    if sample.task in AUDIO_EDIT_TASKS:
        target = sample.targets[-1]
        audio = [m for m in turns[-1][0] if m.modality == "audio"]
        got = audio[0] if audio else Media("audio", np.zeros_like(target.data), sample_rate=w.SAMPLE_RATE)
        distance = lsd(got, target)
    passed = sum(c.passed for c in checks)
    return passed == len(sample.expected) and len(checks) == len(sample.expected), passed, len(sample.expected), distance


def answer_all(model: Any, samples: Sequence[Sample], options: dict[str, Any], seed: int, batch: int) -> list[Any]:
    """:func:`answer_model` for every sample (or the :class:`Codi2Error` it raised): one-turn
    samples go through ``model.generate_batch``, ``batch`` at a time, with the same answers as
    one by one (same seed); multi-round samples are chats, asked one by one."""
    results: list[Any] = [None] * len(samples)
    batched = hasattr(model, "generate_batch")  # else any object with generate() and chat()
    single = [i for i, s in enumerate(samples) if not s.followups and batched]
    for first in range(0, len(single), batch):
        chunk = single[first : first + batch]
        try:
            answers = model.generate_batch([samples[i].prompt for i in chunk], [samples[i].media for i in chunk],
                                           seeds=[seed] * len(chunk), max_batch=batch, **options)
            for i, answer in zip(chunk, answers):
                results[i] = [(answer.media, answer.text)]
        except Codi2Error:  # find which item fails: one by one
            for i in chunk:
                results[i] = _answer_or_error(model, samples[i], options, seed)
    for i, sample in enumerate(samples):
        if results[i] is None:
            results[i] = _answer_or_error(model, sample, options, seed)
    return results


def _answer_or_error(model: Any, sample: Sample, options: dict[str, Any], seed: int) -> Any:
    try:
        return answer_model(model, sample, options, seed)
    except Codi2Error as exc:
        return exc


def _group(model: Any, samples: list[Sample], options: dict[str, Any], seed: int, *, ablate: bool, batch: int = 8) -> dict[str, Any]:
    stats: dict[str, list] = {"model": [], "copy_input": [], "no_examples": [], "lsd": [], "lsd_copy": [], "outputs": [0, 0], "errors": []}
    answers = answer_all(model, samples, options, seed, batch)
    if ablate:
        ablated = [sample.without_examples() for sample in samples]
        no_examples = answer_all(model, [replace(s, prompt=p, media=m, followups=[]) for s, (p, m) in zip(samples, ablated)], options, seed, batch)
    for index, sample in enumerate(samples):
        turns = answers[index]
        if isinstance(turns, Codi2Error):  # a task this model cannot do fails, counted and reported
            stats["errors"].append(f"{type(turns).__name__}: {turns}")
            turns = [([], "")] * len(sample.prompts)
        ok, passed, total, distance = _score(sample, turns)
        stats["model"].append(ok)
        stats["outputs"][0] += passed
        stats["outputs"][1] += total
        copy_ok, _, _, copy_distance = _score(sample, answer_copy(sample))
        stats["copy_input"].append(copy_ok)
        if distance is not None:
            stats["lsd"].append(distance)
            stats["lsd_copy"].append(copy_distance)
        if ablate:
            turns = no_examples[index]
            if isinstance(turns, Codi2Error):
                stats["no_examples"].append(False)
                stats["errors"].append(f"{type(turns).__name__}: {turns}")
            else:
                stats["no_examples"].append(_score(sample, turns)[0])
    out: dict[str, Any] = {
        "n": len(samples),
        "accuracy": _mean(stats["model"]),
        "output_accuracy": stats["outputs"][0] / stats["outputs"][1] if stats["outputs"][1] else None,
        "copy_input": _mean(stats["copy_input"]),
        "errors": len(stats["errors"]),
    }
    if stats["errors"]:
        out["first_error"] = stats["errors"][0]
    if ablate:
        out["no_examples"] = _mean(stats["no_examples"])
    if stats["lsd"]:
        out["lsd"] = {"model": _mean(stats["lsd"]), "copy_input": _mean(stats["lsd_copy"]), "values": stats["lsd"], "copy_values": stats["lsd_copy"]}
    return out


def _mean(values: Sequence[float | bool]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def run_bench(
    model: Any,
    n: int = 20,
    seed: int = 0,
    *,
    options: dict[str, Any] | None = None,
    tasks: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
    batch: int = 8,
) -> dict[str, Any]:
    """Benchmark ``model``: ``n`` seen and ``n`` held-out samples per task. Returns a JSON-able dict:

    ``tasks[task]["seen" | "held_out"]`` with ``accuracy``, ``output_accuracy``, ``copy_input``
    (and ``no_examples`` for exemplar tasks, ``lsd`` for audio edits); ``exemplar_held_out``,
    ``audio_edit_lsd`` and ``goals`` (each goal with its measurement and whether it is met).
    ``options`` go to every generation call; ``progress`` gets one line per task group;
    one-turn prompts are answered ``batch`` at a time (``model.generate_batch``: the same
    answers as one by one).
    """
    options = dict(options or {})
    names = list(tasks or TASKS)
    for name in names:
        if name not in TASKS:
            raise ValueError(f"unknown toy task {name!r}; tasks: {', '.join(TASKS)}")
    start = time.perf_counter()
    report: dict[str, Any] = {"n": n, "seed": seed, "options": options, "tasks": {}}
    for name in names:
        info = TASKS[name]
        groups = {"seen": False, **({"held_out": True} if info.can_hold_out else {})}
        report["tasks"][name] = {"title": info.title}
        for group, held_out in groups.items():
            t0 = time.perf_counter()
            samples = make_samples(name, n, seed=seed, split="eval", held_out=held_out)
            result = _group(model, samples, options, seed, ablate=info.exemplar, batch=batch)
            report["tasks"][name][group] = result
            if progress:
                errors = f", {result['errors']} error(s): {result['first_error']}" if result["errors"] else ""
                progress(f"{name:16s} {group:8s} accuracy {_pct(result['accuracy'])} ({time.perf_counter() - t0:.1f} s){errors}")

    # headline numbers and goals
    held = [report["tasks"][t]["held_out"] for t in EXEMPLAR_TASKS if t in report["tasks"]]
    exemplar = {
        key: _weighted([(g[key], g["n"]) for g in held]) for key in ("accuracy", "no_examples", "copy_input")
    } if held else None
    lsd_model = [v for t in AUDIO_EDIT_TASKS if t in report["tasks"] for g in ("seen", "held_out") for v in report["tasks"][t].get(g, {}).get("lsd", {}).get("values", [])]
    lsd_copy = [v for t in AUDIO_EDIT_TASKS if t in report["tasks"] for g in ("seen", "held_out") for v in report["tasks"][t].get(g, {}).get("lsd", {}).get("copy_values", [])]
    audio = None
    if lsd_model:
        audio = {"model": _mean(lsd_model), "copy_input": _mean(lsd_copy), "n": len(lsd_model)}
        audio["ratio"] = audio["model"] / audio["copy_input"] if audio["copy_input"] else None
    report["exemplar_held_out"] = exemplar
    report["audio_edit_lsd"] = audio
    measured = {
        "exemplar_held_out_accuracy": exemplar["accuracy"] if exemplar else None,
        "audio_edit_lsd_ratio": audio["ratio"] if audio else None,
    }
    report["goals"] = {}
    for key, goal in GOALS.items():
        value = measured[key]
        met = None if value is None else (value >= goal["threshold"] if key.endswith("accuracy") else value <= goal["threshold"])
        report["goals"][key] = {"goal": goal["goal"], "measured": value, "met": met}
    report["seconds"] = round(time.perf_counter() - start, 2)
    return report


def _weighted(pairs: list[tuple[float | None, int]]) -> float | None:
    pairs = [(v, n) for v, n in pairs if v is not None and n]
    return sum(v * n for v, n in pairs) / sum(n for _, n in pairs) if pairs else None


def _pct(value: float | None) -> str:
    return "  -  " if value is None else f"{100 * value:5.1f}%"


def format_report(report: dict[str, Any]) -> str:
    """The report as a plain-text table with the goals beneath."""
    lines = [f"codi2 bench toy: n={report['n']} per group, seed={report['seed']} ({report['seconds']:.1f} s)", "",
             f"{'task':18s} {'seen':>7s} {'held-out':>9s} {'copy-input':>11s} {'no-examples':>12s} {'LSD (copy)':>14s}"]
    for name, t in report["tasks"].items():
        seen, held = t.get("seen", {}), t.get("held_out", {})
        copy = _weighted([(g.get("copy_input"), g.get("n", 0)) for g in (seen, held) if g])
        ablated = _weighted([(g.get("no_examples"), g.get("n", 0)) for g in (seen, held) if g and "no_examples" in g])
        lsds = [g["lsd"] for g in (seen, held) if g and "lsd" in g]
        lsd_text = f"{np.mean([x['model'] for x in lsds]):.2f} ({np.mean([x['copy_input'] for x in lsds]):.2f})" if lsds else ""
        lines.append(f"{name:18s} {_pct(seen.get('accuracy')):>7s} {_pct(held.get('accuracy')) if held else '   n/a':>9s} "
                     f"{_pct(copy):>11s} {_pct(ablated) if ablated is not None else '':>12s} {lsd_text:>14s}")
    lines += ["", "goals:"]
    ex, audio = report.get("exemplar_held_out"), report.get("audio_edit_lsd")
    for key, g in report["goals"].items():
        status = "n/a" if g["met"] is None else "MET" if g["met"] else "not met"
        if key == "exemplar_held_out_accuracy":
            extra = f" (no-examples {_pct(ex['no_examples'])}, copy-input {_pct(ex['copy_input'])})" if ex else ""
            value = _pct(g["measured"])
            label = "exemplar accuracy, held-out"
        else:
            extra = f" (model LSD {audio['model']:.3f}, copy-input LSD {audio['copy_input']:.3f})" if audio else ""
            value = "  -  " if g["measured"] is None else f"{g['measured']:.3f}"
            label = "audio-edit LSD / copy-input"
        lines.append(f"  {label:30s} goal {g['goal']:8s} measured {value}{extra}  {status}")
    return "\n".join(lines)


def print_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


__all__ = ["GOALS", "answer_copy", "answer_model", "format_report", "run_bench"]
