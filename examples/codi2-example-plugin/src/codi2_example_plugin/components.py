"""The example plugin's components. Imported only from ``load_*``: this is where torch comes in.

- :class:`ExampleEncoder` (a ``codi2.plugins.base.FrozenEncoder``) encodes images and audio:
  simple signal statistics (mean colour, contrast, a 4x4 layout; band energies of the
  spectrum) through a fixed, seeded random projection, L2-normalised. Frozen, deterministic.
- :class:`ExampleDecoder` (a ``codi2.plugins.base.DecoderBase``) renders images: a small
  convolutional denoiser, conditioned through FiLM, trained as a diffusion model that
  predicts the clean image; ``generate`` samples with deterministic DDIM steps.

Both are ``torch.nn.Module`` so that codi2 can move, freeze and save them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from codi2.core.interfaces import check_state_dict
from codi2.core.types import ConditionSpec, Media
from codi2.errors import ComponentLoadError, UnknownModalityError
from codi2.plugins.base import DecoderBase, FrozenEncoder
from codi2_example_plugin import DecoderOptions, EncoderOptions

SAMPLE_RATE = 16000
_FFT = 512  # audio frame length for the spectrum
_BANDS = 16  # spectrum bands the audio features keep
_IMAGE_FEATURES = 3 + 3 + 16  # mean colour, colour contrast, 4x4 grey layout
_AUDIO_FEATURES = 2 + _BANDS  # loudness, zero-crossing rate, band energies
_TIME_FREQS = 4  # sinusoidal timestep features (x2: sin and cos)


def _seeded_linear(n_in: int, n_out: int, seed: int) -> nn.Linear:
    """A frozen Gaussian projection; the seed makes it the same in every process."""
    gen = torch.Generator().manual_seed(seed)
    layer = nn.Linear(n_in, n_out, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(n_out, n_in, generator=gen) / math.sqrt(n_in))
    return layer.requires_grad_(False)


def _image_tensor(item: Media) -> torch.Tensor:
    """A validated image Media (uint8 ``[H, W, 3]``) as float ``[3, H, W]`` in [0, 1]."""
    if item.modality != "image":
        raise UnknownModalityError(f"media {item.label} is {item.modality!r}, expected an image")
    return torch.from_numpy(np.ascontiguousarray(item.data)).permute(2, 0, 1).float() / 255.0


class ExampleEncoder(FrozenEncoder):
    """A frozen image + audio encoder built from signal statistics (no pretrained weights).
    ``FrozenEncoder`` supplies media loading, modality checks and the frozen contract."""

    name = "example-encoder"
    modalities = ("image", "audio")
    sample_rate = SAMPLE_RATE

    def __init__(self, options: EncoderOptions | None = None):
        super().__init__()
        self.options = options or EncoderOptions()
        self.embed_dim = self.options.embed_dim
        self.image_proj = _seeded_linear(_IMAGE_FEATURES, self.embed_dim, self.options.seed)
        self.audio_proj = _seeded_linear(_AUDIO_FEATURES, self.embed_dim, self.options.seed + 1)

    @property
    def identity(self) -> str:
        # bump "v1" whenever the features change, so cached encodings are recomputed
        return f"example-encoder/v1(embed_dim={self.embed_dim},seed={self.options.seed})"

    def tokens_per_item(self, modality: str) -> int:
        self.check_modality(modality)
        return 1

    @torch.no_grad()
    def encode(self, items: Sequence[Media], modality: str) -> torch.Tensor:
        items = self.check_items(items, modality)
        if modality == "image":
            proj, features = self.image_proj, [self._image_features(m) for m in items]
        else:
            proj, features = self.audio_proj, [self._audio_features(m) for m in items]
        x = torch.stack(features) if features else torch.zeros(0, proj.in_features)
        out = F.normalize(proj(x.to(proj.weight.device)), dim=-1)
        return out[:, None, :]  # [B, 1, embed_dim]

    @staticmethod
    def _image_features(item: Media) -> torch.Tensor:
        x = _image_tensor(item)
        mean = x.mean(dim=(1, 2))
        contrast = x.std(dim=(1, 2), unbiased=False)
        layout = F.adaptive_avg_pool2d(x.mean(0)[None, None], 4).flatten()
        return torch.cat([mean - 0.5, contrast, layout - 0.5])  # centred, so signs carry meaning

    @staticmethod
    def _audio_features(item: Media) -> torch.Tensor:
        if item.modality != "audio":
            raise UnknownModalityError(f"media {item.label} is {item.modality!r}, expected audio")
        x = torch.from_numpy(np.asarray(item.data, dtype=np.float32)).flatten()
        frames = F.pad(x, (0, max(_FFT - len(x), (-len(x)) % _FFT))).view(-1, _FFT)  # >= 1 frame
        power = torch.fft.rfft(frames * torch.hann_window(_FFT), dim=-1).abs().pow(2).mean(0)
        bands = torch.stack([b.sum() for b in power[1:].chunk(_BANDS)])
        loudness = x.pow(2).mean().sqrt() if len(x) else torch.tensor(0.0)
        crossings = (x[1:] * x[:-1] < 0).float().mean() if len(x) > 1 else torch.tensor(0.0)
        return torch.cat([torch.stack([loudness, crossings]), torch.log10(bands + 1e-10) / 10])


def _alpha_bar(t: torch.Tensor) -> torch.Tensor:
    """Cosine noise schedule on continuous time ``t`` in [0, 1] (0 = clean, 1 = pure noise)."""
    return torch.cos(t * math.pi / 2).pow(2).clamp(1e-4, 1 - 1e-4)


class ExampleDecoder(DecoderBase):
    """A tiny conditional diffusion model for images (pixel space, ``image_size`` squared).
    ``DecoderBase`` supplies the trainable policy (``full`` trains every layer but the frozen
    ``target_proj``), the trained state and its checks, and the input checks."""

    name = "example-decoder"
    modality = "image"
    supports_reference = False
    frozen_parts = ("target_proj",)

    def __init__(self, options: DecoderOptions | None = None):
        super().__init__()
        o = self.options = options or DecoderOptions()
        self.condition = ConditionSpec(tokens=o.tokens, dim=o.cond_dim)
        with torch.random.fork_rng(devices=[]):  # seeded init without touching global RNG
            torch.manual_seed(o.seed)
            self.conv_in = nn.Conv2d(3, o.channels, 3, padding=1)
            self.film = nn.Linear(o.tokens * o.cond_dim + 2 * _TIME_FREQS, 2 * o.channels)
            self.conv_mid = nn.Conv2d(o.channels, o.channels, 3, padding=1)
            self.conv_out = nn.Conv2d(o.channels, 3, 3, padding=1)
        # C_x(x) of the paper: the conditioning the LLM should produce for image x. Here a
        # fixed projection of the image's 4x4 colour layout (not trained, not saved).
        self.target_proj = _seeded_linear(3 * 4 * 4, o.tokens * o.cond_dim, o.seed + 1)
        self.set_trainable("frozen")

    # --- helpers ----------------------------------------------------------------------------

    def _pixels(self, media: Sequence[Media]) -> torch.Tensor:
        size = self.options.image_size
        rows = [F.interpolate(_image_tensor(m)[None], size=(size, size), mode="area")[0] for m in media]
        return torch.stack(rows) * 2 - 1  # [B, 3, S, S] in [-1, 1]

    def _denoise(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Predict the clean image from noisy ``x_t`` at times ``t [B]`` (x0-prediction learns
        much faster than noise prediction for nets this small)."""
        freqs = (2.0 ** torch.arange(_TIME_FREQS, device=t.device)) * math.pi
        time = torch.cat([torch.sin(t[:, None] * freqs), torch.cos(t[:, None] * freqs)], -1)
        scale, shift = self.film(torch.cat([cond.flatten(1), time], -1)).chunk(2, dim=-1)
        h = F.silu(self.conv_in(x_t))
        h = h * (1 + scale[..., None, None]) + shift[..., None, None]
        return self.conv_out(F.silu(self.conv_mid(h)))

    # --- the Decoder interface ----------------------------------------------------------------

    def target_features(self, media: Sequence[Media]) -> torch.Tensor:
        layout = F.adaptive_avg_pool2d(self._pixels(media), 4).flatten(1)
        out = self.target_proj(layout.to(self.target_proj.weight.device))
        return out.view(len(media), self.condition.tokens, self.condition.dim)

    def diffusion_loss(
        self,
        cond: torch.Tensor,
        media: Sequence[Media],
        reference: Sequence[Media | None] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        self.check_cond(cond, batch=len(media))
        self.check_reference(reference)
        x0 = self._pixels(self.check_media(media)).to(cond.device, cond.dtype)
        # draw on the CPU generator, then move: the same seed gives the same loss on any device
        t = torch.rand(len(media), generator=generator).to(cond.device, cond.dtype)
        noise = torch.randn(x0.shape, generator=generator).to(cond.device, cond.dtype)
        ab = _alpha_bar(t)[:, None, None, None]
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        return F.mse_loss(self._denoise(x_t, t, cond), x0)

    @torch.no_grad()
    def generate(
        self,
        cond: torch.Tensor,
        reference: Sequence[Media | None] | None = None,
        *,
        steps: int | None = None,
        guidance: float | None = None,
        generator: torch.Generator | None = None,
    ) -> list[Media]:
        self.check_cond(cond)
        self.check_reference(reference)
        size, steps = self.options.image_size, steps or self.options.steps
        x = torch.randn((len(cond), 3, size, size), generator=generator).to(cond.device, cond.dtype)
        times = torch.linspace(1, 0, steps + 1, device=cond.device)
        for t, t_next in zip(times[:-1], times[1:]):  # deterministic DDIM
            x0 = self._guided(x, t.expand(len(x)), cond, guidance).clamp(-1, 1)
            ab, ab_next = _alpha_bar(t), _alpha_bar(t_next)
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
            x = ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps
        pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return [Media("image", np.ascontiguousarray(p)) for p in pixels]

    def _guided(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, guidance: float | None) -> torch.Tensor:
        """Classifier-free guidance against the all-zero conditioning."""
        pred = self._denoise(x, t, cond)
        if guidance is None or guidance == 1.0:
            return pred
        free = self._denoise(x, t, torch.zeros_like(cond))
        return free + guidance * (pred - free)

    # --- weights files (the ``weights`` option) -----------------------------------------------

    def save_weights(self, path: str | Path) -> Path:
        """Write the denoiser's weights as safetensors (what ``options.weights`` reads back)."""
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items() if not k.startswith("target_proj.")}
        save_file(state, str(path))
        return Path(path)

    def load_weights(self, path: str | Path) -> None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise ComponentLoadError(f"decoder {self.name!r}: weights file {path} not found")
        try:
            state = load_file(str(path))
        except SafetensorError as exc:
            raise ComponentLoadError(f"decoder {self.name!r}: {path} is not a safetensors file: {exc}") from None
        expected = {k: v for k, v in self.state_dict().items() if not k.startswith("target_proj.")}
        check_state_dict(state, expected, f"decoder {self.name!r} ({path})")  # missing, unknown, misshapen
        self.load_state_dict(state, strict=False)
