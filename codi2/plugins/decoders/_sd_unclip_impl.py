"""The ``sd-unclip`` decoder component (imported lazily by :mod:`.sd_unclip`).

It wraps diffusers' stock ``StableUnCLIPImg2ImgPipeline``: sampling without a reference calls
the pipeline itself with ``image_embeds=cond``; training reuses the pipeline's own components
(VAE, text encoder, image-embedding noiser, UNet, scheduler configuration). Only the fidelity
path with a reference image has its own short sampling loop, because the stock pipeline has
no way to feed extra latent channels into the UNet.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from codi2.core.types import ConditionSpec, Media
from codi2.errors import ComponentLoadError, ConfigError, MediaError
from codi2.plugins.base import (
    DiffusersDecoder,
    noise_and_timesteps,
    prediction_target,
    step_callback,
)

if TYPE_CHECKING:
    from codi2.plugins.decoders.sd_unclip import SDUnCLIPOptions

NAME = "sd-unclip"


def condition_dim(unet_config: Any) -> int:
    """The image-embedding width a unCLIP UNet is conditioned on.

    The pipeline feeds ``class_labels = concat(noised embedding, noise-level embedding)`` of
    equal widths into a ``projection`` class embedding, so the embedding is half its input.
    """
    if unet_config.class_embed_type != "projection" or not unet_config.projection_class_embeddings_input_dim:
        raise ComponentLoadError(
            f"decoder {NAME!r}: the UNet is not a unCLIP UNet (class_embed_type="
            f"{unet_config.class_embed_type!r}, expected 'projection')"
        )
    width = int(unet_config.projection_class_embeddings_input_dim)
    if width % 2:
        raise ComponentLoadError(f"decoder {NAME!r}: projection_class_embeddings_input_dim {width} is odd")
    return width // 2


def widen_conv_in(unet: nn.Module, extra_channels: int) -> None:
    """Give ``unet.conv_in`` ``extra_channels`` more input channels, initialised to zero
    (InstructPix2Pix style), so that the widened UNet computes exactly what it did before."""
    old = unet.conv_in
    new = nn.Conv2d(
        old.in_channels + extra_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
        device=old.weight.device, dtype=old.weight.dtype,
    )
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels].copy_(old.weight)
        new.bias.copy_(old.bias)
    new.requires_grad_(old.weight.requires_grad)
    unet.conv_in = new
    unet.register_to_config(in_channels=new.in_channels)  # so a saved UNet reloads with 8 channels


def _image_array(item: Media, role: str) -> np.ndarray:
    if not isinstance(item, Media) or item.modality != "image":
        what = item.modality if isinstance(item, Media) else type(item).__name__
        raise MediaError(f"decoder {NAME!r} needs image media as {role}, got {what}", item=getattr(item, "label", None))
    data = np.asarray(item.data)
    if data.dtype != np.uint8 or data.ndim != 3 or data.shape[-1] != 3:
        raise MediaError(f"{role} must be uint8 [H, W, 3], got {data.dtype} {data.shape}", item=item.label)
    return data


class SDUnCLIPDecoder(DiffusersDecoder):
    """SD-2.1-unCLIP as a codi2 :class:`~codi2.core.interfaces.Decoder`.

    ``condition`` is one vector of the pipeline's CLIP image-embedding width (1024 for
    ``stable-diffusion-2-1-unclip``). The pipeline's modules are registered as submodules, so
    ``.to()``, ``.parameters()`` and ``requires_grad_`` reach them; ``self.pipeline`` is the
    stock pipeline sharing those modules.
    """

    name = NAME
    modality = "image"
    per_item_generators = True  # generate() passes one generator per row to the stock pipeline
    frozen_parts = ("vae", "text_encoder", "image_encoder", "image_normalizer")
    state_hint = " (was the checkpoint trained with fidelity=true?)"

    def __init__(self, pipeline: Any, options: SDUnCLIPOptions):
        super().__init__()
        from diffusers import DDPMScheduler

        self.pipeline = pipeline
        self.options = options
        self.unet = pipeline.unet
        self.vae = pipeline.vae
        self.text_encoder = pipeline.text_encoder
        self.image_encoder = pipeline.image_encoder
        self.image_normalizer = pipeline.image_normalizer
        pipeline.set_progress_bar_config(disable=True)

        dim = condition_dim(self.unet.config)
        for what, width in (
            ("image_encoder.projection_dim", self.image_encoder.config.projection_dim),
            ("image_normalizer.embedding_dim", self.image_normalizer.mean.shape[-1]),
        ):
            if width != dim:
                raise ComponentLoadError(f"decoder {NAME!r}: {what} is {width} but the UNet expects {dim}-d image embeddings")
        self.condition = ConditionSpec(tokens=1, dim=dim)

        levels = pipeline.image_noising_scheduler.config.num_train_timesteps
        if options.noise_level >= levels:
            raise ConfigError(f"decoder {NAME!r}: noise_level must be below {levels}, got {options.noise_level}")
        scale = pipeline.vae_scale_factor
        self.height = options.height or self.unet.config.sample_size * scale
        self.width = options.width or self.unet.config.sample_size * scale
        for side in (self.height, self.width):
            if side % scale:
                raise ConfigError(f"decoder {NAME!r}: height and width must be multiples of {scale}, got {side}")

        # Training noises latents the way SD was trained (DDPM forward process), whatever
        # sampler the pipeline uses; the config carries the betas and prediction_type.
        self.train_scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)
        self.latent_channels = self.vae.config.latent_channels
        self.supports_reference = options.fidelity
        in_channels = self.unet.conv_in.in_channels
        expected = 2 * self.latent_channels if options.fidelity else self.latent_channels
        if options.fidelity and in_channels == self.latent_channels:
            widen_conv_in(self.unet, self.latent_channels)
        elif in_channels != expected:
            raise ComponentLoadError(
                f"decoder {NAME!r}: the UNet takes {in_channels} input channels, expected {expected} "
                f"(fidelity={options.fidelity}, {self.latent_channels} latent channels)"
            )
        self._empty_prompt_cache: torch.Tensor | None = None
        self.policy = "frozen"
        self.set_trainable(options.trainable)

    @classmethod
    def from_options(cls, options: SDUnCLIPOptions) -> SDUnCLIPDecoder:
        from diffusers import StableUnCLIPImg2ImgPipeline

        dtype = getattr(torch, options.dtype)
        try:
            pipeline = StableUnCLIPImg2ImgPipeline.from_pretrained(
                options.model, dtype=dtype, local_files_only=options.local_files_only
            )
        except (OSError, ValueError) as exc:
            raise ComponentLoadError(
                f"decoder {NAME!r}: cannot load StableUnCLIPImg2ImgPipeline from {options.model!r}: {exc}"
            ) from exc
        device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(pipeline.to(device), options)

    # --- helpers ------------------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def _check_cond(self, cond: torch.Tensor, rows: int | None = None) -> None:
        expected = (self.condition.tokens, self.condition.dim)
        if cond.dim() != 3 or tuple(cond.shape[1:]) != expected:
            raise ValueError(f"decoder {NAME!r}: cond must be [B, {expected[0]}, {expected[1]}], got {tuple(cond.shape)}")
        if rows is not None and cond.shape[0] != rows:
            raise ValueError(f"decoder {NAME!r}: cond has {cond.shape[0]} rows but {rows} media were given")

    def _empty_prompt(self, batch: int) -> torch.Tensor:
        """The text encoder's embedding of the empty prompt, ``[batch, 77, D_text]`` (cached):
        unCLIP images are conditioned on the image embedding alone."""
        cache = self._empty_prompt_cache
        if cache is None or cache.device != self.device or cache.dtype != self.text_encoder.dtype:
            with torch.no_grad():
                cache, _ = self.pipeline.encode_prompt(
                    prompt="", device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
                )
            self._empty_prompt_cache = cache
        return cache.expand(batch, -1, -1)

    def _pixels(self, media: Sequence[Media], role: str) -> torch.Tensor:
        """uint8 images -> ``[B, 3, height, width]`` in [-1, 1] (the pipeline's VAE preprocessing)."""
        from PIL import Image

        images = [Image.fromarray(_image_array(m, role)) for m in media]
        pixels = self.pipeline.image_processor.preprocess(images, height=self.height, width=self.width)
        return pixels.to(self.device, self.vae.dtype)

    def _class_labels(self, embeds: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """``class_labels`` for the UNet: the embedding noise-augmented at ``noise_level`` next to
        the level's timestep embedding, ``[B, 2 * D]``.

        The same steps, in the same order (same random draw), as the pipeline's
        ``noise_image_embeddings``, which cannot be called here: it runs
        ``image_normalizer.to()``, and diffusers' ``StableUnCLIPImageNormalizer.to`` re-creates
        its mean and std as new *trainable* parameters, which would put them into the training
        graph. The parity tests check this against the stock pipeline.
        """
        from diffusers.models.embeddings import get_timestep_embedding
        from diffusers.utils.torch_utils import randn_tensor

        noise = randn_tensor(embeds.shape, generator=generator, device=embeds.device, dtype=embeds.dtype)
        level = torch.full((len(embeds),), self.options.noise_level, dtype=torch.long, device=embeds.device)
        noised = self.image_normalizer.scale(embeds)
        noised = self.pipeline.image_noising_scheduler.add_noise(noised, noise, level)
        noised = self.image_normalizer.unscale(noised)
        level_embedding = get_timestep_embedding(level, noised.shape[-1], flip_sin_to_cos=True, downscale_freq_shift=0)
        return torch.cat([noised, level_embedding.to(noised.dtype)], dim=1)

    @torch.no_grad()
    def _reference_latents(self, reference: Sequence[Media | None] | None, rows: int) -> torch.Tensor | None:
        """Scaled VAE latents (distribution mode) of the reference images, zeros where a row
        has none; ``None`` without fidelity."""
        if not self.supports_reference:
            if reference is not None and any(r is not None for r in reference):
                raise ConfigError(f"decoder {NAME!r}: got reference media but fidelity is off (set options.fidelity=true)")
            return None
        shape = (rows, self.latent_channels, self.height // self.pipeline.vae_scale_factor, self.width // self.pipeline.vae_scale_factor)
        latents = torch.zeros(shape, device=self.device, dtype=self.dtype)
        if reference is None:
            return latents
        if len(reference) != rows:
            raise ValueError(f"decoder {NAME!r}: {len(reference)} references for {rows} rows")
        present = [i for i, r in enumerate(reference) if r is not None]
        if present:
            pixels = self._pixels([reference[i] for i in present], "reference")
            encoded = self.vae.encode(pixels).latent_dist.mode() * self.vae.config.scaling_factor
            latents[present] = encoded.to(self.dtype)
        return latents

    # --- the Decoder interface ----------------------------------------------------------------

    @torch.no_grad()
    def target_features(self, media: Sequence[Media]) -> torch.Tensor:
        """The pipeline's own CLIP image embedding of each image, ``[B, 1, D]`` float32."""
        images = [_image_array(m, "target") for m in media]
        pixels = self.pipeline.feature_extractor(images=images, return_tensors="pt").pixel_values
        embeds = self.image_encoder(pixels.to(self.device, self.image_encoder.dtype)).image_embeds
        return embeds[:, None].float()

    def diffusion_loss(
        self,
        cond: torch.Tensor,
        media: Sequence[Media],
        reference: Sequence[Media | None] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The unCLIP training objective for ``media`` given ``cond [B, 1, D]``.

        VAE latents of the targets are noised at random timesteps; ``cond`` goes through the
        pipeline's own embedding noise augmentation (at ``noise_level``) into ``class_labels``;
        the UNet's prediction is regressed (MSE) on the scheduler's target (epsilon, v or
        sample). With fidelity, the reference latents (zeros for rows without one) are
        concatenated to the UNet input.
        """

        self._check_cond(cond, len(media))
        rows = len(media)
        with torch.no_grad():
            pixels = self._pixels(media, "target")
            latents = self.vae.encode(pixels).latent_dist.sample(generator) * self.vae.config.scaling_factor
            latents = latents.to(self.dtype)
        ref = self._reference_latents(reference, rows)
        noise, timesteps = noise_and_timesteps(latents, self.train_scheduler.config.num_train_timesteps, generator)
        noisy = self.train_scheduler.add_noise(latents, noise, timesteps)
        if ref is not None:
            noisy = torch.cat([noisy, ref], dim=1)
        class_labels = self._class_labels(cond[:, 0].to(self.device, self.dtype), generator)
        pred = self.unet(
            noisy, timesteps, encoder_hidden_states=self._empty_prompt(rows), class_labels=class_labels, return_dict=False
        )[0]
        target = prediction_target(self.train_scheduler, latents, noise, timesteps)
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
        """One ``height x width`` RGB image per row of ``cond [B, 1, D]``.

        Without fidelity this is the stock pipeline call with ``image_embeds=cond[:, 0]`` and the
        empty prompt. With fidelity, :meth:`_sample_with_reference` runs, with zero reference
        latents for rows whose reference is ``None``. ``steps``/``guidance`` default to the options.
        """
        self._check_cond(cond)
        steps = steps or self.options.steps
        guidance = self.options.guidance if guidance is None else guidance
        embeds = cond[:, 0].to(self.device, self.dtype)
        ref = self._reference_latents(reference, len(cond))
        if ref is None:
            empty = self._empty_prompt(len(cond))
            try:
                images = self.pipeline(
                    image_embeds=embeds,
                    prompt_embeds=empty,
                    negative_prompt_embeds=empty,
                    height=self.height,
                    width=self.width,
                    num_inference_steps=steps,
                    guidance_scale=guidance,
                    noise_level=self.options.noise_level,
                    generator=generator,
                    output_type="np",
                    **step_callback(on_step, steps),
                ).images
            finally:  # the stock call re-creates the normaliser's weights as trainable (see _class_labels)
                self.image_normalizer.requires_grad_(False)
        else:
            images = self._sample_with_reference(embeds, ref, steps, guidance, generator, on_step)
        pixels = (np.asarray(images) * 255).round().clip(0, 255).astype(np.uint8)
        return [Media("image", row) for row in pixels]

    def _sample_with_reference(
        self, embeds: torch.Tensor, ref: torch.Tensor, steps: int, guidance: float, generator: torch.Generator | None,
        on_step: Any = None,
    ) -> np.ndarray:
        """The stock pipeline's denoising loop with the reference latents concatenated to the
        UNet input. It exists only because ``StableUnCLIPImg2ImgPipeline`` cannot pass extra
        input channels; it calls the pipeline's own helpers in the pipeline's order (so the
        random draws match) and, with zero-initialised extra channels, reproduces it exactly.
        Guidance drops the image embedding (zeros, as the pipeline does) and keeps the reference
        in both branches.
        """
        pipe, rows = self.pipeline, len(embeds)
        use_cfg = guidance > 1.0
        prompt = self._empty_prompt(rows)
        class_labels = self._class_labels(embeds, generator)
        if use_cfg:
            prompt = torch.cat([prompt, prompt])
            class_labels = torch.cat([torch.zeros_like(class_labels), class_labels])
            ref = torch.cat([ref, ref])
        pipe.scheduler.set_timesteps(steps, device=self.device)
        latents = pipe.prepare_latents(
            rows, self.latent_channels, self.height, self.width, prompt.dtype, self.device, generator
        )
        step_kwargs = pipe.prepare_extra_step_kwargs(generator, 0.0)
        for i, t in enumerate(pipe.scheduler.timesteps):
            model_input = torch.cat([latents, latents]) if use_cfg else latents
            model_input = torch.cat([pipe.scheduler.scale_model_input(model_input, t), ref], dim=1)
            pred = self.unet(model_input, t, encoder_hidden_states=prompt, class_labels=class_labels, return_dict=False)[0]
            if use_cfg:
                uncond, cond = pred.chunk(2)
                pred = uncond + guidance * (cond - uncond)
            latents = pipe.scheduler.step(pred, t, latents, **step_kwargs, return_dict=False)[0]
            if on_step is not None:
                on_step(i + 1, len(pipe.scheduler.timesteps))
        image = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]
        return pipe.image_processor.postprocess(image, output_type="np")

    # --- trainable state ----------------------------------------------------------------------

    def adapter_parameters(self) -> dict[str, nn.Parameter]:
        """``adapters`` trains the widened fidelity ``conv_in`` (there is none without fidelity)."""
        if not self.supports_reference:
            return {}
        return {f"unet.conv_in.{k}": p for k, p in self.unet.conv_in.named_parameters()}

    def set_trainable(self, policy: str) -> None:
        """``frozen``: nothing trains (gradients still reach ``cond``); ``adapters``: the
        widened fidelity ``conv_in``; ``full``: the whole UNet. VAE and encoders stay frozen."""
        if policy == "adapters" and not self.supports_reference:
            raise ConfigError(f"decoder {NAME!r}: policy 'adapters' trains the fidelity conv_in; set fidelity=true or use 'frozen'/'full'")
        super().set_trainable(policy)
