"""Contract test kit for codi2 components, and small real components for tests.

Third-party plugins test their components with the same checks codi2's own plugins pass::

    from codi2.testing import check_encoder, check_decoder, check_llm

    def test_my_encoder():
        check_encoder(load_my_encoder(), {"image": "tests/cat.png"})

Each ``check_*`` is a plain function that raises ``AssertionError`` with a message saying which
promise of the interface is broken. The ``Tiny*`` classes are genuine (tiny) torch models —
a frozen random-feature encoder, a causal transformer with a byte tokenizer, a denoising
diffusion decoder — that the core's tests compose into whole CoDi-2 models.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from codi2.core.interfaces import LLM, Decoder, Encoder, LLMOutput, check_state_dict, per_item_noise
from codi2.core.types import ConditionSpec, Media
from codi2.errors import CheckpointError, UnknownModalityError
from codi2.plugins.base import DecoderBase, FrozenEncoder

# ==========================================================================================
# Contract checks
# ==========================================================================================


def _assert_module(component: Any, kind: str) -> None:
    assert isinstance(component, nn.Module), f"{kind} {component!r} must be a torch.nn.Module"


def _assert_state_round_trip(component: Any, kind: str) -> None:
    state = component.trained_state_dict()
    assert isinstance(state, dict), f"{kind}.trained_state_dict() must return a dict"
    for key, value in state.items():
        assert isinstance(value, torch.Tensor), f"{kind}.trained_state_dict()[{key!r}] is not a tensor"
    component.load_trained_state_dict({k: v.clone() for k, v in state.items()})
    if state:
        bad = {next(iter(state)): torch.zeros(1, 2, 3, 4, 5)}
        try:
            component.load_trained_state_dict(bad)
        except CheckpointError:
            pass
        else:
            raise AssertionError(f"{kind}.load_trained_state_dict accepted a wrongly shaped tensor")


def check_encoder(encoder: Encoder, samples: Mapping[str, Any]) -> None:
    """Check an encoder against the interface. ``samples`` maps a modality to one source
    (path, array, Media, ...) of that modality; give at least one."""
    _assert_module(encoder, "encoder")
    assert isinstance(encoder, Encoder), "encoder does not implement codi2.core.interfaces.Encoder"
    assert samples, "check_encoder needs at least one sample"
    assert isinstance(encoder.identity, str) and encoder.identity, "encoder.identity must be a non-empty str"
    try:
        encoder.tokens_per_item("smell")
    except UnknownModalityError:
        pass
    else:
        raise AssertionError("tokens_per_item('smell') must raise UnknownModalityError")
    for modality, source in samples.items():
        assert modality in encoder.modalities, f"sample modality {modality!r} not in encoder.modalities"
        item = encoder.load_media(source, modality, name="sample")
        assert isinstance(item, Media) and item.modality == modality, f"load_media must return a {modality} Media"
        tokens = encoder.tokens_per_item(modality)
        out = encoder.encode([item, item], modality)
        assert isinstance(out, torch.Tensor), "encode must return a tensor"
        assert out.shape == (2, tokens, encoder.embed_dim), (
            f"encode({modality}) shape {tuple(out.shape)} != (2, {tokens}, {encoder.embed_dim})"
        )
        assert out.is_floating_point() and torch.isfinite(out).all(), f"encode({modality}) must be finite floats"
        assert not out.requires_grad, "encoders are frozen: encode must not build a graph"
        torch.testing.assert_close(out[0], out[1], msg=f"encode({modality}) differs for identical items")
        again = encoder.encode([item], modality)
        torch.testing.assert_close(again[0], out[0], rtol=1e-4, atol=1e-5, msg=f"encode({modality}) is not deterministic / batch-independent")
    try:
        encoder.encode([item], "smell")
    except UnknownModalityError:
        pass
    else:
        raise AssertionError("encode(..., 'smell') must raise UnknownModalityError")
    encoder.set_trainable("frozen")
    assert not any(p.requires_grad for p in encoder.parameters()), "frozen encoder still has trainable parameters"
    _assert_state_round_trip(encoder, "encoder")


def check_llm(llm: LLM) -> None:
    """Check a language model against the interface (tokenizer, template, forward, cache)."""
    _assert_module(llm, "llm")
    assert isinstance(llm, LLM), "llm does not implement codi2.core.interfaces.LLM"
    ids = llm.tokenize("hello world")
    assert ids and all(isinstance(i, int) and 0 <= i < llm.vocab_size for i in ids), "tokenize must give ids in [0, vocab_size)"
    assert "hello" in llm.detokenize(ids), "detokenize(tokenize(text)) lost the text"
    rendered = llm.render_chat([{"role": "user", "content": "ping"}], add_generation_prompt=True)
    assert isinstance(rendered, str) and "ping" in rendered, "render_chat must contain the message text"
    assert llm.eos_token_ids, "llm.eos_token_ids must not be empty"
    x = torch.tensor([ids[:4] * 3])
    param = next(llm.parameters())
    emb = llm.embed(x.to(param.device))
    assert emb.shape == (1, x.shape[1], llm.hidden_size), f"embed shape {tuple(emb.shape)}"
    with torch.no_grad():
        full = llm.forward(emb)
        assert isinstance(full, LLMOutput), "forward must return an LLMOutput"
        assert full.logits.shape[:2] == x.shape and full.logits.shape[-1] >= llm.vocab_size, "logits shape"
        assert full.hidden.shape == (1, x.shape[1], llm.hidden_size), "hidden shape"
        head = llm.forward(emb[:, :-2])
        tail = llm.forward(emb[:, -2:], past=head.past)
    torch.testing.assert_close(
        tail.logits[:, -1].float(), full.logits[:, -1].float(), rtol=1e-3, atol=1e-4,
        msg="forward with past (KV cache) must equal the full forward",
    )
    torch.testing.assert_close(tail.hidden[:, -1].float(), full.hidden[:, -1].float(), rtol=1e-3, atol=1e-4)
    llm.set_trainable("frozen")
    assert not any(p.requires_grad for p in llm.parameters()), "frozen llm still has trainable parameters"
    assert llm.trained_state_dict() == {}, "a frozen llm must report no trained state"


#: how far a row of a batched ``generate`` (one generator per row) may be from the same row
#: generated alone, as a fraction of the value range (batched arithmetic rounds differently:
#: 2 of 255 levels of an image, 0.008 of an audio sample's full scale)
PER_ITEM_TOLERANCE = 2 / 255


def check_decoder(decoder: Decoder, samples: Sequence[Any], *, steps: int = 2) -> None:
    """Check a decoder: conditioning shapes, gradient flow through ``diffusion_loss`` into the
    conditioning, seeded determinism of ``generate``, trained-state round trip and, where it
    sets ``per_item_generators``, that a batched call with one generator per row gives each
    row what it gets alone (within :data:`PER_ITEM_TOLERANCE`).
    ``samples``: two or more target items (Media) of ``decoder.modality``."""
    _assert_module(decoder, "decoder")
    assert isinstance(decoder, Decoder), "decoder does not implement codi2.core.interfaces.Decoder"
    spec = decoder.condition
    assert isinstance(spec, ConditionSpec), "decoder.condition must be a ConditionSpec"
    media = list(samples)[:2]
    assert len(media) == 2 and all(m.modality == decoder.modality for m in media), "give 2 Media of the decoder's modality"
    device = next(decoder.parameters()).device
    with torch.no_grad():
        target = decoder.target_features(media)
    assert target.shape == (2, spec.tokens, spec.dim), f"target_features shape {tuple(target.shape)} != (2, {spec.tokens}, {spec.dim})"
    assert torch.isfinite(target).all(), "target_features not finite"
    cond = torch.randn(2, spec.tokens, spec.dim, device=device, requires_grad=True)
    gen = torch.Generator(device="cpu").manual_seed(0)
    loss = decoder.diffusion_loss(cond, media, generator=gen)
    assert loss.dim() == 0 and torch.isfinite(loss), "diffusion_loss must be a finite scalar"
    loss.backward()
    assert cond.grad is not None and cond.grad.abs().sum() > 0, "diffusion_loss must back-propagate into cond"
    with torch.no_grad():
        out1 = decoder.generate(cond.detach()[:1], steps=steps, generator=torch.Generator().manual_seed(1))
        out2 = decoder.generate(cond.detach()[:1], steps=steps, generator=torch.Generator().manual_seed(1))
    assert len(out1) == 1 and isinstance(out1[0], Media) and out1[0].modality == decoder.modality, "generate returns one Media per row"
    np.testing.assert_allclose(np.asarray(out1[0].data, dtype=np.float64), np.asarray(out2[0].data, dtype=np.float64), atol=1e-5, err_msg="generate is not deterministic under a seeded generator")
    if getattr(decoder, "per_item_generators", False):  # one call with a generator per row = each row alone
        with torch.no_grad():
            rows = decoder.generate(cond.detach(), steps=steps, generator=[torch.Generator().manual_seed(s) for s in (1, 2)])
            alone = [decoder.generate(cond.detach()[k : k + 1], steps=steps, generator=torch.Generator().manual_seed(s))[0]
                     for k, s in enumerate((1, 2))]  # fmt: skip
        assert len(rows) == 2, "generate with a list of generators returns one Media per row"
        for k, (row, single) in enumerate(zip(rows, alone)):
            a, b = np.asarray(row.data, dtype=np.float64), np.asarray(single.data, dtype=np.float64)
            tolerance = PER_ITEM_TOLERANCE * (255.0 if np.asarray(single.data).dtype == np.uint8 else 1.0)
            assert a.shape == b.shape and np.abs(a - b).max() <= tolerance, (
                f"per_item_generators: row {k} of a batched call differs from the row generated alone "
                f"(max difference {np.abs(a - b).max() if a.shape == b.shape else 'shape'}; allowed {tolerance})")
    import inspect

    if "on_step" in inspect.signature(decoder.generate).parameters:  # optional: progress reports
        reported: list[tuple[int, int]] = []
        with torch.no_grad():
            decoder.generate(cond.detach()[:1], steps=steps, generator=torch.Generator().manual_seed(1),
                             on_step=lambda done, total: reported.append((done, total)))  # fmt: skip
        assert reported and reported[-1][0] == reported[-1][1] > 0, f"on_step must end at (total, total), got {reported[-3:]}"
        assert [d for d, _ in reported] == sorted({d for d, _ in reported}), "on_step's done must increase"
    decoder.set_trainable("frozen")
    assert not any(p.requires_grad for p in decoder.parameters()), "frozen decoder still has trainable parameters"
    _assert_state_round_trip(decoder, "decoder")


# ==========================================================================================
# Tiny real components
# ==========================================================================================


def _frozen_linear(n_in: int, n_out: int, seed: int) -> nn.Linear:
    gen = torch.Generator().manual_seed(seed)
    layer = nn.Linear(n_in, n_out)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(n_out, n_in, generator=gen) / math.sqrt(n_in))
        layer.bias.zero_()
    layer.requires_grad_(False)
    return layer


def _image_signal(data: np.ndarray, size: int) -> torch.Tensor:
    """uint8 [H, W, 3] -> float [3, size, size] in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(data)).permute(2, 0, 1).float()[None] / 127.5 - 1
    return nn.functional.interpolate(x, size=(size, size), mode="area")[0]


def _audio_signal(data: np.ndarray, length: int) -> torch.Tensor:
    x = torch.from_numpy(np.asarray(data, dtype=np.float32))
    x = x[:length] if len(x) >= length else nn.functional.pad(x, (0, length - len(x)))
    return x


class TinyEncoder(FrozenEncoder):
    """A frozen random-feature encoder for image, audio, video and text (real tensors in and out).

    Images are area-downsampled to 8x8, audio summarised by a magnitude spectrum, video as the
    mean of its frames, text by a byte histogram; each passes a fixed random projection.
    """

    name = "tiny-encoder"
    modalities = ("image", "audio", "video", "text")
    sample_rate = 16000

    def __init__(self, embed_dim: int = 16, tokens: int = 1, seed: int = 0):
        super().__init__()
        self.embed_dim, self.tokens = embed_dim, tokens
        self.options = {"embed_dim": embed_dim, "tokens": tokens, "seed": seed}
        self.proj = nn.ModuleDict({
            "image": _frozen_linear(3 * 8 * 8, embed_dim * tokens, seed),
            "audio": _frozen_linear(129, embed_dim * tokens, seed + 1),
            "text": _frozen_linear(256, embed_dim * tokens, seed + 2),
        })

    @property
    def identity(self) -> str:
        return f"tiny(dim={self.embed_dim},tokens={self.tokens})"

    def tokens_per_item(self, modality: str) -> int:
        self.check_modality(modality)
        return self.tokens

    def load_media(self, source: Any, modality: str, *, name: str | None = None) -> Media:
        if modality == "text":
            self.check_modality(modality)
            return source if isinstance(source, Media) else Media("text", str(source), name=name)
        return super().load_media(source, modality, name=name)

    def _features(self, item: Media, modality: str) -> torch.Tensor:
        if modality == "image":
            return self.proj["image"](_image_signal(item.data, 8).flatten())
        if modality == "video":
            return torch.stack([self.proj["image"](_image_signal(f, 8).flatten()) for f in item.data]).mean(0)
        if modality == "audio":
            spec = torch.fft.rfft(_audio_signal(item.data, 256)).abs()
            return self.proj["audio"](torch.log1p(spec))
        hist = torch.bincount(torch.tensor(list(item.data.encode("utf-8")) or [0]), minlength=256).float()
        return self.proj["text"](hist / hist.sum())

    @torch.no_grad()
    def encode(self, items: Sequence[Media], modality: str) -> torch.Tensor:
        self.check_modality(modality)
        device = self.proj["image"].weight.device
        feats = torch.stack([self._features(item, modality) for item in items]) if items else torch.zeros(0, self.embed_dim * self.tokens)
        return feats.to(device).view(len(items), self.tokens, self.embed_dim)


class ByteTokenizer:
    """Bytes as tokens: ids 0-255 are bytes, then specials. Needs no vocabulary file."""

    specials = ("<bos>", "<eos>", "<pad>")

    def __init__(self) -> None:
        self.special_ids = {s: 256 + i for i, s in enumerate(self.specials)}
        self.vocab_size = 256 + len(self.specials)

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        pos = 0
        while pos < len(text):
            for s, i in self.special_ids.items():
                if text.startswith(s, pos):
                    ids.append(i)
                    pos += len(s)
                    break
            else:
                ids.extend(text[pos].encode("utf-8"))
                pos += 1
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class TinyLLM(nn.Module):
    """A tiny causal transformer over bytes with a plain chat template.

    ``past`` is the list of embeddings seen so far; a continued forward re-runs attention over
    them (exact, not fast: this model is for tests).
    """

    name = "tiny-llm"
    template = "{role}: {content}\n"

    def __init__(self, hidden_size: int = 32, layers: int = 2, heads: int = 2, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.options = {"hidden_size": hidden_size, "layers": layers, "heads": heads, "seed": seed}
        self.tokenizer = ByteTokenizer()
        self.hidden_size = hidden_size
        self.vocab_size = self.tokenizer.vocab_size
        self.eos_token_ids = (self.tokenizer.special_ids["<eos>"],)
        self.embedding = nn.Embedding(self.vocab_size, hidden_size)
        self.position = nn.Embedding(512, hidden_size)
        layer = nn.TransformerEncoderLayer(hidden_size, heads, 2 * hidden_size, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden_size)
        self.head = nn.Linear(hidden_size, self.vocab_size, bias=False)
        self.policy = "full"

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)

    def render_chat(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool) -> str:
        text = "<bos>" + "".join(
            self.template.format(role=m["role"], content=m["content"]) + ("<eos>" if m["role"] == "assistant" else "")
            for m in messages
        )
        return text + ("assistant: " if add_generation_prompt else "")

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids)

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None, past: Any = None) -> LLMOutput:
        new = inputs_embeds.shape[1]
        if past is not None:
            inputs_embeds = torch.cat([past[0], inputs_embeds], 1)
            if attention_mask is not None and attention_mask.shape[1] == new:
                attention_mask = torch.cat([past[1], attention_mask], 1)
        length = inputs_embeds.shape[1]
        if attention_mask is None:
            attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        # positions count attended tokens only, so a padded row equals the unpadded one
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=inputs_embeds.device), 1)
        x = self.blocks(inputs_embeds + self.position(positions), mask=causal, src_key_padding_mask=attention_mask == 0, is_causal=True)
        hidden = self.norm(x)[:, -new:]
        return LLMOutput(self.head(hidden), hidden, (inputs_embeds, attention_mask))

    def set_trainable(self, policy: str) -> None:
        if policy not in ("frozen", "full", "lora"):
            raise ValueError(f"unknown trainable policy {policy!r}")
        # "lora" trains only the output head here: a stand-in adapter that keeps tests fast
        self.policy = policy
        self.requires_grad_(policy == "full")
        if policy == "lora":
            self.head.requires_grad_(True)

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        if self.policy == "frozen":
            return {}
        if self.policy == "lora":
            return {"head.weight": self.head.weight.detach().clone()}
        return {k: v.detach().clone() for k, v in self.state_dict().items()}

    def load_trained_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        check_state_dict(state, self.state_dict(), "llm 'tiny-llm'", partial=True)  # LoRA: the head only
        self.load_state_dict(dict(state), strict=False)


class TinyDecoder(DecoderBase):
    """A real (tiny) denoising diffusion decoder for image, audio or video.

    The signal is a small tensor (8x8 RGB image, 1024 audio samples, 2 frames of 8x8); an MLP
    predicts the clean signal from the noisy one, the timestep and the conditioning (mean of
    its tokens). ``target_features`` is a fixed random projection of the signal. With
    ``fidelity=True`` the reference signal is concatenated to the input through zero-initialised
    weights, the way the paper's fidelity path widens ``conv_in``.
    """

    supports_reference = False
    per_item_generators = True
    num_train_timesteps = 100
    frozen_parts = ("features",)  # "full" trains the denoiser (and reference_in)

    def __init__(self, modality: str = "image", tokens: int = 2, dim: int = 8, size: int = 16, fidelity: bool = False, seed: int = 0):
        super().__init__()
        if modality not in ("image", "audio", "video"):
            raise UnknownModalityError(f"TinyDecoder cannot produce {modality!r}")
        torch.manual_seed(seed)
        self.name, self.modality = "tiny-decoder", modality
        self.options = {"modality": modality, "tokens": tokens, "dim": dim, "size": size, "fidelity": fidelity, "seed": seed}
        self.condition = ConditionSpec(tokens, dim)
        self.size = size
        self.signal_shape = {"image": (3, 8, 8), "audio": (1024,), "video": (2, 3, 8, 8)}[modality]
        n = int(np.prod(self.signal_shape))
        self.denoiser = nn.Sequential(nn.Linear(n + dim + 16, 128), nn.SiLU(), nn.Linear(128, n))
        self.features = _frozen_linear(n, tokens * dim, seed + 7)
        self.supports_reference = fidelity
        self.reference_in = nn.Linear(n, 128, bias=False) if fidelity else None
        if self.reference_in is not None:
            nn.init.zeros_(self.reference_in.weight)
        betas = torch.linspace(1e-3, 0.2, self.num_train_timesteps)
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, 0), persistent=False)
        self.requires_grad_(False)
        self.policy = "frozen"

    # signals ------------------------------------------------------------------------------

    def _signal(self, item: Media) -> torch.Tensor:
        if self.modality == "image":
            return _image_signal(item.data, 8)
        if self.modality == "audio":
            return _audio_signal(item.data, self.signal_shape[0])
        frames = list(item.data)[:2] + [item.data[-1]] * max(0, 2 - len(item.data))
        return torch.stack([_image_signal(f, 8) for f in frames])

    def _batch(self, media: Sequence[Media | None], like: torch.Tensor) -> torch.Tensor:
        rows = [self._signal(m).flatten() if m is not None else torch.zeros(like.shape[-1]) for m in media]
        return torch.stack(rows).to(like.device)

    def _to_media(self, x: torch.Tensor) -> Media:
        x = x.detach().float().cpu().view(self.signal_shape).clamp(-1, 1)
        if self.modality == "audio":
            return Media("audio", x.numpy().astype(np.float32), sample_rate=16000)
        frames = x[None] if self.modality == "image" else x
        up = nn.functional.interpolate(frames, size=(self.size, self.size), mode="nearest")
        arr = ((up + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        return Media("image", arr[0]) if self.modality == "image" else Media("video", arr, fps=4.0)

    # the Decoder interface ------------------------------------------------------------------

    def _predict(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, ref: torch.Tensor | None) -> torch.Tensor:
        freqs = torch.exp(torch.linspace(0, -4, 8, device=x_t.device))
        angle = t[:, None].float() * freqs
        h = torch.cat([x_t, cond.mean(1), torch.sin(angle), torch.cos(angle)], -1)
        h = self.denoiser[0](h)
        if self.reference_in is not None and ref is not None:
            h = h + self.reference_in(ref)
        return self.denoiser[2](self.denoiser[1](h))  # predicts the clean signal

    def target_features(self, media: Sequence[Media]) -> torch.Tensor:
        x = self._batch(media, self.features.weight[0])
        return self.features(x).view(len(media), *self._cond_shape())

    def _cond_shape(self) -> tuple[int, int]:
        return self.condition.tokens, self.condition.dim

    def diffusion_loss(self, cond, media, reference=None, generator=None):
        x0 = self._batch(media, self.features.weight[0])
        ref = self._batch(reference, x0[0]) if reference is not None and self.reference_in is not None else None
        t = torch.randint(0, self.num_train_timesteps, (len(media),), generator=generator).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        a = self.alphas_cumprod[t][:, None]
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        return nn.functional.mse_loss(self._predict(x_t, t, cond.to(x0.dtype), ref), x0)

    @torch.no_grad()
    def generate(self, cond, reference=None, *, steps=None, guidance=None, generator=None, on_step=None):
        steps = steps or 10
        n = int(np.prod(self.signal_shape))
        x = per_item_noise((cond.shape[0], n), generator).to(cond.device)
        ref = self._batch(reference, x[0]) if reference is not None and self.reference_in is not None else None
        timesteps = torch.linspace(self.num_train_timesteps - 1, 0, steps).long()
        for i, t in enumerate(timesteps):  # deterministic DDIM with clean-signal prediction
            a = self.alphas_cumprod[t]
            x0 = self._predict(x, t.repeat(len(x)).to(x.device), cond.float(), ref).clamp(-1, 1)
            eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
            a_next = self.alphas_cumprod[timesteps[i + 1]] if i + 1 < steps else torch.tensor(1.0)
            x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
            if on_step is not None:
                on_step(i + 1, steps)
        return [self._to_media(row) for row in x]

    def adapter_parameters(self) -> dict[str, nn.Parameter]:
        return {"reference_in.weight": self.reference_in.weight} if self.reference_in is not None else {}


def tiny_components(*, modalities: Sequence[str] = ("image", "audio"), embed_dim: int = 16, hidden: int = 32, seed: int = 0) -> dict[str, Any]:
    """Encoders, an LLM and decoders for a whole tiny CoDi-2 model (see :meth:`CoDi2Model.from_components`)."""
    return {
        "encoders": [TinyEncoder(embed_dim, seed=seed)],
        "llm": TinyLLM(hidden, seed=seed),
        "decoders": {m: TinyDecoder(m, seed=seed + i) for i, m in enumerate(modalities)},
    }


def test_media(modality: str, seed: int = 0, size: int = 16) -> Media:
    """A random but valid media item (for contract checks)."""
    rng = np.random.default_rng(seed)
    if modality == "image":
        return Media("image", rng.integers(0, 256, (size, size, 3), dtype=np.uint8), name=f"image{seed}")
    if modality == "audio":
        t = np.arange(1600) / 16000
        return Media("audio", (0.5 * np.sin(2 * np.pi * (200 + 100 * seed) * t)).astype(np.float32), sample_rate=16000, name=f"audio{seed}")
    if modality == "video":
        return Media("video", rng.integers(0, 256, (3, size, size, 3), dtype=np.uint8), fps=4.0, name=f"video{seed}")
    if modality == "text":
        return Media("text", f"sample text {seed}", name=f"text{seed}")
    raise UnknownModalityError(f"no test media for {modality!r}")


test_media.__test__ = False  # not a pytest test
