"""``codi2 train --preset toy``: the toy CoDi-2, reproduced from nothing in sequential phases.

1. **world** — every image item (36) and audio item (54; rain drawn with several seeds).
2. **encoder** — a tiny ImageBind (``toy-encoder``) trained contrastively: each item's embedding,
   and its caption's text embedding, is contrasted (InfoNCE) against one *prototype* per world
   item, the normalised sum of fixed random attribute vectors (colour, shape, size, overlay;
   the cross-modal rule shares vectors: colour = pitch, shape = waveform). So the space is aligned
   across image/audio/text and attributes compose — which is what lets the LLM reach held-out
   combinations. A squared pull toward the prototype tightens the geometry. Augmented views
   (:mod:`codi2.toy.augment`: other canvas sizes, anti-aliased edges, shifts, scales, colours,
   JPEG/WebP, alpha; other sample rates, stereo, gains, phases, fades, FLAC/OGG/MP3) are pulled
   to the same prototypes, so inputs other software made read as the same items; the encoder
   normalises audio loudness (``audio_loudness="rms"``), so a quiet recording means the same.
3. **image decoder** and 4. **audio decoder** — diffusion on the cached encoder embeddings of
   every world item (the decoders play pretrained backbones and may see held-out items),
   conditioning noise-augmented, EMA weights kept.
5. **MLLM** — the core :class:`~codi2.core.model.CoDi2Model` (toy encoder -> projector -> tiny
   Llama -> slots -> projector) trained by codi2's trainer (:func:`codi2.training.train`) on the
   conversations of :mod:`codi2.toy.tasks` (``split="train"``: no held-out answer), written as a
   JSONL dataset (``mllm_views > 0`` would draw the input media from a pool of augmented views;
   off by default: measured, it cost the held-out combinations half their accuracy), with the CoDi-2 objective's text and feature terms. The diffusion term is off
   here: back-propagating through a UNet per sample costs more than this budget; the feature
   term regresses exactly the decoders' conditioning.
6. **evaluation** — decoder accuracy on every world item, and the model on a few prompts of
   every task, seen and held-out, judged by :mod:`codi2.toy.analysers`.

Every phase has a time budget *and* a step cap (whichever comes first); each writes its result
into the output directory, and a phase whose file exists is skipped on a rerun (``resume``)
unless an earlier phase was retrained; an interrupted MLLM phase resumes from its checkpoint.
The output directory is a codi2 model directory (``codi2.load(DIR)``), plus ``report.json``.

This module runs the phases (:func:`run_recipe`), evaluates and ships; the phases live beside it:
the settings, budgets and world items every phase shares in :mod:`codi2.toy.recipe_settings`,
phase 2 in :mod:`codi2.toy.recipe_encoder`, phases 3-4 in :mod:`codi2.toy.recipe_decoders`,
phase 5 in :mod:`codi2.toy.recipe_mllm`. Every name is importable from here as well.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from codi2.plugins.toy import AUDIO_DECODER_FILE, ENCODER_FILE, IMAGE_DECODER_FILE, LLM_DIR
from codi2.toy.recipe_decoders import decoder_accuracy, decoder_options, train_decoder
from codi2.toy.recipe_encoder import (
    ENCODER_LEARN_PROTOTYPES,
    ENCODER_PULL,
    ENCODER_TEMPERATURE,
    encoder_metrics,
    train_encoder,
)
from codi2.toy.recipe_mllm import (
    INIT_DIR,
    MLLM_RUN,
    llm_corpus,
    model_config,
    train_config,
    train_mllm,
    write_dataset,
)
from codi2.toy.recipe_settings import (
    PhaseBudget,
    PhaseClock,
    RecipeSettings,
    encoder_options,
    world_items,
)

__all__ = [
    "ENCODER_LEARN_PROTOTYPES", "ENCODER_PULL", "ENCODER_TEMPERATURE", "INIT_DIR", "MLLM_RUN", "PHASES",
    "PhaseBudget", "PhaseClock", "RecipeSettings", "decoder_accuracy", "decoder_options", "encoder_metrics",
    "encoder_options", "evaluate", "llm_corpus", "model_config", "run_recipe", "ship", "toy_registry",
    "train_config", "train_decoder", "train_encoder", "train_mllm", "world_items", "write_dataset",
]

PHASES = ("encoder", "image_decoder", "audio_decoder", "mllm")


# --- 6. evaluation -------------------------------------------------------------------------------


def evaluate(model: Any, n: int, seed: int, steps: int) -> dict[str, Any]:
    """Accuracy per task (every expected output right), seen vs held-out; exemplar tasks also
    without their in-context examples."""
    from codi2.toy import analysers, tasks

    def run(sample: Any, prompt: str | None = None, media: dict | None = None) -> bool:
        if sample.task == "multi_round":
            chat = model.chat()
            ok, used = True, 0
            for turn, count in zip(sample.prompts, sample.rounds):
                answer = chat.ask(turn, seed=seed, steps=steps)
                want = sample.expected[used : used + count]
                used += count
                ok = ok and all(c.passed for c in analysers.judge(want, answer.media, answer.text))
            return ok
        answer = model.generate(prompt or sample.prompt, media=sample.media if media is None else media, seed=seed, steps=steps)
        return all(c.passed for c in analysers.judge(sample.expected, answer.media, answer.text))

    report: dict[str, Any] = {}
    for task, info in tasks.TASKS.items():
        row: dict[str, Any] = {}
        splits = [("seen", False)] + ([("held_out", True)] if info.can_hold_out else [])
        for label, held in splits:
            samples = tasks.make_samples(task, n, seed=seed + 7, split="eval", held_out=held)
            row[label] = round(sum(run(s) for s in samples) / n, 3)
            if info.exemplar:
                row[f"{label}_no_examples"] = round(sum(run(s, *s.without_examples()) for s in samples) / n, 3)
        report[task] = row
    return report


# --- the recipe ---------------------------------------------------------------------------------


def toy_registry() -> Any:
    """The default registry, plus the toy plugin if the built-ins do not list it yet."""
    from codi2.registry import Registry

    registry = Registry.create()
    if "toy-encoder" not in registry.names("encoder"):
        import codi2.plugins.toy as toy_plugin

        registry.register_plugin(toy_plugin, "codi2.plugins.toy")
    return registry


def run_recipe(out: str | Path, settings: RecipeSettings | None = None, *, resume: bool = True,
               log: Callable[[str], None] = print, registry: Any = None) -> dict[str, Any]:
    """Run every phase into ``out`` (a codi2 model directory afterwards) and return the report."""
    import torch

    settings = settings or RecipeSettings.full()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(settings.threads)
    registry = registry or toy_registry()
    report_path = out / "report.json"
    report: dict[str, Any] = json.loads(report_path.read_text()) if resume and report_path.is_file() else {}
    report["settings"] = asdict(settings)
    start = time.monotonic()
    done = {
        "encoder": out / ENCODER_FILE, "image_decoder": out / IMAGE_DECODER_FILE,
        "audio_decoder": out / AUDIO_DECODER_FILE, "mllm": out / "model.safetensors",
    }
    stale = not resume  # a retrained phase makes every later one stale
    for phase in PHASES:
        if not stale and done[phase].is_file() and phase in report:
            log(f"{phase}: found {done[phase].name}, skipped")
            continue
        log(f"--- phase {phase}")
        if phase == "encoder":
            report[phase] = train_encoder(settings, out, log)
        elif phase in ("image_decoder", "audio_decoder"):
            report[phase] = train_decoder(phase.split("_")[0], settings, out, log)
        else:
            report[phase] = train_mllm(settings, out, log, registry, fresh=stale)
        stale = True
        report_path.write_text(json.dumps(report, indent=2) + "\n")
    report.pop("evaluation", None)
    if settings.eval_per_task < 1:
        report["total_seconds"] = round(time.monotonic() - start, 1)
        report_path.write_text(json.dumps(report, indent=2) + "\n")
        return report
    log("--- phase evaluation")
    from codi2.assembly import assemble

    t0 = time.monotonic()
    model = assemble(out, registry=registry)
    report["evaluation"] = evaluate(model, settings.eval_per_task, settings.seed, settings.eval_steps)
    report["evaluation_seconds"] = round(time.monotonic() - t0, 1)
    report["total_seconds"] = round(time.monotonic() - start, 1)
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    log(json.dumps(report["evaluation"]))
    return report


def ship(out: str | Path, target: str | Path | None = None) -> Path:
    """Copy a recipe's model directory into the package (``codi2/assets/toy``), with the weight
    paths of its config replaced by the packaged defaults."""
    from codi2.plugins.toy import asset_dir

    out, target = Path(out), Path(target) if target else asset_dir()
    target.mkdir(parents=True, exist_ok=True)
    for name in (ENCODER_FILE, IMAGE_DECODER_FILE, AUDIO_DECODER_FILE, "model.safetensors", "report.json"):
        shutil.copy2(out / name, target / name)
    shutil.copytree(out / LLM_DIR, target / LLM_DIR, dirs_exist_ok=True)
    config = json.loads((out / "config.json").read_text())
    config["encoders"][0]["options"].pop("weights", None)
    config["llm"]["options"].pop("model", None)
    for dec in config["decoders"].values():
        dec["options"].pop("weights", None)
        dec["options"]["encoder"].pop("weights", None)
    (target / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for path in target.rglob("*"):  # temp-file writes leave 0600; a package's data is world-readable
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target
