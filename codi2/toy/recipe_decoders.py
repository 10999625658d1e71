"""Phases 3 and 4 of the toy recipe (:mod:`codi2.toy.recipe`): the image and audio diffusion
decoders, trained on the cached encoder embeddings of every world item of their modality."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from codi2.plugins.toy import AUDIO_DECODER_FILE, ENCODER_FILE, IMAGE_DECODER_FILE
from codi2.toy.recipe_settings import PhaseClock, RecipeSettings, encoder_options, world_items


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
    clock = PhaseClock(budget)
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

