"""Phase 2 of the toy recipe (:mod:`codi2.toy.recipe`): the tiny ImageBind (``toy-encoder``)
trained contrastively against one prototype per world item, on exact renders and augmented views."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from codi2.plugins.toy import ENCODER_FILE
from codi2.toy.recipe_settings import PhaseClock, RecipeSettings, encoder_options, world_items

#: InfoNCE temperature and the weight of the squared pull toward the prototype (encoder phase)
ENCODER_TEMPERATURE, ENCODER_PULL = 0.1, 1.0
#: whether the attribute vectors behind the prototypes are learnt (else fixed random vectors)
ENCODER_LEARN_PROTOTYPES = False


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
    clock = PhaseClock(settings.encoder)
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

