"""Phase 5 of the toy recipe (:mod:`codi2.toy.recipe`): the MLLM, the core
:class:`~codi2.core.model.CoDi2Model` trained by codi2's trainer on the task conversations
written as a JSONL dataset, starting from an untrained model assembled from the trained
encoder and decoders."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from codi2.plugins.toy import AUDIO_DECODER_FILE, ENCODER_FILE, IMAGE_DECODER_FILE, LLM_DIR
from codi2.toy.recipe_decoders import decoder_options
from codi2.toy.recipe_settings import RecipeSettings, encoder_options

#: inside the output directory: the untrained model the MLLM run starts from, and the run itself
INIT_DIR, MLLM_RUN = "init", "mllm-run"


def llm_corpus() -> list[str]:
    from codi2.toy import tasks
    from codi2.toy import world as w

    texts = [t for info in tasks.TASKS.values() for t in info.templates]
    texts += list(tasks.NO_EXAMPLES.values()) + [tasks.ANSWER, tasks.ANSWER_SOUND, "user: assistant:"]
    texts += [w.caption(i) for i in w.all_image_items() + w.all_audio_items()]
    for s in tasks.TASKS:  # the rendered prompts, with their words filled in
        texts += [m["content"][0]["text"] for smp in tasks.make_samples(s, 20, seed=99, split="eval")
                  for m in smp.conversation if isinstance(m["content"], list) and m["content"] and m["content"][0]["type"] == "text"]
    return texts * 4 + [" ".join(tasks.vocabulary())]


def model_config(settings: RecipeSettings, out: Path, encoder_dim: int) -> dict[str, Any]:
    """The codi2 configuration of the toy model, with weight paths inside ``out``."""
    return {
        "encoders": [{"plugin": "toy-encoder", "options": {"weights": str(out / ENCODER_FILE), **encoder_options(settings)}}],
        "llm": {"plugin": "toy-llm", "options": {"model": str(out / LLM_DIR), "init": "random", "trainable": "full", "dtype": "float32"}},
        "decoders": {
            "image": {"plugin": "toy-image-decoder", "options": decoder_options(settings, out, "image", weights=str(out / IMAGE_DECODER_FILE))},
            "audio": {"plugin": "toy-audio-decoder", "options": decoder_options(settings, out, "audio", weights=str(out / AUDIO_DECODER_FILE))},
        },
        "loss": {"alpha": float(encoder_dim), "text": True, "feature": True, "diffusion": False},
        "generation": {"max_new_tokens": 24, "temperature": 0.0, "steps": settings.eval_steps},
        "max_input_tokens": 512,
    }




def write_dataset(samples: list[Any], folder: Path, pool: Any = None, seed: int = 0) -> Path:
    """The task samples' conversations as a codi2 JSONL dataset (:mod:`codi2.training.data`):
    ``folder/train.jsonl`` and ``folder/media/`` (one file per distinct item, named by content;
    images PNG, audio 16-bit WAV, video GIF — all lossless for this world). With ``pool`` (an
    :class:`codi2.toy.augment.ViewPool`), each conversation's inputs are views drawn from it."""
    import random

    from codi2.core.types import Media
    from codi2.toy.augment import augment_conversation
    from codi2.toy.demo import save_lossless
    from codi2.training.data import write_jsonl

    paths: dict[str, str] = {}

    def on_disk(part: dict[str, Any]) -> dict[str, Any]:
        media = part.get("data")
        if not isinstance(media, Media):
            return part
        key = media.content_hash()
        if key not in paths:
            paths[key] = "media/" + save_lossless(media, folder / "media" / key[:20]).name
        return {**{k: v for k, v in part.items() if k != "data"}, "path": paths[key]}

    rng = random.Random(f"dataset/{seed}")
    records = ({"id": f"{s.task}-{k}", "meta": {"task": s.task, "variant": s.variant},
                "messages": [{**m, "content": [on_disk(p) for p in m["content"]]}
                             for m in (augment_conversation(s, pool, rng) if pool else s.conversation)]}
               for k, s in enumerate(samples))
    path = folder / "train.jsonl"
    write_jsonl(path, records)
    return path


def train_config(settings: RecipeSettings, out: Path, data: Path) -> dict[str, Any]:
    """The MLLM phase as a :class:`codi2.training.TrainConfig` (``codi2 train --config`` format)."""
    budget = settings.mllm
    return {
        "model": str(out / "init"), "data": {"train": [str(data)]}, "stage": "custom",
        "trainable": {"input_projectors": True, "output_side": True, "markers": True, "llm": "full", "decoders": "frozen"},
        "optimizer": {"lr": budget.lr, "weight_decay": 0.01}, "schedule": {"kind": "cosine", "warmup_steps": 50},
        "batch_size": budget.batch, "max_steps": budget.steps, "max_minutes": budget.minutes, "seed": settings.seed,
        "output_dir": str(out / MLLM_RUN), "save_every": 100, "keep_last": 1, "log_every": max(1, min(25, budget.steps // 10)), "tensorboard": False,
    }


def train_mllm(settings: RecipeSettings, out: Path, log: Callable[[str], None], registry: Any, *, fresh: bool = False) -> dict[str, Any]:
    """The MLLM stage, run by codi2's trainer (:func:`codi2.training.train`) on the task
    conversations written as a JSONL dataset; ``OUT/mllm-train.json`` is the run's
    ``codi2 train --config`` file. An interrupted phase resumes from its last checkpoint."""
    import torch

    from codi2.assembly import assemble
    from codi2.core.config import ModelConfig
    from codi2.plugins.toy.llm import build_toy_llm_dir
    from codi2.toy import tasks
    from codi2.training import train

    start = time.monotonic()
    data = out / "data" / "train.jsonl"
    if fresh:
        for stale in (data.parent, out / INIT_DIR, out / MLLM_RUN):
            shutil.rmtree(stale, ignore_errors=True)
    if not data.is_file():
        samples = [s for k, task in enumerate(tasks.TASKS)
                   for s in tasks.make_samples(task, settings.samples_per_task * settings.task_weight.get(task, 1),
                                               seed=settings.seed + k, split="train")]
        from codi2.toy.augment import ViewPool

        pool = ViewPool(settings.mllm_views, settings.seed, exact=settings.mllm_exact)
        write_dataset(samples, data.parent, pool, settings.seed)
        log(f"mllm: {len(samples)} training conversations written to {data} ({time.monotonic() - start:.0f} s)")
    if not (out / INIT_DIR / "config.json").is_file():  # the untrained model the run starts from
        build_toy_llm_dir(out / LLM_DIR, llm_corpus(), hidden_size=settings.llm_hidden, layers=settings.llm_layers, heads=settings.llm_heads)
        torch.manual_seed(settings.seed)
        embed_dim = int(settings.encoder_size.get("embed_dim", 64))
        assemble(ModelConfig.from_dict(model_config(settings, out, embed_dim), source="toy recipe"), registry=registry).save_pretrained(out / INIT_DIR)
    config_file = out / "mllm-train.json"
    config_file.write_text(json.dumps(train_config(settings, out, data), indent=2) + "\n")
    resume = "auto" if (out / MLLM_RUN / "checkpoints").is_dir() else None
    result = train(config_file, registry, resume)
    for name in ("config.json", "model.safetensors"):
        shutil.copy2(result.final_dir / name, out / name)
    last = result.history[-1] if result.history else {}
    seconds = time.monotonic() - start
    log(f"mllm done: {result.step} steps in {seconds:.0f} s" + (" (stopped at its time budget)" if result.timed_out else ""))
    return {"steps": result.step, "seconds": round(seconds, 1), "timed_out": result.timed_out,
            "conversations": sum(1 for _ in data.open()),
            **{f"final_{k}_loss": round(last[k], 5) for k in ("text", "feature", "total") if k in last}}

