"""Tiny, randomly initialised decoder backbones saved in their real on-disk layout.

Tests load these through exactly the code path a real checkpoint takes (``from_pretrained`` on
a directory, offline), so the plugin's loading, conditioning and sampling logic is exercised
without any download. Heavy libraries are imported inside the builders.
"""

from __future__ import annotations

from pathlib import Path

#: the conditioning width of the tiny SD-unCLIP model (CLIP image-embedding size)
TINY_SD_UNCLIP_EMBED_DIM = 32


def tiny_clip_tokenizer(model_max_length: int = 77):
    """A byte-level CLIP tokenizer built in memory (no vocabulary download).

    Every byte is a token, alone and with the end-of-word mark, and a few merges make the BPE
    model non-trivial. Ids stay below 1000, the tiny text encoder's vocabulary size.
    """
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    symbols = sorted(ByteLevel.alphabet())
    pieces = symbols + [s + "</w>" for s in symbols]
    merges = [("a", "b"), ("c", "d</w>"), ("t", "h"), ("th", "e</w>")]
    pieces += ["".join(pair) for pair in merges]
    pieces += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {piece: i for i, piece in enumerate(dict.fromkeys(pieces))}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def tiny_sd_unclip_components(seed: int = 0) -> dict:
    """The components of a tiny ``StableUnCLIPImg2ImgPipeline`` (the shapes of diffusers' own
    fast test: 32-d embeddings, projection class embedding of 64 = 2 x 32, latents 8x8 through
    a two-level VAE, so images are 16x16)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer,
    )
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    dim = TINY_SD_UNCLIP_EMBED_DIM
    torch.manual_seed(seed)
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=dim, projection_dim=dim, num_hidden_layers=2, num_attention_heads=4,
            image_size=32, intermediate_size=37, patch_size=4,
        )
    ).eval()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=dim, projection_dim=dim,
            intermediate_size=37, layer_norm_eps=1e-5, num_attention_heads=4, num_hidden_layers=2,
            vocab_size=1000, max_position_embeddings=77,
        )
    ).eval()
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64), attention_head_dim=(2, 4), layers_per_block=1,
        class_embed_type="projection", projection_class_embeddings_input_dim=2 * dim,
        cross_attention_dim=dim, upcast_attention=True, use_linear_projection=True,
    ).eval()
    vae = AutoencoderKL(
        block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    ).eval()
    normalizer = StableUnCLIPImageNormalizer(embedding_dim=dim)
    # a non-trivial normaliser, so that a wrong scale/unscale order would show in the tests
    with torch.no_grad():
        normalizer.mean.copy_(0.1 * torch.randn_like(normalizer.mean))
        normalizer.std.copy_(1 + 0.1 * torch.rand_like(normalizer.std))
    return {
        "feature_extractor": CLIPImageProcessor(crop_size=32, size=32),
        "image_encoder": image_encoder,
        "image_normalizer": normalizer,
        "image_noising_scheduler": DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
        "tokenizer": tiny_clip_tokenizer(),
        "text_encoder": text_encoder,
        "unet": unet,
        "scheduler": DDIMScheduler(
            beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
            prediction_type="v_prediction", set_alpha_to_one=False, steps_offset=1,
        ),
        "vae": vae,
    }


def build_tiny_sd_unclip(directory: str | Path, seed: int = 0) -> Path:
    """Save a tiny random ``StableUnCLIPImg2ImgPipeline`` to ``directory`` and return the path.

    Load it with the ``sd-unclip`` decoder plugin (``{"model": str(path)}``) or with
    ``StableUnCLIPImg2ImgPipeline.from_pretrained(path)``.
    """
    from diffusers import StableUnCLIPImg2ImgPipeline

    path = Path(directory)
    pipe = StableUnCLIPImg2ImgPipeline(**tiny_sd_unclip_components(seed))
    pipe.save_pretrained(path, safe_serialization=True)
    return path
