"""``toy-image-decoder`` and ``toy-audio-decoder``: small diffusion models on toy-encoder embeddings.

Both wrap a stock diffusers ``UNet2DModel`` and its schedulers; they differ in the signal and in
how the UNet reads it:

- image: RGB 32 x 32 in [-1, 1], a three-level pixel-space UNet;
- audio: a log-mel spectrogram (128 mel bands of a 1024-point STFT with hop 256, averaged over
  4 frames: 16 frames of 64 ms for the 1-second item), scaled to about [-1, 1]. The UNet runs
  along the 16 frames with the 128 bands as its channels (see :meth:`ToyAudioDecoder.build_unet`
  for why). The waveform comes back through a non-negative least-squares inversion of the mel
  filterbank and Griffin-Lim phase recovery (:func:`mel_to_wave`).

Training predicts the clean signal ("sample" prediction): on these CPUs noise prediction learnt
nothing usable in the same time (docs/toy-model.md). The conditioning — the paper's ``C_x(x)``,
here the toy encoder's unit embedding of the item — goes through a small MLP into the UNet's
class embedding (added to the timestep embedding). Sampling is deterministic DDIM.
``target_features`` runs the decoder's own copy of the encoder (memoised per content hash:
the world is small).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from codi2.core.interfaces import check_state_dict, per_item_noise
from codi2.core.types import ConditionSpec, Media
from codi2.errors import CheckpointError, ComponentLoadError, ConfigError, MediaError
from codi2.plugins.base import DecoderBase

SAMPLE_RATE = 16000
AUDIO_SAMPLES = 16000
N_FFT, HOP, MELS, POOL = 1024, 256, 128, 4
STFT_FRAMES = AUDIO_SAMPLES // HOP + 1  # 63 centred frames
AUDIO_FRAMES = 16
LOG_FLOOR = 1e-4
# log-mel values of the world span about [-9.2, 5.0] (natural log); this maps them into [-1, 1]
LOG_CENTER, LOG_SCALE = -2.0, 7.5
#: multiplicative-update iterations of the mel -> linear inversion (:func:`mel_to_wave`)
NNLS_ITERS = 200


class ToyDiffusionDecoder(DecoderBase):
    """The shared diffusion machinery; subclasses define the signal <-> media transforms.
    ``DecoderBase`` gives the trainable policy: ``full`` fine-tunes the UNet and conditioning
    MLP (the packaged weights file is the backbone), the toy encoder never trains."""

    supports_reference = False
    frozen_parts = ("encoder",)
    modality = "image"
    name = "toy-decoder"
    in_channels = 3
    sample_size: tuple[int, int] = (32, 32)
    default_channels: tuple[int, ...] = (16, 32, 32)

    def __init__(self, options: Any, encoder: nn.Module):
        super().__init__()
        torch.manual_seed(options.seed)
        self.options = options
        self.encoder = encoder
        self.condition = ConditionSpec(1, encoder.embed_dim)
        channels = tuple(options.channels or self.default_channels)
        self.unet = self.build_unet(channels)
        time_dim = channels[0] * 4
        self.cond_mlp = nn.Sequential(nn.Linear(encoder.embed_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.scheduler_config = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "sample", "clip_sample": True}
        from diffusers import DDPMScheduler

        self.register_buffer("alphas_cumprod", DDPMScheduler(**self.scheduler_config).alphas_cumprod.clone(), persistent=False)
        self._targets: dict[str, torch.Tensor] = {}
        self.policy = "frozen"
        self.set_trainable("frozen")
        self.eval()

    def build_unet(self, channels: tuple[int, ...]) -> nn.Module:
        """A pixel-space UNet, one level per entry of ``channels``."""
        from diffusers import UNet2DModel

        down = ["DownBlock2D"] * len(channels)
        up = ["UpBlock2D"] * len(channels)
        if self.options.attention:  # attention at the coarsest level only: cheap and enough for this world
            down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
        return UNet2DModel(
            sample_size=self.sample_size, in_channels=self.in_channels, out_channels=self.in_channels,
            block_out_channels=channels, layers_per_block=1, down_block_types=tuple(down), up_block_types=tuple(up),
            norm_num_groups=8, class_embed_type="identity", attention_head_dim=8,
        )

    @classmethod
    def from_options(cls, options: Any, weights_path: str, encoder_weights: str) -> ToyDiffusionDecoder:
        from codi2.plugins.toy import ToyEncoderOptions
        from codi2.plugins.toy.encoder import ToyEncoder

        enc_options = ToyEncoderOptions.model_validate(options.encoder.model_dump())
        decoder = cls(options, ToyEncoder.from_options(enc_options, encoder_weights))
        if not options.random_init:
            decoder.load_weights(weights_path)
        return decoder

    # --- weights ------------------------------------------------------------------------------

    def network_state(self) -> dict[str, torch.Tensor]:
        """The decoder's own weights (UNet + conditioning MLP), without the encoder."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(("unet.", "cond_mlp."))}

    def load_weights(self, path: str | Path) -> None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise ComponentLoadError(f"decoder {self.name!r}: weights file {path} does not exist (train it with `codi2 train --preset toy`)")
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise ComponentLoadError(f"decoder {self.name!r}: cannot read {path}: {exc}") from None
        try:
            self._load_network(state)
        except CheckpointError as exc:
            raise ComponentLoadError(f"{exc} (in {path}; check options.channels)") from None

    def save_weights(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in self.network_state().items()}, str(path),
                  metadata={"format": f"codi2-{self.name}"})
        return path

    def _load_network(self, state: Mapping[str, torch.Tensor]) -> None:
        check_state_dict(state, self.network_state(), f"decoder {self.name!r}")
        self.load_state_dict(dict(state), strict=False)

    # --- signals (subclasses) -----------------------------------------------------------------

    def to_signal(self, item: Media) -> torch.Tensor:
        raise NotImplementedError

    def to_media(self, signal: torch.Tensor, generator: torch.Generator | None) -> Media:
        raise NotImplementedError

    def signals(self, media: Sequence[Media]) -> torch.Tensor:
        device = self.alphas_cumprod.device
        for index, item in enumerate(media):
            if not isinstance(item, Media) or item.modality != self.modality:
                raise MediaError(f"decoder {self.name!r} takes {self.modality} Media", item=getattr(item, "label", f"#{index}"))
        return torch.stack([self.to_signal(m) for m in media]).to(device)

    # --- the Decoder interface ----------------------------------------------------------------

    def target_features(self, media: Sequence[Media]) -> torch.Tensor:
        """The toy encoder's embedding of each item ``[B, 1, D]`` (memoised by content)."""
        keys = [m.content_hash() for m in media]
        missing = [i for i, k in enumerate(keys) if k not in self._targets]
        if missing:
            feats = self.encoder.encode([media[i] for i in missing], self.modality)
            for i, f in zip(missing, feats):
                self._targets[keys[i]] = f.detach().cpu()
        return torch.stack([self._targets[k] for k in keys]).to(self.alphas_cumprod.device)

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The UNet's clean-signal estimate for ``x_t`` at timesteps ``t`` given ``cond [B, N, D]``."""
        return self.unet(x_t, t, class_labels=self.cond_mlp(cond.float().mean(1))).sample

    per_item_generators = True  # generate() takes one generator per row, like diffusers pipelines

    def diffusion_loss(self, cond, media, reference=None, generator=None, *, signals: torch.Tensor | None = None):
        """MSE between the clean signal and its estimate from a noised copy (x0 prediction).
        ``signals`` skips the media transform (training on a precomputed batch)."""
        x0 = self.signals(media) if signals is None else signals
        n = len(x0)
        t = torch.randint(0, len(self.alphas_cumprod), (n,), generator=generator).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        a = self.alphas_cumprod[t].view(n, *[1] * (x0.dim() - 1))
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        return F.mse_loss(self.denoise(x_t, t, cond.to(x0.device)), x0)

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, *, steps: int | None = None, generator: torch.Generator | None = None,
               on_step: Any = None) -> torch.Tensor:
        """DDIM (eta 0) from Gaussian noise: clean signals ``[B, C, H, W]``; ``on_step(done, total)``
        is called after each step."""
        from diffusers import DDIMScheduler

        scheduler = DDIMScheduler(**self.scheduler_config)
        scheduler.set_timesteps(steps or self.options.steps)
        device = self.alphas_cumprod.device
        x = per_item_noise((len(cond), self.in_channels, *self.sample_size), generator).to(device)
        for i, t in enumerate(scheduler.timesteps):
            estimate = self.denoise(x, t.expand(len(x)).to(device), cond.to(device))
            x = scheduler.step(estimate, t, x).prev_sample
            if on_step is not None:
                on_step(i + 1, len(scheduler.timesteps))
        return x.clamp(-1, 1)

    @torch.no_grad()
    def generate(self, cond, reference=None, *, steps=None, guidance=None, generator=None, on_step=None) -> list[Media]:
        """One item per row of ``cond [B, N, D]``; ``guidance`` is not used (no unconditional
        branch was trained), ``reference`` neither (no fidelity path)."""
        signals = self.sample(cond, steps=steps, generator=generator, on_step=on_step).cpu()
        if isinstance(generator, (list, tuple)):
            return self.to_media_batch(signals, list(generator))
        return [self.to_media(s, generator) for s in signals]

    def to_media_batch(self, signals: torch.Tensor, generators: list) -> list[Media]:
        return [self.to_media(s, g) for s, g in zip(signals, generators)]


class ToyImageDecoder(ToyDiffusionDecoder):
    """32 x 32 RGB images."""

    name = "toy-image-decoder"
    modality = "image"
    in_channels = 3
    sample_size = (32, 32)

    def to_signal(self, item: Media) -> torch.Tensor:
        data = np.asarray(item.data)
        if data.ndim != 3 or data.shape[-1] != 3:
            raise MediaError(f"image must be [H, W, 3], got {data.shape}", item=item.label)
        x = torch.from_numpy(np.ascontiguousarray(data, dtype=np.uint8)).permute(2, 0, 1).float() / 127.5 - 1
        if x.shape[1:] != self.sample_size:
            x = F.interpolate(x[None], size=self.sample_size, mode="bilinear", antialias=True, align_corners=False)[0]
        return x

    def to_media(self, signal: torch.Tensor, generator: torch.Generator | None) -> Media:
        pixels = ((signal.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
        return Media("image", pixels)


class ToyAudioDecoder(ToyDiffusionDecoder):
    """1-second 16 kHz audio through a log-mel spectrogram (see the module docstring)."""

    name = "toy-audio-decoder"
    modality = "audio"
    in_channels = 1
    sample_size = (MELS, AUDIO_FRAMES)
    default_channels = (64,)

    def __init__(self, options: Any, encoder: nn.Module):
        super().__init__(options, encoder)
        from codi2.core.audio import mel_banks

        banks = mel_banks(MELS, N_FFT, SAMPLE_RATE, 20.0, SAMPLE_RATE / 2)  # [mels, N_FFT/2 + 1]
        self.register_buffer("mel_fb", banks, persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)

    def build_unet(self, channels: tuple[int, ...]) -> nn.Module:
        """A UNet along the time axis with the 128 mel bands as its input and output channels.

        The conditioning reaches a UNet as a per-channel bias, the same at every position; with
        the bands as channels, "a tone at G4" is a bias on the right channels. As a 128 x 16
        image the pitch would be a line at one *height*, which convolutions cannot place without
        knowing where they are (measured: that UNet learnt the average spectrogram and about 4 % of
        the sounds in 4-6 minutes; this one 94 % in 2 minutes, at 6x the steps per second). The
        time axis is the UNet's height and its width is 1, so there is one level (no
        down-sampling), and the side columns of its 3 x 3 kernels only ever see padding."""
        from diffusers import UNet2DModel

        if len(channels) != 1:
            raise ConfigError(f"decoder {self.name!r}: channels must hold one width (the UNet has one level along the "
                              f"16 time frames), got {list(channels)}")
        return UNet2DModel(
            sample_size=(AUDIO_FRAMES, 1), in_channels=MELS, out_channels=MELS, block_out_channels=channels,
            layers_per_block=2, down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",),
            norm_num_groups=8, class_embed_type="identity", attention_head_dim=8,
        )

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        bands_as_channels = x_t[:, 0, :, :, None]  # [B, 1, 128, 16] -> [B, 128, 16, 1]
        return super().denoise(bands_as_channels, t, cond)[..., 0][:, None]

    def to_signal(self, item: Media) -> torch.Tensor:
        return log_mel(item, self.mel_fb.cpu(), self.window.cpu())

    def to_media(self, signal: torch.Tensor, generator: torch.Generator | None) -> Media:
        wave = mel_to_wave(signal, self.mel_fb.cpu(), self.window.cpu(), self.options.griffin_lim_iters, generator)
        return Media("audio", wave, sample_rate=SAMPLE_RATE)

    def to_media_batch(self, signals: torch.Tensor, generators: list) -> list[Media]:
        """All items' inversions in one batched Griffin-Lim."""
        waves = mel_to_wave(signals, self.mel_fb.cpu(), self.window.cpu(), self.options.griffin_lim_iters, generators)
        return [Media("audio", wave, sample_rate=SAMPLE_RATE) for wave in waves]


# --- audio transforms --------------------------------------------------------------------------


def waveform(item: Media) -> torch.Tensor:
    """The item as exactly 1 s of 16 kHz float samples (resampled, cut or zero-padded)."""
    data = np.asarray(item.data, dtype=np.float32)
    if data.ndim != 1:
        raise MediaError(f"audio must be mono [samples], got shape {data.shape}", item=item.label)
    if item.sample_rate != SAMPLE_RATE:
        if not item.sample_rate:
            raise MediaError("audio item has no sample_rate", item=item.label)
        from codi2.core.audio import resample

        data = resample(data, item.sample_rate, SAMPLE_RATE)
    wave = torch.zeros(AUDIO_SAMPLES)
    n = min(len(data), AUDIO_SAMPLES)
    wave[:n] = torch.from_numpy(np.ascontiguousarray(data[:n]))
    return wave


def log_mel(item: Media, mel_fb: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """``[1, 128, 16]``: scaled log-mel power of the item, 4 STFT frames per column."""
    spec = torch.stft(waveform(item), N_FFT, HOP, window=window, return_complex=True).abs()  # [513, 63]
    mel = mel_fb @ spec
    mel = F.pad(mel, (0, AUDIO_FRAMES * POOL - mel.shape[1]), mode="replicate")
    mel = F.avg_pool1d(mel[None], POOL)[0]
    return ((torch.log(mel + LOG_FLOOR) - LOG_CENTER) / LOG_SCALE)[None]


def mel_to_wave(signal: torch.Tensor, mel_fb: torch.Tensor, window: torch.Tensor, iters: int,
                generator: torch.Generator | None, nnls_iters: int = NNLS_ITERS) -> np.ndarray:
    """Invert :func:`log_mel`: mel magnitudes -> linear magnitudes -> waveform by Griffin-Lim.

    The linear magnitudes are the non-negative least-squares solution of ``mel_fb @ x = mel``
    (multiplicative updates, Lee & Seung 2001, from a flat start). A clipped pseudo-inverse
    smears each harmonic over the width of its (wide, at high frequencies) mel band; the
    non-negative solution keeps the lines narrow. Measured on the 54 clean world sounds, log-
    spectral distance of the round trip: mean 0.324 -> 0.249, square waves 0.497 -> 0.340.

    A batch ``[B, 1, 128, 16]`` with one generator per item is inverted at once (``[B, samples]``);
    each row equals its own inversion."""
    mel = (torch.exp(signal.float()[..., 0, :, :] * LOG_SCALE + LOG_CENTER) - LOG_FLOOR).clamp(min=0)  # [(B,) 128, 16]
    mel = mel.repeat_interleave(POOL, dim=-1)[..., :STFT_FRAMES]
    start = mel.mean(dim=(-2, -1), keepdim=True) + 1e-8
    magnitude = start.expand(*mel.shape[:-2], mel_fb.shape[1], mel.shape[-1]).clone()
    # The filterbank is 1.5 % non-zero (each FFT bin feeds at most two triangular bands): as a
    # sparse matrix over every item's frames side by side ([bins, items * frames]) the 200
    # iterations cost about a quarter of the dense products, with the same result to ~1e-7.
    shape = magnitude.shape
    columns = lambda x: x.movedim(-2, 0).reshape(x.shape[-2], -1)  # noqa: E731
    with warnings.catch_warnings():  # torch flags its CSR layout "beta"; the product is plain
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        fb, fb_t = mel_fb.to_sparse_csr(), mel_fb.T.contiguous().to_sparse_csr()
    flat, target = columns(magnitude), fb_t @ columns(mel)
    for _ in range(nnls_iters):
        flat = flat * target / (fb_t @ (fb @ flat) + 1e-10)
    magnitude = flat.reshape(shape[-2], *shape[:-2], shape[-1]).movedim(0, -2)
    return griffin_lim(magnitude, window, iters, generator)


def griffin_lim(magnitude: torch.Tensor, window: torch.Tensor, iters: int, generator: Any,
                momentum: float = 0.99) -> np.ndarray:
    """Phase recovery (fast Griffin-Lim, Perraudin et al. 2013) for a ``[(B,) 513, frames]``
    magnitude (``generator``: one, or a list of one per item of a batch)."""
    if isinstance(generator, (list, tuple)):
        phase = torch.stack([torch.rand(magnitude.shape[1:], generator=g) for g in generator]) * 2 * np.pi
    else:
        phase = torch.rand(magnitude.shape, generator=generator) * 2 * np.pi
    angles = torch.polar(torch.ones_like(magnitude), phase)
    previous = torch.zeros_like(angles)
    for _ in range(iters):
        wave = torch.istft(magnitude * angles, N_FFT, HOP, window=window, length=AUDIO_SAMPLES)
        rebuilt = torch.stft(wave, N_FFT, HOP, window=window, return_complex=True)
        angles = rebuilt - (momentum / (1 + momentum)) * previous
        angles = angles / angles.abs().clamp(min=1e-8)
        previous = rebuilt
    wave = torch.istft(magnitude * angles, N_FFT, HOP, window=window, length=AUDIO_SAMPLES)
    return wave.clamp(-1, 1).numpy().astype(np.float32)
