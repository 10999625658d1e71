"""Tiny, randomly initialised SD-1.x, SDXL, PixArt-alpha and AudioLDM pipelines for tests.

The component classes and shapes follow diffusers' own fast tests (``get_dummy_components``),
shrunk where that keeps them valid; tokenizers are built in memory. Each builder writes the
stock pipeline with ``save_pretrained`` so that the ``diffusers-pipeline`` decoder loads it
through its real ``from_pretrained`` path. Heavy imports happen inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _clip_text(tokenizer: Any, hidden: int, *, projection: bool = False, layers: int = 2) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        hidden_size=hidden, intermediate_size=37, num_attention_heads=4, num_hidden_layers=layers,
        vocab_size=len(tokenizer), hidden_act="gelu", projection_dim=hidden,
    )  # fmt: skip
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def _vae(in_channels: int = 3, groups: int = 2) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[8, 16], in_channels=in_channels, out_channels=in_channels, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2, norm_num_groups=groups,
    )  # fmt: skip


def _ddim() -> Any:
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def _save(pipe: Any, directory: str | Path) -> Path:
    directory = Path(directory)
    pipe.save_pretrained(directory)
    return directory


def build_tiny_sd(directory: str | Path, seed: int = 0) -> Path:
    """A ``StableDiffusionPipeline``: CLIP text 32-d x 77 tokens, 16x16 images."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    from codi2.plugins.decoders.testing_components import tiny_clip_tokenizer

    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer()
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=2,
    )  # fmt: skip
    pipe = StableDiffusionPipeline(
        vae=_vae(), text_encoder=_clip_text(tokenizer, 32), tokenizer=tokenizer, unet=unet, scheduler=_ddim(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    return _save(pipe, directory)


def build_tiny_sdxl(directory: str | Path, seed: int = 0) -> Path:
    """A ``StableDiffusionXLPipeline``: two CLIP text encoders (32 + 32 = 64-d x 77 tokens, pooled
    32-d), size ids through ``addition_time_embed_dim`` 8, 16x16 images."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    from codi2.plugins.decoders.testing_components import tiny_clip_tokenizer

    torch.manual_seed(seed)
    tokenizer, tokenizer_2 = tiny_clip_tokenizer(), tiny_clip_tokenizer()
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=64,
        norm_num_groups=2,
    )  # fmt: skip
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, steps_offset=1, beta_schedule="scaled_linear", timestep_spacing="leading"
    )
    pipe = StableDiffusionXLPipeline(
        vae=_vae(), text_encoder=_clip_text(tokenizer, 32), text_encoder_2=_clip_text(tokenizer_2, 32, projection=True),
        tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler,
    )  # fmt: skip
    return _save(pipe, directory)


def build_tiny_pixart_alpha(directory: str | Path, seed: int = 0) -> Path:
    """A ``PixArtAlphaPipeline``: T5 32-d x 120 tokens with an attention mask, a learned-sigma
    transformer over 8x8 latents (patch 2), 16x16 images."""
    import torch
    from diffusers import PixArtAlphaPipeline, PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    from codi2.plugins.decoders.testing_audio_video import _t5_tokenizer

    torch.manual_seed(seed)
    tokenizer = _t5_tokenizer(max_length=120)
    transformer = PixArtTransformer2DModel(
        sample_size=8, num_layers=2, patch_size=2, attention_head_dim=8, num_attention_heads=3, caption_channels=32,
        in_channels=4, cross_attention_dim=24, out_channels=8, attention_bias=True, activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
    )  # fmt: skip
    text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=32, d_ff=37, d_kv=8, num_heads=4, num_layers=2))
    pipe = PixArtAlphaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=_vae(), transformer=transformer, scheduler=_ddim())
    return _save(pipe, directory)


def build_tiny_audioldm(directory: str | Path, seed: int = 0) -> Path:
    """An ``AudioLDMPipeline`` (AudioLDM 1): CLAP text vector 8-d (the UNet's class embedding),
    8 mel bins, hop 160 at 16 kHz (the real hop), 0.16 s clips."""
    import torch
    from diffusers import AudioLDMPipeline, UNet2DConditionModel
    from transformers import ClapTextConfig, ClapTextModelWithProjection, SpeechT5HifiGan, SpeechT5HifiGanConfig

    from codi2.plugins.decoders.testing_audio_video import _roberta_tokenizer

    torch.manual_seed(seed)
    tokenizer = _roberta_tokenizer()
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=(8, 16), class_embed_type="simple_projection", projection_class_embeddings_input_dim=8,
        class_embeddings_concat=True,
    )  # fmt: skip
    text_encoder = ClapTextModelWithProjection(ClapTextConfig(
        bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=8, intermediate_size=37, num_attention_heads=2,
        num_hidden_layers=2, vocab_size=len(tokenizer), projection_dim=8,
    ))  # fmt: skip
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=8, sampling_rate=16000, upsample_initial_channel=16, upsample_rates=[8, 20],
        upsample_kernel_sizes=[16, 40], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]], normalize_before=False,
    ))  # fmt: skip
    pipe = AudioLDMPipeline(
        vae=_vae(in_channels=1, groups=8), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=_ddim(), vocoder=vocoder,
    )  # fmt: skip
    return _save(pipe, directory)
