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
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from codi2.plugins.toy import AUDIO_DECODER_FILE, ENCODER_FILE, IMAGE_DECODER_FILE, LLM_DIR

PHASES = ("encoder", "image_decoder", "audio_decoder", "mllm")
#: inside the output directory: the untrained model the MLLM run starts from, and the run itself
INIT_DIR, MLLM_RUN = "init", "mllm-run"
#: InfoNCE temperature and the weight of the squared pull toward the prototype (encoder phase)
ENCODER_TEMPERATURE, ENCODER_PULL = 0.1, 1.0
#: whether the attribute vectors behind the prototypes are learnt (else fixed random vectors)
ENCODER_LEARN_PROTOTYPES = False


@dataclass
class PhaseBudget:
    minutes: float
    steps: int
    batch: int
    lr: float


@dataclass
class RecipeSettings:
    """Sizes and budgets. :meth:`full` is the shipped model's recipe (about 30 min on 2 cores),
    :meth:`smoke` a seconds-long run of the same code (tests)."""

    encoder: PhaseBudget
    image_decoder: PhaseBudget
    audio_decoder: PhaseBudget
    mllm: PhaseBudget
    threads: int = 2
    seed: int = 0
    rain_seeds: int = 3
    #: toy-encoder architecture options (width, heads, blocks, embed_dim)
    encoder_size: dict[str, int] = field(default_factory=dict)
    #: the toy encoder's audio loudness normalisation (``ToyEncoderOptions.audio_loudness``)
    audio_loudness: str = "rms"
    #: the toy encoder's image position normalisation (``ToyEncoderOptions.image_centring``)
    image_centring: str = "content"
    #: augmented views (:mod:`codi2.toy.augment`) per world item in the encoder phase's pool
    encoder_views: int = 16
    #: augmented views per vision/audio minibatch of the encoder phase (beside ``encoder.batch`` exact ones)
    encoder_view_batch: int = 24
    #: the augmented images also rolled by up to this many pixels of the 224-px input per step
    #: (the white margin wraps around), so the pool's shifts are not memorised
    encoder_roll: int = 12
    #: a pool of this many augmented views per item for the MLLM dataset's inputs (each input the
    #: exact render with probability ``mllm_exact``). 0: exact renders only -- with 8 / 0.3 the
    #: held-out combinations fell from 0.98-1.00 to 0.43-0.62 on world inputs (docs/toy-model.md)
    mllm_views: int = 0
    mllm_exact: float = 0.3
    image_channels: list[int] = field(default_factory=lambda: [16, 32, 32])
    audio_channels: list[int] = field(default_factory=lambda: [64])
    llm_hidden: int = 128
    llm_layers: int = 4
    llm_heads: int = 4
    samples_per_task: int = 600
    #: tasks that get more training conversations (relational tasks learn slowest)
    task_weight: dict[str, int] = field(default_factory=lambda: {
        "image_exemplar": 4, "audio_exemplar": 2, "video_next": 2, "multi_round": 3,
        "exemplar_image_to_audio": 2, "exemplar_audio_to_image": 2, "interleaved": 2})
    #: prompts per task and split in the final evaluation (0: no evaluation)
    eval_per_task: int = 6
    eval_steps: int = 20

    @classmethod
    def full(cls, minutes: float = 30.0, threads: int = 2) -> RecipeSettings:
        share = minutes / 30.0
        return cls(
            # 5 min: the augmented views (24 per image/audio minibatch) make a step about 1.4x dearer
            encoder=PhaseBudget(5.0 * share, 1100, 12, 3e-3),
            image_decoder=PhaseBudget(5.0 * share, 20000, 32, 1e-3),
            audio_decoder=PhaseBudget(4.0 * share, 20000, 32, 1e-3),
            # steps, not minutes, set the MLLM's schedule (about 0.47 s a step here); the
            # minutes only stop a slower machine at its budget
            mllm=PhaseBudget(14.0 * share, round(1600 * share), 48, 1e-3),
            threads=threads,
        )

    @classmethod
    def smoke(cls) -> RecipeSettings:
        return cls(
            encoder=PhaseBudget(0.2, 3, 4, 2e-3),
            image_decoder=PhaseBudget(0.2, 3, 4, 1e-3),
            audio_decoder=PhaseBudget(0.2, 3, 4, 1e-3),
            mllm=PhaseBudget(0.3, 6, 4, 1e-3),
            threads=1, rain_seeds=1, encoder_views=1, encoder_view_batch=2, mllm_views=2, image_channels=[8, 16], audio_channels=[16], llm_hidden=32, llm_layers=1, llm_heads=2,
            samples_per_task=2, eval_per_task=1, eval_steps=2,
        )


class _Clock:
    """Stops a phase at its time budget or step cap, whichever comes first."""

    def __init__(self, budget: PhaseBudget):
        self.budget, self.start, self.step = budget, time.monotonic(), 0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    @property
    def fraction(self) -> float:
        return max(self.step / self.budget.steps, self.elapsed / (60 * self.budget.minutes))

    def running(self) -> bool:
        return self.step < self.budget.steps and self.elapsed < 60 * self.budget.minutes

    def lr(self) -> float:
        """Constant, then a linear decay over the last 30 % of the phase."""
        return self.budget.lr * min(1.0, max(0.05, (1 - self.fraction) / 0.3))


# --- 1. the world ------------------------------------------------------------------------------


def world_items(rain_seeds: int) -> tuple[list[Any], list[Any]]:
    """``[(ImageItem, Media)]`` for every image item, ``[(AudioItem, Media)]`` for every audio
    item (rain items once per seed)."""
    from codi2.toy import world as w

    images = [(item, w.to_media(item)) for item in w.all_image_items()]
    audio = []
    for item in w.all_audio_items():
        for seed in range(rain_seeds if item.overlay == "rain" else 1):
            audio.append((item, w.to_media(item, seed=1000 + seed)))
    return images, audio


# --- 2. the encoder ------------------------------------------------------------------------------


def encoder_options(settings: RecipeSettings) -> dict[str, Any]:
    """The toy-encoder options every phase's configuration repeats (size and preprocessing)."""
    return {**settings.encoder_size, "audio_loudness": settings.audio_loudness, "image_centring": settings.image_centring}


def train_encoder(settings: RecipeSettings, out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from codi2.plugins.encoders.imagebind import preprocess as pre
    from codi2.plugins.toy import ToyEncoderOptions, load_encoder
    from codi2.plugins.toy.encoder import save_encoder
    from codi2.toy import augment
    from codi2.toy import world as w

    images, audio = world_items(settings.rain_seeds)
    encoder = load_encoder(ToyEncoderOptions(random_init=True, seed=settings.seed, **encoder_options(settings)))
    net = encoder.model
    net.requires_grad_(True)
    x_img = encoder.inputs([m for _, m in images], "image")
    x_aud = encoder.inputs([m for _, m in audio], "audio")
    t0 = time.monotonic()
    aug_img, aug_img_items = augment.encoder_views(encoder, [i for i, _ in images], settings.encoder_views, settings.seed)
    aug_aud, aug_aud_items = augment.encoder_views(encoder, w.all_audio_items(), settings.encoder_views, settings.seed)
    log(f"encoder: {len(aug_img) + len(aug_aud)} augmented views in {time.monotonic() - t0:.0f} s")
    t_img = pre.text_tokens([w.caption(i) for i, _ in images])
    t_aud = pre.text_tokens([w.caption(i) for i, _ in audio])

    # one prototype per world item: the sum of its attribute vectors (shared across modalities)
    dim = encoder.embed_dim
    gen = torch.Generator().manual_seed(settings.seed)
    tables = torch.nn.ParameterDict({
        name: torch.nn.Parameter(torch.randn(n, dim, generator=gen) / math.sqrt(dim))
        for name, n in (("colour", 6), ("shape", 3), ("size", 2), ("overlay", 3))
    })
    colours, shapes = list(w.COLOURS), list(w.SHAPES)
    image_attrs = torch.tensor([[colours.index(i.colour), shapes.index(i.shape), w.SIZES.index(i.size)] for i, _ in images])
    audio_items = w.all_audio_items()
    unique_audio_attrs = torch.tensor([[colours.index(w.COLOUR_OF_PITCH[a.pitch]), shapes.index(w.SHAPE_OF_WAVEFORM[a.waveform]),
                                        w.OVERLAYS.index(a.overlay)] for a in audio_items])
    audio_labels = torch.tensor([audio_items.index(i) for i, _ in audio]) + len(images)
    image_labels = torch.arange(len(images))
    aug_img_labels = torch.tensor([[i for i, _ in images].index(i) for i in aug_img_items])
    aug_aud_labels = torch.tensor([audio_items.index(i) for i in aug_aud_items]) + len(images)

    def prototypes() -> torch.Tensor:
        img = tables["colour"][image_attrs[:, 0]] + tables["shape"][image_attrs[:, 1]] + tables["size"][image_attrs[:, 2]]
        aud = (tables["colour"][unique_audio_attrs[:, 0]] + tables["shape"][unique_audio_attrs[:, 1]]
               + tables["overlay"][unique_audio_attrs[:, 2]])
        return F.normalize(torch.cat([img, aud]), dim=-1)

    params = list(net.parameters()) + (list(tables.parameters()) if ENCODER_LEARN_PROTOTYPES else [])
    opt = torch.optim.AdamW(params, lr=settings.encoder.lr, weight_decay=0.0)
    clock = _Clock(settings.encoder)
    while clock.running():
        for group in opt.param_groups:
            group["lr"] = clock.lr()
        protos = prototypes()
        loss = torch.zeros(())
        batch, views = settings.encoder.batch, settings.encoder_view_batch
        for tower, sources in (("vision", [(x_img, image_labels, batch), (aug_img, aug_img_labels, views)]),
                               ("audio", [(x_aud, audio_labels, batch), (aug_aud, aug_aud_labels, views)]),
                               ("text", [(t_img, image_labels, batch), (t_aud, audio_labels, batch)])):
            # a random minibatch per source (more, cheaper updates), one forward pass per tower
            sources = [source for source in sources if len(source[0])]
            picks = [torch.randperm(len(x), generator=gen)[:n] if n else torch.arange(len(x)) for x, _, n in sources]
            xs = [x[p] for (x, _, _), p in zip(sources, picks)]
            if tower == "vision" and len(xs) > 1 and settings.encoder_roll:  # fresh shifts every step
                xs[1] = augment.rolled(xs[1], settings.encoder_roll, gen)
            embs = net.embed(tower, torch.cat(xs))
            for (_, labels, _), p, emb in zip(sources, picks, embs.split([len(p) for p in picks])):
                if len(p):
                    labels = labels[p]
                    logits = emb @ protos.T / ENCODER_TEMPERATURE
                    loss = loss + F.cross_entropy(logits, labels) + ENCODER_PULL * (emb - protos[labels]).pow(2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        clock.step += 1
        if clock.step % 25 == 0 or clock.step == 1:
            log(f"encoder step {clock.step} loss {loss.item():.4f} ({clock.elapsed:.0f} s)")
    net.requires_grad_(False)
    save_encoder(net, out / ENCODER_FILE)
    metrics = encoder_metrics(encoder, images, audio)
    with torch.no_grad():
        protos = prototypes()
        for modality, tower, x, labels in (("image", "vision", x_img, image_labels), ("audio", "audio", x_aud, audio_labels)):
            emb = net.embed(tower, x)
            metrics[f"{modality}_to_prototype"] = round(float((emb @ protos.T).argmax(1).eq(labels).float().mean()), 3)
        # augmented views the phase never trained on (other seeds): robustness, as trained
        for modality, tower, items, labels in (("image", "vision", [i for i, _ in images], image_labels),
                                               ("audio", "audio", audio_items, torch.arange(len(audio_items)) + len(images))):
            x, seen = augment.encoder_views(encoder, items, 2, settings.seed + 10**6)
            emb = net.embed(tower, x)
            want = labels[torch.tensor([items.index(i) for i in seen])]
            metrics[f"{modality}_views_to_prototype"] = round(float((emb @ protos.T).argmax(1).eq(want).float().mean()), 3)
    log(f"encoder done: {clock.step} steps in {clock.elapsed:.0f} s; {metrics}")
    return {"steps": clock.step, "seconds": round(clock.elapsed, 1), "final_loss": round(loss.item(), 4), **metrics}


def encoder_metrics(encoder: Any, images: list, audio: list) -> dict[str, float]:
    """Retrieval accuracies: item -> its caption (text embedding), image -> its sound."""
    import torch

    from codi2.core.types import Media
    from codi2.toy import world as w

    with torch.no_grad():
        e_img = encoder.encode([m for _, m in images], "image")[:, 0]
        e_aud = encoder.encode([m for _, m in audio], "audio")[:, 0]
        caps_i = [w.caption(i) for i, _ in images]
        caps_a = sorted({w.caption(i) for i, _ in audio})
        t_img = encoder.encode([Media("text", c) for c in caps_i], "text")[:, 0]
        t_aud = encoder.encode([Media("text", c) for c in caps_a], "text")[:, 0]
        img_txt = (e_img @ t_img.T).argmax(1).eq(torch.arange(len(images))).float().mean()
        aud_txt = torch.tensor([caps_a[j] == w.caption(i) for (i, _), j in zip(audio, (e_aud @ t_aud.T).argmax(1).tolist())]).float().mean()
        plain = [(i, e) for (i, _), e in zip(audio, e_aud) if i.overlay == "none"]
        sims = e_img @ torch.stack([e for _, e in plain]).T
        img_snd = torch.tensor([plain[j][0] == w.sound_of(i) for (i, _), j in zip(images, sims.argmax(1).tolist())]).float().mean()
    return {"image_to_caption": round(float(img_txt), 3), "audio_to_caption": round(float(aud_txt), 3),
            "image_to_sound": round(float(img_snd), 3)}


# --- 3-4. the decoders -------------------------------------------------------------------------


def decoder_options(settings: RecipeSettings, out: Path, modality: str, **extra: Any) -> dict[str, Any]:
    channels = settings.image_channels if modality == "image" else settings.audio_channels
    return {"encoder": {"weights": str(out / ENCODER_FILE), **encoder_options(settings)}, "channels": list(channels), **extra}


def train_decoder(modality: str, settings: RecipeSettings, out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Train one decoder on every world item of its modality."""
    import copy

    import torch

    from codi2.plugins.toy import ToyDecoderOptions, load_audio_decoder, load_image_decoder

    budget = settings.image_decoder if modality == "image" else settings.audio_decoder
    load = load_image_decoder if modality == "image" else load_audio_decoder
    options = ToyDecoderOptions.model_validate(decoder_options(settings, out, modality, random_init=True, seed=settings.seed))
    decoder = load(options)
    images, audio = world_items(settings.rain_seeds)
    pairs = images if modality == "image" else audio
    media = [m for _, m in pairs]
    cond = decoder.target_features(media)
    signals = decoder.signals(media)
    decoder.set_trainable("full")
    decoder.train()
    ema = copy.deepcopy(decoder.network_state())
    ema = {k: v.detach().clone() for k, v in ema.items()}
    params = [p for p in decoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=budget.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(settings.seed)
    clock = _Clock(budget)
    running = None
    while clock.running():
        for group in opt.param_groups:
            group["lr"] = clock.lr()
        idx = torch.randint(0, len(media), (budget.batch,), generator=gen)
        noisy = cond[idx] + options.cond_noise * torch.randn(cond[idx].shape, generator=gen)
        loss = decoder.diffusion_loss(noisy, None, generator=gen, signals=signals[idx])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        clock.step += 1
        decay = min(0.995, (1 + clock.step) / (10 + clock.step))
        with torch.no_grad():
            for k, v in decoder.network_state().items():
                ema[k].lerp_(v.detach(), 1 - decay)
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if clock.step % 50 == 0 or clock.step == 1:
            log(f"{modality} decoder step {clock.step} loss {running:.4f} ({clock.elapsed:.0f} s)")
    decoder.load_state_dict(ema, strict=False)
    decoder.set_trainable("frozen")
    decoder.eval()
    path = out / (IMAGE_DECODER_FILE if modality == "image" else AUDIO_DECODER_FILE)
    decoder.save_weights(path)
    accuracy = decoder_accuracy(decoder, pairs, settings.eval_steps, settings.seed)
    log(f"{modality} decoder done: {clock.step} steps in {clock.elapsed:.0f} s, accuracy {accuracy}")
    return {"steps": clock.step, "seconds": round(clock.elapsed, 1), "final_loss": round(running or 0.0, 5), **accuracy}


def decoder_accuracy(decoder: Any, pairs: list, steps: int, seed: int) -> dict[str, float]:
    """Render every distinct world item from its own embedding; the analysers judge them."""
    import torch

    from codi2.toy import analysers

    seen: dict[Any, Any] = {}
    for item, media in pairs:
        seen.setdefault(item, media)
    items = list(seen)
    cond = decoder.target_features([seen[i] for i in items])
    outputs = decoder.generate(cond, steps=steps, generator=torch.Generator().manual_seed(seed))
    hits = [analysers.analyse(o).item == i for i, o in zip(items, outputs)]
    return {"exact": round(sum(hits) / len(hits), 3), "items": len(hits)}


# --- 5. the MLLM -------------------------------------------------------------------------------


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


def toy_registry() -> Any:
    """The default registry, plus the toy plugin if the built-ins do not list it yet."""
    from codi2.registry import Registry

    registry = Registry.create()
    if "toy-encoder" not in registry.names("encoder"):
        import codi2.plugins.toy as toy_plugin

        registry.register_plugin(toy_plugin, "codi2.plugins.toy")
    return registry


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
