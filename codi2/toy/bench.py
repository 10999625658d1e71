"""``codi2 bench toy``: the in-context benchmark on the shapes & tones world.

For every task, ``n`` fresh *seen* samples and (where a task's answers can be held out) ``n``
*held-out* samples per seed (``seeds`` pooled); with ``inputs="foreign"`` or ``"both"`` the same
cases again with their input media drawn by :mod:`codi2.toy.foreign` (another renderer and tone
synthesiser, read back through the media loader). Each answer is judged by the deterministic
analysers; a sample passes when every expected output passes. Controls measured in the same run
(:mod:`codi2.toy.controls`):

- **copy-any** — the best answer made only of the sample's inputs (any input image, any frame
  of a clip, any input sound; in multi-round the previous round's ground truth); **copy-last**
  — the last such input (the old "copy the input" baseline, ``copy_input``);
- for the exemplar tasks: **no-examples** — the training prompt form with an unedited pair
  (``b`` = ``a``); **mismatched** — the pair shows a different edit (scored on the right answer;
  ``follows_pair``: scored on the answer the shown edit implies).

Every rate comes with a 95 % Wilson interval (``ci95``). Audio edits (``audio_edit`` and
``audio_exemplar``) are also scored by LSD against the ground-truth target
(:func:`codi2.toy.analysers.lsd`; a missing audio output counts as silence), with a 95 %
interval of the mean. A generation error of :mod:`codi2.errors` fails that sample and is
counted (``errors``, ``first_error``). Goals, printed beside the measurements: >= 90 %
exemplar accuracy on held-out combinations; audio-edit LSD <= 0.5 x copy-input; >= 95 % on
every foreign-input group. :func:`run_bench` returns a JSON-able dict.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from codi2.core.types import Media
from codi2.errors import Codi2Error
from codi2.toy import world as w
from codi2.toy.analysers import judge, lsd
from codi2.toy.controls import copy_candidates, mean_interval, mismatched, proportion, unedited_pair
from codi2.toy.foreign import foreign_inputs, foreign_media
from codi2.toy.tasks import TASKS, Sample, make_samples

EXEMPLAR_TASKS = tuple(name for name, info in TASKS.items() if info.exemplar)
AUDIO_EDIT_TASKS = ("audio_edit", "audio_exemplar")
INPUTS = ("world", "foreign", "both")
GOALS = {
    "exemplar_held_out_accuracy": {"goal": ">= 0.90", "threshold": 0.90, "label": "exemplar accuracy, held-out"},
    "audio_edit_lsd_ratio": {"goal": "<= 0.50", "threshold": 0.50, "label": "audio-edit LSD / copy-input"},
    "foreign_every_task_accuracy": {"goal": ">= 0.95", "threshold": 0.95, "label": "foreign inputs, weakest group"},
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


def score_turns(sample: Sample, turns: list[tuple[list[Media], str]]) -> tuple[bool, int, int, float | None]:
    """Score the turns of an answer: (sample passed, outputs passed, outputs expected, LSD of the audio answer or None)."""
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


def _render_for(inputs: str, seed: int, task: str, index: int) -> Callable[[w.Item, str], Media]:
    """How a control draws a new input of sample ``index``: the world's renderer or the foreign one."""
    if inputs == "foreign":
        return lambda item, name: foreign_media(item, f"{seed}/{task}/{index}/control-{name}", name=name)
    return lambda item, name: w.to_media(item, name=name, seed=index)


def _collect(model: Any, samples: list[Sample], options: dict[str, Any], seed: int, *, exemplar: bool,
             batch: int, inputs: str) -> dict[str, list]:
    """Raw per-sample results of one group at one seed (flags, LSDs, errors): pooled over seeds later."""
    keys = ("model", "copy_input", "copy_any", "no_examples", "mismatched", "follows_pair", "lsd", "lsd_copy", "errors")
    stats: dict[str, list] = {k: [] for k in keys} | {"outputs": [0, 0]}
    answers = answer_all(model, samples, options, seed, batch)
    if exemplar:
        pairs = [mismatched(s, random.Random(f"mismatch/{seed}/{i}"), _render_for(inputs, seed, s.task, i)) for i, s in enumerate(samples)]
        wrong = answer_all(model, [p[0] for p in pairs], options, seed, batch)
        unedited = answer_all(model, [unedited_pair(s) for s in samples], options, seed, batch)
    for index, sample in enumerate(samples):
        turns = _turns(answers[index], sample, stats)
        ok, passed, total, distance = score_turns(sample, turns)
        stats["model"].append(ok)
        stats["outputs"][0] += passed
        stats["outputs"][1] += total
        copy_ok, _, _, copy_distance = score_turns(sample, answer_copy(sample))
        stats["copy_input"].append(copy_ok)
        stats["copy_any"].append(any(score_turns(sample, c)[0] for c in copy_candidates(sample)))
        if distance is not None:
            stats["lsd"].append(distance)
            stats["lsd_copy"].append(copy_distance)
        if exemplar:
            turns = _turns(wrong[index], sample, stats)
            stats["mismatched"].append(score_turns(pairs[index][0], turns)[0])
            stats["follows_pair"].append(score_turns(pairs[index][1], turns)[0])
            stats["no_examples"].append(score_turns(sample, _turns(unedited[index], sample, stats))[0])
    return stats


def _turns(answer: Any, sample: Sample, stats: dict[str, list]) -> list[tuple[list[Media], str]]:
    """The answer's turns; a :class:`Codi2Error` (a task this model cannot do) fails, counted."""
    if isinstance(answer, Codi2Error):
        stats["errors"].append(f"{type(answer).__name__}: {answer}")
        return [([], "")] * len(sample.prompts)
    return answer


def _summary(stats: dict[str, list]) -> dict[str, Any]:
    """A group's figures from its pooled raw results: each rate with a 95 % Wilson interval."""
    out: dict[str, Any] = {"n": len(stats["model"]), "ci95": {}}
    for key in ("model", "copy_input", "copy_any", "no_examples", "mismatched", "follows_pair"):
        rate = proportion(stats[key])
        if rate is not None:
            out["accuracy" if key == "model" else key] = rate["value"]
            out["ci95"]["accuracy" if key == "model" else key] = rate["ci95"]
    out["output_accuracy"] = stats["outputs"][0] / stats["outputs"][1] if stats["outputs"][1] else None
    out["errors"] = len(stats["errors"])
    if stats["errors"]:
        out["first_error"] = stats["errors"][0]
    if stats["lsd"]:
        out["lsd"] = {"model": _mean(stats["lsd"]), "copy_input": _mean(stats["lsd_copy"]),
                      "ci95": _rounded(mean_interval(stats["lsd"])), "copy_ci95": _rounded(mean_interval(stats["lsd_copy"])),
                      "values": stats["lsd"], "copy_values": stats["lsd_copy"]}
    return out


def _rounded(interval: tuple[float, float] | None) -> list[float] | None:
    return None if interval is None else [round(interval[0], 4), round(interval[1], 4)]


def _mean(values: Sequence[float | bool]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _pool(parts: list[dict[str, list]]) -> dict[str, list]:
    pooled: dict[str, list] = {k: [] for k in parts[0]} | {"outputs": [0, 0]}
    for part in parts:
        for key, values in part.items():
            if key == "outputs":
                pooled["outputs"] = [pooled["outputs"][0] + values[0], pooled["outputs"][1] + values[1]]
            else:
                pooled[key] += values
    return pooled


def _has_inputs(task: str) -> bool:
    return bool(make_samples(task, 1, seed=0, split="eval")[0].inputs)


def run_bench(
    model: Any,
    n: int = 20,
    seed: int = 0,
    *,
    seeds: Sequence[int] | None = None,
    inputs: str = "world",
    options: dict[str, Any] | None = None,
    tasks: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
    batch: int = 8,
) -> dict[str, Any]:
    """Benchmark ``model``: ``n`` seen and ``n`` held-out samples per task and seed. Returns a JSON-able dict:

    ``tasks[task][group]`` for the groups ``seen`` and ``held_out`` (inputs drawn by the world's
    renderer) and/or ``foreign_seen`` and ``foreign_held_out`` (the same cases, inputs drawn by
    :mod:`codi2.toy.foreign`; tasks without input media have no foreign group), chosen by
    ``inputs`` ("world", "foreign" or "both"). Each group has ``accuracy``, ``output_accuracy``,
    the controls ``copy_input`` (last input), ``copy_any`` (best input per case), for exemplar
    tasks ``no_examples`` (training form, unedited pair), ``mismatched`` and ``follows_pair``,
    ``lsd`` for audio edits, and ``ci95`` (95 % Wilson intervals of every rate). ``seeds``
    (default ``[seed]``) are pooled: ``n`` is per seed. ``exemplar_held_out``,
    ``audio_edit_lsd`` and ``goals`` are the headlines. ``options`` go to every generation call;
    ``progress`` gets one line per group; one-turn prompts are answered ``batch`` at a time.
    """
    options = dict(options or {})
    seeds = list(seeds) if seeds else [seed]
    names = list(tasks or TASKS)
    for name in names:
        if name not in TASKS:
            raise ValueError(f"unknown toy task {name!r}; tasks: {', '.join(TASKS)}")
    if inputs not in INPUTS:
        raise ValueError(f"inputs must be one of {', '.join(INPUTS)}, got {inputs!r}")
    kinds = {"world": ["world"], "foreign": ["foreign"], "both": ["world", "foreign"]}[inputs]
    start = time.perf_counter()
    report: dict[str, Any] = {"n": n, "seed": seeds[0], "seeds": seeds, "inputs": inputs, "options": options, "tasks": {}}
    raw: dict[str, dict[str, dict[str, list]]] = {}
    for name in names:
        info = TASKS[name]
        report["tasks"][name] = {"title": info.title}
        raw[name] = {}
        for kind in kinds:
            if kind == "foreign" and not _has_inputs(name):
                continue
            for held_out in (False, True) if info.can_hold_out else (False,):
                group = ("foreign_" if kind == "foreign" else "") + ("held_out" if held_out else "seen")
                t0 = time.perf_counter()
                parts = []
                for s in seeds:
                    samples = make_samples(name, n, seed=s, split="eval", held_out=held_out)
                    if kind == "foreign":
                        samples = [foreign_inputs(sample, s, i) for i, sample in enumerate(samples)]
                    parts.append(_collect(model, samples, options, s, exemplar=info.exemplar, batch=batch, inputs=kind))
                raw[name][group] = _pool(parts)
                result = report["tasks"][name][group] = _summary(raw[name][group])
                if progress:
                    errors = f", {result['errors']} error(s): {result['first_error']}" if result["errors"] else ""
                    progress(f"{name:23s} {group:16s} accuracy {_with_ci(result, 'accuracy')} ({time.perf_counter() - t0:.1f} s){errors}")

    # headline numbers and goals
    report["exemplar_held_out"] = _headline([raw[t]["held_out"] for t in EXEMPLAR_TASKS if "held_out" in raw.get(t, {})])
    report["exemplar_held_out_foreign"] = _headline([raw[t]["foreign_held_out"] for t in EXEMPLAR_TASKS if "foreign_held_out" in raw.get(t, {})])
    lsd_model = [v for t in AUDIO_EDIT_TASKS for g in raw.get(t, {}).values() for v in g["lsd"]]
    lsd_copy = [v for t in AUDIO_EDIT_TASKS for g in raw.get(t, {}).values() for v in g["lsd_copy"]]
    audio = None
    if lsd_model:
        audio = {"model": _mean(lsd_model), "copy_input": _mean(lsd_copy), "n": len(lsd_model)}
        audio["ratio"] = audio["model"] / audio["copy_input"] if audio["copy_input"] else None
    report["audio_edit_lsd"] = audio
    foreign = {f"{t}/{g}": report["tasks"][t][g]["accuracy"] for t in raw for g in raw[t] if g.startswith("foreign")}
    weakest = min(foreign, key=foreign.get) if foreign else None
    report["foreign_weakest"] = {"group": weakest, "accuracy": foreign[weakest]} if weakest else None
    measured = {
        "exemplar_held_out_accuracy": report["exemplar_held_out"]["accuracy"] if report["exemplar_held_out"] else None,
        "audio_edit_lsd_ratio": audio["ratio"] if audio else None,
        "foreign_every_task_accuracy": foreign[weakest] if weakest else None,
    }
    report["goals"] = {}
    for key, goal in GOALS.items():
        value = measured[key]
        met = None if value is None else (value >= goal["threshold"] if key.endswith("accuracy") else value <= goal["threshold"])
        report["goals"][key] = {"goal": goal["goal"], "measured": value, "met": met}
    report["seconds"] = round(time.perf_counter() - start, 2)
    return report


def _headline(groups: list[dict[str, list]]) -> dict[str, Any] | None:
    """Pooled rates (and intervals) over the held-out groups of the exemplar tasks."""
    if not groups:
        return None
    pooled = _pool(groups)
    out: dict[str, Any] = {"n": len(pooled["model"]), "ci95": {}}
    for key in ("model", "no_examples", "mismatched", "copy_input", "copy_any"):
        rate = proportion(pooled[key])
        out["accuracy" if key == "model" else key] = rate["value"]
        out["ci95"]["accuracy" if key == "model" else key] = rate["ci95"]
    return out


def _pct(value: float | None) -> str:
    return "  -  " if value is None else f"{100 * value:5.1f}%"


def _with_ci(group: dict[str, Any], key: str) -> str:
    """``0.85 [0.64-0.95]``: a rate and its 95 % interval."""
    value = group.get(key)
    if value is None:
        return "-"
    low, high = group["ci95"][key]
    return f"{value:.2f} [{low:.2f}-{high:.2f}]"


def format_report(report: dict[str, Any]) -> str:
    """The report as a plain-text table (every rate with its 95 % interval), goals beneath."""
    seeds = ",".join(str(s) for s in report.get("seeds", [report["seed"]]))
    title = (f"codi2 bench toy: n={report['n']} per group and seed, seeds {seeds}, inputs {report.get('inputs', 'world')} "
             f"({report['seconds']:.1f} s); [95 % interval]")
    header = (f"{'task':23s} {'group':16s} {'model':>17s} {'copy-any':>17s} {'copy-last':>10s} {'no-examples':>17s} "
              f"{'mismatched':>17s} {'follows pair':>13s} {'LSD (copy)':>12s}")
    lines = [title, "", header]
    for name, t in report["tasks"].items():
        for group, g in t.items():
            if group == "title":
                continue
            lsd_text = f"{g['lsd']['model']:.2f} ({g['lsd']['copy_input']:.2f})" if "lsd" in g else ""
            follows = f"{g['follows_pair']:.2f}" if "follows_pair" in g else "-"
            lines.append(f"{name:23s} {group:16s} {_with_ci(g, 'accuracy'):>17s} {_with_ci(g, 'copy_any'):>17s} "
                         f"{g['copy_input']:>10.2f} {_with_ci(g, 'no_examples'):>17s} {_with_ci(g, 'mismatched'):>17s} "
                         f"{follows:>13s} {lsd_text:>12s}")
    lines += ["", "goals:"]
    audio = report.get("audio_edit_lsd")
    for key, g in report["goals"].items():
        status = "n/a" if g["met"] is None else "MET" if g["met"] else "not met"
        value = "  -  " if g["measured"] is None else f"{g['measured']:.3f}"
        extra = ""
        if key == "exemplar_held_out_accuracy" and report.get("exemplar_held_out"):
            ex = report["exemplar_held_out"]
            value = _with_ci(ex, "accuracy")
            extra = f" (no-examples {_with_ci(ex, 'no_examples')}, mismatched {_with_ci(ex, 'mismatched')}, copy-any {_with_ci(ex, 'copy_any')})"
        elif key == "audio_edit_lsd_ratio" and audio:
            extra = f" (model LSD {audio['model']:.3f}, copy-input LSD {audio['copy_input']:.3f})"
        elif key == "foreign_every_task_accuracy" and report.get("foreign_weakest"):
            extra = f" (weakest: {report['foreign_weakest']['group']})"
        lines.append(f"  {GOALS[key]['label']:32s} goal {g['goal']:8s} measured {value}{extra}  {status}")
    return "\n".join(lines)


def print_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


__all__ = ["GOALS", "answer_copy", "answer_model", "format_report", "run_bench", "score_turns"]
