"""The ``audioldm2`` decoder component (imported lazily by :mod:`.audioldm2`).

Wraps diffusers' stock ``AudioLDM2Pipeline``: sampling calls the pipeline with precomputed
embeddings; training and ``target_features`` reuse the pipeline's own modules. The design
choices (which stream the LLM drives, the greedy GPT-2 loop, the mel front end) are explained
in the docstring of :mod:`codi2.plugins.decoders.audioldm2`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.nn import functional as F

from codi2.core.types import ConditionSpec, Media
from codi2.errors import ComponentLoadError, ConfigError, MediaError
from codi2.plugins.base import (
    DiffusersDecoder,
    check_cond,
    check_media,
    check_no_reference,
    noise_and_timesteps,
    prediction_target,
    resolve_device,
    step_callback,
)
from codi2.plugins.decoders._sd_unclip_impl import widen_conv_in

if TYPE_CHECKING:
    from codi2.plugins.decoders.audioldm2 import AudioLDM2Options

NAME = "audioldm2"


# --- the mel front end of AudioLDM2's training data ----------------------------------------


@dataclass(frozen=True)
class MelSettings:
    """AudioLDM2's STFT/mel settings. The vocoder fixes the rate, the hop (the product of its
    upsampling rates) and the number of mel bins; FFT and window sizes are AudioLDM2's 1024."""

    sample_rate: int
    hop: int
    n_mels: int
    n_fft: int = 1024
    win: int = 1024
    fmin: float = 0.0
    fmax: float | None = None  # None = Nyquist (8 kHz at 16 kHz)

    @classmethod
    def from_vocoder(cls, config: Any) -> MelSettings:
        return cls(int(config.sampling_rate), int(np.prod(config.upsample_rates)), int(config.model_in_dim))

    def filters(self) -> torch.Tensor:
        """Slaney-style mel filterbank ``[n_fft // 2 + 1, n_mels]`` — librosa's default
        (``librosa.filters.mel(htk=False, norm="slaney")``), via transformers' implementation."""
        from transformers.audio_utils import mel_filter_bank

        bank = mel_filter_bank(
            num_frequency_bins=self.n_fft // 2 + 1, num_mel_filters=self.n_mels, min_frequency=self.fmin,
            max_frequency=self.fmax or self.sample_rate / 2, sampling_rate=self.sample_rate,
            norm="slaney", mel_scale="slaney",
        )
        return torch.from_numpy(bank.astype(np.float32))


def log_mel(waves: torch.Tensor, settings: MelSettings, filters: torch.Tensor) -> torch.Tensor:
    """Log-mel spectrogram ``[B, frames, n_mels]`` of ``waves [B, samples]``, as AudioLDM2
    computes its training targets (HiFi-GAN convention): reflect-pad by ``(n_fft - hop) / 2``,
    magnitude STFT with a periodic Hann window and no centring, mel projection, natural log
    floored at 1e-5. ``samples / hop`` frames come out for a whole number of hops."""
    pad = (settings.n_fft - settings.hop) // 2
    x = F.pad(waves[:, None].float(), (pad, pad), mode="reflect")[:, 0]
    window = torch.hann_window(settings.win, device=x.device)
    spec = torch.stft(
        x, settings.n_fft, hop_length=settings.hop, win_length=settings.win, window=window,
        center=False, return_complex=True,
    ).abs()
    mel = torch.matmul(filters.to(x.device).T, spec)
    return torch.log(torch.clamp(mel, min=1e-5)).transpose(1, 2)


def normalize_wave(wave: np.ndarray) -> np.ndarray:
    """AudioLDM's loudness convention: remove DC, peak-normalise to 0.5."""
    wave = wave - wave.mean()
    return (wave / (np.abs(wave).max() + 1e-8) * 0.5).astype(np.float32)


def language_model_vectors(
    language_model: Any, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, steps: int
) -> torch.Tensor:
    """AudioLDM2's "language of audio": ``steps`` greedy continuation vectors ``[B, steps, H]``.

    The procedure of the pipeline's ``generate_language_model``: the language model's last
    hidden state (after its final norm) at the last position is appended as the next input,
    ``steps`` times, and the appended vectors are returned. Written out here because the stock
    method calls generation helpers that a bare ``GPT2Model`` (the released checkpoint's class)
    lacks under transformers 5. Each step re-runs the whole (short) sequence without a KV cache:
    the same numbers for a causal model, and no dependence on the cache API, which transformers
    is renaming. Positions are ``0..L-1`` as in the pipeline (no position ids are passed).
    """
    batch = inputs_embeds.shape[0]
    for _ in range(steps):
        out = language_model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False,
            output_hidden_states=True, return_dict=True,
        )
        inputs_embeds = torch.cat([inputs_embeds, out.hidden_states[-1][:, -1:]], dim=1)
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(batch, 1)], dim=1)
    return inputs_embeds[:, -steps:]


def _pooled(output: Any) -> torch.Tensor:
    # transformers 5 returns a model output with the projected vector in pooler_output; 4.x a tensor
    return output.pooler_output if hasattr(output, "pooler_output") else output


# --- the component -------------------------------------------------------------------------


class AudioLDM2Decoder(DiffusersDecoder):
    """AudioLDM2 as a codi2 :class:`~codi2.core.interfaces.Decoder`.

    ``condition`` is the GPT-2 stream: ``max_new_tokens`` (8) vectors of the language model's
    hidden size (768 for ``cvssp/audioldm2``). ``self.pipeline`` is the stock pipeline; its
    modules are registered as submodules so ``.to()`` and ``.parameters()`` reach them.
    """

    name = NAME
    modality = "audio"
    per_item_generators = True  # generate() passes one generator per row to the stock pipeline
    supports_reference = False
    frozen_parts = ("vae", "vocoder", "text_encoder", "text_encoder_2", "projection_model", "language_model")

    def __init__(self, pipeline: Any, options: AudioLDM2Options):
        super().__init__()
        from diffusers import DDPMScheduler
        from transformers import VitsModel

        if isinstance(pipeline.text_encoder_2, VitsModel):
            raise ComponentLoadError(
                f"decoder {NAME!r}: {options.model!r} is a text-to-speech AudioLDM2 (VITS encoder); not supported"
            )
        self.pipeline, self.options = pipeline, options
        self.unet, self.vae, self.vocoder = pipeline.unet, pipeline.vae, pipeline.vocoder
        self.text_encoder, self.text_encoder_2 = pipeline.text_encoder, pipeline.text_encoder_2
        self.projection_model, self.language_model = pipeline.projection_model, pipeline.language_model
        self.tokenizer, self.tokenizer_2 = pipeline.tokenizer, pipeline.tokenizer_2
        self.feature_extractor = pipeline.feature_extractor

        lm_config = self.language_model.config
        tokens = int(getattr(lm_config, "max_new_tokens", None) or 8)
        self.condition = ConditionSpec(tokens=tokens, dim=int(lm_config.hidden_size))
        self.mel = MelSettings.from_vocoder(self.vocoder.config)
        self.sample_rate = self.mel.sample_rate
        # the pipeline's length arithmetic: whole latent rows of `hop`-sample mel frames
        scale, frame_seconds = pipeline.vae_scale_factor, self.mel.hop / self.sample_rate
        seconds = options.audio_length_in_s or self.unet.config.sample_size * scale * frame_seconds
        self.frames = int(np.ceil(int(seconds / frame_seconds) / scale)) * scale
        self.audio_length_in_s = seconds
        # training noises latents with the DDPM forward process of the pipeline's scheduler config
        self.train_scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)

        # the paper's fidelity path (§5.1): reference mel latents concatenated to the UNet input
        self.supports_reference = options.fidelity
        self.latent_channels = int(self.vae.config.latent_channels)
        in_channels = self.unet.conv_in.in_channels
        expected = 2 * self.latent_channels if options.fidelity else self.latent_channels
        if options.fidelity and in_channels == self.latent_channels:
            widen_conv_in(self.unet, self.latent_channels)
        elif in_channels != expected:
            raise ComponentLoadError(
                f"decoder {NAME!r}: the UNet takes {in_channels} input channels, expected {expected} "
                f"(fidelity={options.fidelity}, {self.latent_channels} latent channels)"
            )

        self.register_buffer("mel_filters", self.mel.filters(), persistent=False)
        self.to(resolve_device(options.device))
        with torch.no_grad():
            t5, t5_mask, clap_text = self._encode_empty_prompt()
            self.register_buffer("t5_empty", t5, persistent=False)
            self.register_buffer("t5_empty_mask", t5_mask, persistent=False)
            # the pipeline's own unconditional GPT-2 stream (empty prompt), for guidance
            self.register_buffer("generated_empty", self._lm_vectors(clap_text), persistent=False)
        self.set_trainable(options.trainable)
        self.train(False)

    @classmethod
    def from_options(cls, options: AudioLDM2Options) -> AudioLDM2Decoder:
        from diffusers import AudioLDM2Pipeline

        return cls(cls.load_pipeline(AudioLDM2Pipeline, NAME, options), options)

    # --- conditioning pieces ---------------------------------------------------------------

    def _encode_empty_prompt(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """T5 hidden states + mask and the CLAP text vector of the empty prompt, tokenized the
        way the pipeline tokenizes prompts."""
        device = self.device
        tok = self.tokenizer(
            [""], padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt"
        )
        clap = self.text_encoder.get_text_features(tok.input_ids.to(device), attention_mask=tok.attention_mask.to(device))
        clap = _pooled(clap)
        tok2 = self.tokenizer_2(
            [""], padding=True, max_length=self.tokenizer_2.model_max_length, truncation=True, return_tensors="pt"
        )
        mask = tok2.attention_mask.to(device)
        t5 = self.text_encoder_2(tok2.input_ids.to(device), attention_mask=mask)[0]
        return t5, mask, clap[:, None, :]

    def _t5(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.t5_empty.expand(batch, -1, -1), self.t5_empty_mask.expand(batch, -1)

    def _lm_vectors(self, clap: torch.Tensor) -> torch.Tensor:
        """CLAP vectors ``[B, 1, D]`` (+ the empty T5 stream) -> projection -> GPT-2 vectors."""
        batch = clap.shape[0]
        t5, t5_mask = self._t5(batch)
        projected = self.projection_model(
            hidden_states=clap.to(self.projection_model.dtype), hidden_states_1=t5,
            attention_mask=t5_mask.new_ones(batch, 1), attention_mask_1=t5_mask,
        )
        return language_model_vectors(
            self.language_model, projected.hidden_states, projected.attention_mask, self.condition.tokens
        )

    # --- audio ------------------------------------------------------------------------------

    def _wave(self, item: Media, rate: int, max_seconds: float | None = None) -> np.ndarray:
        """Validated mono float32 wave of ``item``, resampled to ``rate``, loudness-normalised."""
        from codi2.core.audio import resample

        check_media(NAME, item, "audio")
        data = np.asarray(item.data, dtype=np.float32)
        if data.ndim != 1 or data.size == 0 or not item.sample_rate:
            raise MediaError(
                f"audio must be a non-empty 1-D wave with a sample_rate, got shape {data.shape}, "
                f"rate {item.sample_rate}",
                item=item.label,
            )
        if max_seconds is not None:
            data = data[: int(max_seconds * item.sample_rate)]
        return normalize_wave(resample(data, int(item.sample_rate), rate))

    @torch.no_grad()
    def mel_spectrogram(self, media: Sequence[Media]) -> torch.Tensor:
        """The VAE's input ``[B, 1, frames, n_mels]``: each item at the vocoder's rate, padded
        with silence or cut to the configured length, as a log-mel spectrogram."""
        samples = self.frames * self.mel.hop
        waves = []
        for item in media:
            wave = self._wave(item, self.sample_rate)[:samples]
            waves.append(np.pad(wave, (0, samples - len(wave))))
        mel = log_mel(torch.from_numpy(np.stack(waves)).to(self.device), self.mel, self.mel_filters)
        return mel[:, None, : self.frames]

    @torch.no_grad()
    def _latents(self, media: Sequence[Media], generator: torch.Generator | None) -> torch.Tensor:
        mel = self.mel_spectrogram(media).to(self.vae.dtype)
        latents = self.vae.encode(mel).latent_dist.sample(generator)
        return latents * self.vae.config.scaling_factor

    @torch.no_grad()
    def _reference_latents(self, reference: Sequence[Media | None] | None, rows: int) -> torch.Tensor | None:
        """Scaled VAE latents (distribution mode) of the reference clips' mel spectrograms,
        zeros where a row has none; ``None`` without fidelity."""
        if not self.supports_reference:
            check_no_reference(NAME, reference)
            return None
        scale = self.pipeline.vae_scale_factor
        shape = (rows, self.latent_channels, self.frames // scale, self.mel.n_mels // scale)
        latents = torch.zeros(shape, device=self.device, dtype=self.unet.dtype)
        if reference is None:
            return latents
        if len(reference) != rows:
            raise ValueError(f"decoder {NAME!r}: {len(reference)} references for {rows} rows")
        present = [i for i, r in enumerate(reference) if r is not None]
        if present:
            mel = self.mel_spectrogram([reference[i] for i in present]).to(self.vae.dtype)
            encoded = self.vae.encode(mel).latent_dist.mode() * self.vae.config.scaling_factor
            latents[present] = encoded.to(latents.dtype)
        return latents

    def adapter_parameters(self) -> dict[str, torch.nn.Parameter]:
        """The widened ``conv_in`` (with fidelity): what the ``adapters`` policy trains and saves."""
        if not self.supports_reference:
            return {}
        return {f"unet.conv_in.{k}": v for k, v in self.unet.conv_in.named_parameters()}

    def set_trainable(self, policy: str) -> None:
        if policy == "adapters" and not self.supports_reference:
            raise ConfigError(f"decoder {NAME!r}: policy 'adapters' trains the fidelity conv_in; set fidelity=true or use 'frozen'/'full'")
        super().set_trainable(policy)

    # --- the Decoder interface ----------------------------------------------------------------

    @torch.no_grad()
    def target_features(self, media: Sequence[Media]) -> torch.Tensor:
        """The GPT-2 vectors AudioLDM2 derives from each item's CLAP audio embedding
        ``[B, tokens, dim]`` (float32)."""
        fe = self.feature_extractor
        waves = [self._wave(item, fe.sampling_rate, max_seconds=fe.max_length_s) for item in media]
        inputs = fe(waves, sampling_rate=fe.sampling_rate, return_tensors="pt")
        is_longer = inputs.get("is_longer")
        clap = _pooled(self.text_encoder.get_audio_features(
            input_features=inputs.input_features.to(self.device, self.text_encoder.dtype),
            is_longer=is_longer.to(self.device) if is_longer is not None else None,
        ))
        return self._lm_vectors(clap[:, None, :]).float()

    def diffusion_loss(
        self,
        cond: torch.Tensor,
        media: Sequence[Media],
        reference: Sequence[Media | None] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Denoising loss on the targets' mel latents with ``cond`` as the GPT-2 stream; with
        fidelity, the reference latents (zeros for rows without one) join the UNet input."""
        check_cond(NAME, cond, *self._spec(), batch=len(media))
        latents = self._latents(media, generator)
        ref = self._reference_latents(reference, len(media))
        noise, t = noise_and_timesteps(latents, self.train_scheduler.config.num_train_timesteps, generator)
        noisy = self.train_scheduler.add_noise(latents, noise, t)
        if ref is not None:
            noisy = torch.cat([noisy, ref.to(noisy.dtype)], dim=1)
        t5, t5_mask = self._t5(len(media))
        pred = self.unet(
            noisy, t, encoder_hidden_states=cond.to(self.device, self.unet.dtype),
            encoder_hidden_states_1=t5.to(self.unet.dtype), encoder_attention_mask_1=t5_mask, return_dict=False,
        )[0]
        target = prediction_target(self.train_scheduler, latents, noise, t)
        return F.mse_loss(pred.float(), target.float())

    @torch.no_grad()
    def generate(
        self,
        cond: torch.Tensor,
        reference: Sequence[Media | None] | None = None,
        *,
        steps: int | None = None,
        guidance: float | None = None,
        generator: torch.Generator | None = None,
        on_step: Any = None,
    ) -> list[Media]:
        """One clip per row of ``cond``: the stock pipeline with ``generated_prompt_embeds=cond``;
        with fidelity, :meth:`_sample_with_reference` (zero reference latents for rows without one)."""
        check_cond(NAME, cond, *self._spec())
        batch = cond.shape[0]
        guidance = self.options.guidance if guidance is None else guidance
        ref = self._reference_latents(reference, batch)
        if ref is not None:
            audios = self._sample_with_reference(cond, ref, steps or self.options.steps, guidance, generator)
            return [Media("audio", np.clip(a, -1.0, 1.0).astype(np.float32), sample_rate=self.sample_rate) for a in audios]
        t5, t5_mask = self._t5(batch)
        negative: dict[str, Any] = {}
        if guidance > 1.0:  # the pipeline would otherwise encode "" itself, through the broken GPT-2 path
            negative = {
                "negative_prompt_embeds": t5, "negative_attention_mask": t5_mask,
                "negative_generated_prompt_embeds": self.generated_empty.expand(batch, -1, -1),
            }
        out = self.pipeline(
            prompt_embeds=t5, attention_mask=t5_mask,
            generated_prompt_embeds=cond.to(self.device, self.language_model.dtype),
            audio_length_in_s=self.audio_length_in_s, num_inference_steps=steps or self.options.steps,
            guidance_scale=guidance, generator=generator, output_type="np", **negative,
            **step_callback(on_step, steps or self.options.steps),
        )
        return [
            Media("audio", np.clip(a, -1.0, 1.0).astype(np.float32), sample_rate=self.sample_rate)
            for a in out.audios
        ]

    def _sample_with_reference(
        self, cond: torch.Tensor, ref: torch.Tensor, steps: int, guidance: float, generator: torch.Generator | None
    ) -> np.ndarray:
        """The stock pipeline's sampling loop with the reference latents concatenated to the
        UNet input. It exists only because ``AudioLDM2Pipeline`` cannot pass extra input
        channels; it calls the pipeline's own helpers in the pipeline's order (so the random
        draws match) and, with zero-initialised extra channels, reproduces it exactly. Guidance
        uses the pipeline's unconditional pair and keeps the reference in both branches."""
        pipe, rows = self.pipeline, len(cond)
        generated = cond.to(self.device, self.language_model.dtype)
        t5, t5_mask = self._t5(rows)
        if guidance > 1.0:  # the pipeline's order: unconditional first
            generated = torch.cat([self.generated_empty.expand(rows, -1, -1).to(generated.dtype), generated])
            t5, t5_mask, ref = torch.cat([t5, t5]), torch.cat([t5_mask, t5_mask]), torch.cat([ref, ref])
        pipe.scheduler.set_timesteps(steps, device=self.device)
        latents = pipe.prepare_latents(rows, self.latent_channels, self.frames, t5.dtype, self.device, generator)
        step_kwargs = pipe.prepare_extra_step_kwargs(generator, 0.0)
        for t in pipe.scheduler.timesteps:
            model_input = torch.cat([latents, latents]) if guidance > 1.0 else latents
            model_input = torch.cat([pipe.scheduler.scale_model_input(model_input, t), ref.to(model_input.dtype)], dim=1)
            pred = self.unet(model_input, t, encoder_hidden_states=generated, encoder_hidden_states_1=t5,
                             encoder_attention_mask_1=t5_mask, return_dict=False)[0]  # fmt: skip
            if guidance > 1.0:
                uncond, text = pred.chunk(2)
                pred = uncond + guidance * (text - uncond)
            latents = pipe.scheduler.step(pred, t, latents, **step_kwargs).prev_sample
        mel = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        audio = pipe.mel_spectrogram_to_waveform(mel)
        return audio[:, : int(self.audio_length_in_s * self.sample_rate)].numpy()

    def _spec(self) -> tuple[int, int]:
        return self.condition.tokens, self.condition.dim
