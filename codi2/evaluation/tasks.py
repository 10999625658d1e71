"""The evaluation tasks behind ``codi2 eval``: generate with a model, then score.

- :func:`dreambench` — subject-driven generation (Table 4: DINO, CLIP-I, CLIP-T);
- :func:`edit` — instruction editing scored by CLIPSIM against the target caption (Table 4);
- :func:`audio_edit` — audio adding / dropping / replacement (Table 5: LSD, KL, FD);
- :func:`score_folders` — score a folder of finished outputs against references, no model.

A *model* is anything with ``generate(messages, seed=..., **options) -> Answer`` (what
``codi2.load`` returns). Outputs are written under ``out`` so that a run can be re-scored with
``score`` and resumed (``resume=True`` reuses outputs already written). Each task returns an
:class:`EvalResult`; :mod:`codi2.evaluation.report` prints and saves it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from codi2.core.modality import resolve_modalities
from codi2.core.types import Media
from codi2.errors import ConfigError, MediaError
from codi2.evaluation.data import (
    Record,
    audio_edit_records,
    dreambench_subjects,
    edit_records,
    pair_folders,
)

__all__ = ["EvalResult", "audio_edit", "dreambench", "edit", "load_metrics", "score_folders"]

#: each task's metrics (the paper's table); `score` takes the defaults each metric's registration
#: declares for the folder's modality (:func:`codi2.evaluation.plugin.default_metrics`)
DEFAULT_METRICS = {
    "dreambench": ("dino", "clip-i", "clip-t"),
    "edit": ("clipsim",),
    "audio-edit": ("lsd", "kl", "fd"),
}


@dataclass
class EvalResult:
    """What one run of one task measured.

    ``scores[group][metric]`` is the table entry (``group`` is ``"all"`` or, for audio editing,
    the task: ``add``/``drop``/``replace``); ``items`` holds one row per scored item
    (``{"group", "item", "metric", "value"}``).
    """

    task: str
    run: str
    scores: dict[str, dict[str, float]]
    higher_is_better: dict[str, bool]
    counts: dict[str, int] = field(default_factory=dict)
    items: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    #: per metric: ``{"matches": toolkit, version and number it equals, "network": feature network}``
    sources: dict[str, dict[str, str | None]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> EvalResult:
        return cls(**{k: raw[k] for k in ("task", "run", "scores", "higher_is_better")},
                   counts=dict(raw.get("counts", {})), items=list(raw.get("items", [])),
                   config=dict(raw.get("config", {})), sources=dict(raw.get("sources", {})))

    def cite(self, name: str, metric: Any) -> None:
        """Record what ``metric`` (stored as ``name``) matches and which network it ran."""
        self.sources[name] = {"matches": getattr(metric, "matches", None) or "not stated by the metric",
                              "network": getattr(metric, "network", None)}


def load_metrics(registry: Any, names: Sequence[str], options: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Build the named metrics from ``registry`` with per-metric ``options``."""
    from codi2.evaluation.plugin import build_metric

    options = options or {}
    return {name: build_metric(registry, name, dict(options.get(name, {}))) for name in names}


def _score_group(metrics: Mapping[str, Any], group: str, names: list[str], generated: list[Media],
                 references: list[Media] | None, texts: list[str] | None,
                 result: EvalResult) -> None:
    scores = result.scores.setdefault(group, {})
    result.counts[group] = len(generated)
    for metric_name, metric in metrics.items():
        needs = getattr(metric, "needs", ())
        out = metric.score(generated, references if "references" in needs else None,
                           texts if "texts" in needs else None)
        scores[metric_name] = float(out.mean)
        result.higher_is_better[metric_name] = bool(metric.higher_is_better)
        result.cite(metric_name, metric)
        if out.per_item is not None:
            result.items += [{"group": group, "item": n, "metric": metric_name, "value": float(v)}
                             for n, v in zip(names, out.per_item)]


# --- generation -------------------------------------------------------------------------------


@dataclass
class _Job:
    """One item to generate: its conversation, seed, output file and a name for errors."""

    messages: list[dict[str, Any]]
    seed: int
    path: Path
    what: str


def _generate_all(model: Any, jobs: Sequence[_Job], modality: str, *, options: Mapping[str, Any], resume: bool,
                  batch: int, bar: Any) -> list[Media]:
    """Generate (or with ``resume``, reuse) every job's file; ``batch`` at a time through
    ``model.generate_batch`` when the model has it (the same answers as one by one)."""
    if batch < 1:
        raise ConfigError(f"batch must be >= 1, got {batch}")
    modalities = resolve_modalities(getattr(model, "modalities", None))
    todo = [job for job in jobs if not (resume and job.path.is_file())]
    bar.update(len(jobs) - len(todo))
    for first in range(0, len(todo), batch):
        chunk = todo[first : first + batch]
        if hasattr(model, "generate_batch"):
            answers = model.generate_batch([job.messages for job in chunk], seeds=[job.seed for job in chunk],
                                           max_batch=batch, **options)
        else:
            answers = [model.generate(job.messages, seed=job.seed, **options) for job in chunk]
        for job, answer in zip(chunk, answers):
            made = [m for m in answer.media if m.modality == modality]
            if not made:
                text = (answer.text or "").strip().replace("\n", " ")
                raise MediaError(f"the model answered without an {modality} (text: {text[:80]!r})", item=job.what)
            job.path.parent.mkdir(parents=True, exist_ok=True)
            modalities.save(made[0], job.path)
        bar.update(len(chunk))
    return [modalities.load(job.path, modality, name=job.path.name) for job in jobs]


def _progress(total: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="item", leave=False)


def dreambench(
    model: Any,
    data: str | Path,
    out: str | Path,
    *,
    registry: Any,
    metrics: Sequence[str] = DEFAULT_METRICS["dreambench"],
    metric_options: Mapping[str, Mapping[str, Any]] | None = None,
    shots: int = 3,
    samples: int = 4,
    max_subjects: int | None = None,
    max_prompts: int | None = None,
    template: str = "{prompt}",
    generate_options: Mapping[str, Any] | None = None,
    resume: bool = False,
    run: str = "model",
    batch: int = 8,
) -> EvalResult:
    """Subject-driven generation on DreamBench (``batch`` prompts generated together).

    For each subject the first ``shots`` real images are given in context, followed by
    ``template.format(prompt=..., cls=...)`` where ``prompt`` is a DreamBench prompt with the
    class noun ("a dog in the jungle"); ``samples`` images per prompt (seeds 0..samples-1).
    DINO and CLIP-I compare every generated image with every real image of its subject
    (all of them, as DreamBooth does); CLIP-T compares it with its prompt.
    """
    try:
        template.format(prompt="", cls="")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"prompt template {template!r}: only {{prompt}} and {{cls}} can be filled "
                          f"in (braces are written {{{{ }}}}): {exc!r}") from None
    subjects = dreambench_subjects(data)[:max_subjects]
    out = Path(out)
    loaded = load_metrics(registry, metrics, metric_options)
    gen_options = dict(generate_options or {})
    jobs: list[_Job] = []
    prompts: list[str] = []
    owners: list[Any] = []
    suffix = resolve_modalities(getattr(model, "modalities", None)).get("image").suffix  # the file format written
    for subject in subjects:
        context = [{"type": "image", "path": str(p)} for p in subject.images[:shots]]
        for p_index, template_prompt in enumerate(subject.prompts[:max_prompts]):
            prompt = template_prompt.format(subject.cls)
            text = template.format(prompt=prompt, cls=subject.cls)
            messages = [{"role": "user", "content": [*context, {"type": "text", "text": text}]}]
            for k in range(samples):
                path = out / "image" / subject.name / f"{p_index:02d}_{k}{suffix}"
                jobs.append(_Job(messages, k, path, f"{subject.name}: {prompt!r} #{k}"))
                prompts.append(prompt)
                owners.append(subject)
    with _progress(len(jobs), "dreambench") as bar:
        gen = _generate_all(model, jobs, "image", options=gen_options, resume=resume, batch=batch, bar=bar)
    return _score_dreambench(loaded, subjects, gen, prompts, owners, run, out,
                             {"shots": shots, "samples": samples, "template": template, "data": str(data),
                                  "subjects": len(subjects), "generate": gen_options})


def _score_dreambench(metrics: Mapping[str, Any], subjects: list[Any], gen: list[Media], prompts: list[str],
                      owners: list[Any], run: str, out: Path, config: dict[str, Any]) -> EvalResult:
    from codi2.core.media import load_media

    result = EvalResult("dreambench", run, {}, {}, config={**config, "out": str(out)})
    real = {s.name: [load_media(p, "image", name=f"{s.name}/{p.name}") for p in s.images] for s in subjects}
    names = [f"{o.name}/{g.name}" for o, g in zip(owners, gen)]
    scores = result.scores.setdefault("all", {})
    result.counts["all"] = len(gen)
    for metric_name, metric in metrics.items():
        result.higher_is_better[metric_name] = bool(metric.higher_is_better)
        result.cite(metric_name, metric)
        if "texts" in metric.needs:
            out_ = metric.score(gen, None, prompts)
            per_item = out_.per_item or []
            scores[metric_name] = float(out_.mean)
        else:  # every generated image against every real image of its subject
            pair_gen = [g for g, o in zip(gen, owners) for _ in real[o.name]]
            pair_ref = [r for o in owners for r in real[o.name]]
            out_ = metric.score(pair_gen, pair_ref, None)
            scores[metric_name] = float(out_.mean)  # mean over all (generated, real) pairs
            values, per_item, start = out_.per_item or [], [], 0
            for o in owners:
                n = len(real[o.name])
                per_item.append(float(np.mean(values[start:start + n])))
                start += n
        result.items += [{"group": o.name, "item": n, "metric": metric_name, "value": float(v)}
                         for o, n, v in zip(owners, names, per_item)]
    return result


def _run_records(task: str, model: Any, records: list[Record], modality: str, out: Path, *,
                 metrics: Mapping[str, Any], generate_options: Mapping[str, Any], resume: bool,
                 run: str, reference_of: Callable[[Record], Media] | None,
                 config: dict[str, Any], batch: int) -> EvalResult:
    result = EvalResult(task, run, {}, {}, config={**config, "out": str(out)})
    by_group: dict[str, list[tuple[Record, Media]]] = {}
    suffix = resolve_modalities(getattr(model, "modalities", None)).get(modality).suffix  # the file format written
    jobs = [_Job(record.messages, 0, out / modality / record.group / f"{record.id.replace('/', '_')}{suffix}",
                 f"{record.id} ({record.source})") for record in records]
    with _progress(len(records), task) as bar:
        made = _generate_all(model, jobs, modality, options=generate_options, resume=resume, batch=batch, bar=bar)
    for record, media in zip(records, made):
        by_group.setdefault(record.group, []).append((record, media))
    for group, rows in by_group.items():
        refs = [reference_of(r) for r, _ in rows] if reference_of else None
        texts = [r.text or "" for r, _ in rows]
        _score_group(metrics, group, [r.id for r, _ in rows], [m for _, m in rows], refs, texts, result)
    return result


def edit(model: Any, data: str | Path, out: str | Path, *, registry: Any,
         metrics: Sequence[str] = DEFAULT_METRICS["edit"],
         metric_options: Mapping[str, Mapping[str, Any]] | None = None,
         generate_options: Mapping[str, Any] | None = None, resume: bool = False,
         limit: int | None = None, run: str = "model", batch: int = 8) -> EvalResult:
    """Instruction editing: input image + instruction -> edited image, scored by CLIPSIM
    (cosine with the target caption)."""
    records = edit_records(data)[:limit]
    loaded = load_metrics(registry, metrics, metric_options)
    return _run_records("edit", model, records, "image", Path(out), metrics=loaded,
                        generate_options=dict(generate_options or {}), resume=resume, run=run,
                        reference_of=None, config={"data": str(data), "items": len(records)}, batch=batch)


def audio_edit(model: Any, data: str | Path, out: str | Path, *, registry: Any,
               metrics: Sequence[str] = DEFAULT_METRICS["audio-edit"],
               metric_options: Mapping[str, Mapping[str, Any]] | None = None,
               generate_options: Mapping[str, Any] | None = None, resume: bool = False,
               limit: int | None = None, run: str = "model", batch: int = 8) -> EvalResult:
    """Audio editing (adding / dropping / replacing a sound), each group scored by LSD, KL and
    FD against its reference targets."""
    from codi2.core.media import load_media

    records = audio_edit_records(data)[:limit]
    loaded = load_metrics(registry, metrics, metric_options)
    return _run_records("audio-edit", model, records, "audio", Path(out), metrics=loaded,
                        generate_options=dict(generate_options or {}), resume=resume, run=run,
                        reference_of=lambda r: load_media(r.target, "audio", name=f"{r.id} target"),
                        config={"data": str(data), "items": len(records)}, batch=batch)


def score_folders(generated: str | Path, references: str | Path, *, registry: Any,
                  metrics: Sequence[str] | None = None,
                  metric_options: Mapping[str, Mapping[str, Any]] | None = None,
                  texts: Mapping[str, str] | None = None, run: str = "outputs") -> EvalResult:
    """Score finished outputs against references paired by file name (no model).

    Without ``metrics``, the metrics registered as defaults for the folders' modality run
    (built-in: images DINO and CLIP-I, plus CLIP-T when ``texts`` are given; audio LSD, KL and
    FD). ``texts`` maps a file name (without suffix) to its text. Files are recognised by the
    modalities ``registry`` registers (the process default when it registers none).
    """
    from codi2.errors import DatasetError
    from codi2.evaluation.plugin import default_metrics

    modalities = resolve_modalities(registry.modalities())
    modality, pairs = pair_folders(generated, references, modalities)
    # read every file first: a bad file fails before any feature network loads
    read = modalities.get(modality).load
    gen = [read(g, name=g.name) for _, g, _ in pairs]
    ref = [read(r, name=r.name) for _, _, r in pairs]
    if metrics is None:
        metrics = default_metrics(registry, modality, texts=bool(texts))
        if not metrics:
            raise DatasetError(f"no metric is registered as a default for {modality}; "
                               f"name the metrics that score it")
    for name in metrics:  # what a registration declares is checked before any network loads
        declared = registry.get("metric", name).extra.get("modality")
        if declared is not None and declared != modality:
            raise DatasetError(f"metric {name!r} scores {declared}, the folders hold {modality}")
    loaded = load_metrics(registry, metrics, metric_options)
    names = [name for name, _, _ in pairs]
    for name, metric in loaded.items():
        if metric.modality != modality:
            raise DatasetError(f"metric {name!r} scores {metric.modality}, the folders hold {modality}")
    text_list = None
    if any("texts" in m.needs for m in loaded.values()):
        if texts is None:
            wanting = [n for n, m in loaded.items() if "texts" in m.needs]
            raise DatasetError(f"metric(s) {', '.join(wanting)} need texts: give a texts file")
        missing = [n for n in names if n not in texts]
        if missing:
            raise DatasetError(f"no text for {len(missing)} item(s): {', '.join(missing[:10])}")
        text_list = [texts[n] for n in names]
    result = EvalResult("score", run, {}, {}, config={"generated": str(generated), "references": str(references)})
    _score_group(loaded, "all", names, gen, ref, text_list, result)
    return result
