"""Tiny, randomly initialised AudioLDM2 and zeroscope pipelines for tests.

Each builder makes the stock diffusers pipeline from the same component classes as the
released checkpoint, at toy sizes (after diffusers' own pipeline tests), and writes it with
``save_pretrained`` so that the plugins load it through their real ``from_pretrained`` path.
Tokenizers are built from in-memory vocabularies: nothing is fetched from a hub.

Heavy imports happen inside the functions; importing this module is free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _roberta_tokenizer(max_length: int = 77) -> Any:
    """A byte-level RoBERTa tokenizer (every byte one token) built in memory."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import RobertaTokenizer

    pieces = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", *sorted(ByteLevel.alphabet())]
    return RobertaTokenizer(vocab={p: i for i, p in enumerate(pieces)}, merges=[], model_max_length=max_length)


def _t5_tokenizer(max_length: int = 77) -> Any:
    """A unigram T5 tokenizer over lowercase words' letters, built in memory."""
    from transformers import T5Tokenizer

    pieces = ["<pad>", "</s>", "<unk>", "\u2581"] + [f"\u2581{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    pieces += list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'")
    vocab = [(p, 0.0 if i < 3 else -float(i)) for i, p in enumerate(pieces)]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=max_length)


def build_tiny_audioldm2(directory: str | Path, seed: int = 0) -> Path:
    """Write a tiny ``AudioLDM2Pipeline`` to ``directory`` and return the path.

    Sizes: GPT-2 hidden 16 (the conditioning width), T5 width 32, 8 mel bins, hop 160 at
    16 kHz (the real hop, so that the mel path runs unchanged), default length 0.16 s.
    """
    import torch
    from diffusers import (
        AudioLDM2Pipeline,
        AudioLDM2ProjectionModel,
        AudioLDM2UNet2DConditionModel,
        AutoencoderKL,
        DDIMScheduler,
    )
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapTextConfig,
        GPT2Config,
        GPT2Model,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
        T5Config,
        T5EncoderModel,
    )

    torch.manual_seed(seed)
    unet = AudioLDM2UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=([None, 16, 32], [None, 16, 32]),
        norm_num_groups=8,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False
    )
    vae = AutoencoderKL(
        block_out_channels=[16, 32],
        in_channels=1,
        out_channels=1,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        norm_num_groups=8,
    )
    tokenizer = _roberta_tokenizer()
    text_config = ClapTextConfig(
        bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=16, intermediate_size=37,
        num_attention_heads=2, num_hidden_layers=2, vocab_size=len(tokenizer), projection_dim=16,
    )
    audio_config = ClapAudioConfig(
        spec_size=64, window_size=4, num_mel_bins=64, intermediate_size=37, depths=[2, 2],
        num_attention_heads=[2, 2], num_hidden_layers=2, hidden_size=32, patch_embeds_hidden_size=16, projection_dim=16,
        patch_size=2, patch_stride=2, patch_embed_input_channels=1,
    )
    clap = ClapModel(ClapConfig(text_config=text_config, audio_config=audio_config, projection_dim=16))
    # the released extractor's settings, but a hop that gives <= 64 frames for the tiny tower
    feature_extractor = ClapFeatureExtractor(
        feature_size=64, sampling_rate=48000, hop_length=7900, max_length_s=10, fft_window_size=1024,
        frequency_min=50, frequency_max=14000, truncation="rand_trunc", padding="repeatpad",
    )
    tokenizer_2 = _t5_tokenizer()
    t5 = T5EncoderModel(T5Config(vocab_size=len(tokenizer_2), d_model=32, d_ff=37, d_kv=8, num_heads=2, num_layers=2))
    language_model = GPT2Model(GPT2Config(
        n_embd=16, n_head=2, n_layer=2, vocab_size=100, n_ctx=99, n_positions=99, bos_token_id=0, eos_token_id=0
    ))
    language_model.config.max_new_tokens = 8
    projection = AudioLDM2ProjectionModel(text_encoder_dim=16, text_encoder_1_dim=32, langauge_model_dim=16)
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=8, sampling_rate=16000, upsample_initial_channel=16, upsample_rates=[8, 20],
        upsample_kernel_sizes=[16, 40], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
        normalize_before=False,
    ))
    pipe = AudioLDM2Pipeline(
        vae=vae, text_encoder=clap, text_encoder_2=t5, projection_model=projection, language_model=language_model,
        tokenizer=tokenizer, tokenizer_2=tokenizer_2, feature_extractor=feature_extractor, unet=unet,
        scheduler=scheduler, vocoder=vocoder,
    )
    directory = Path(directory)
    pipe.save_pretrained(directory)
    return directory


def build_tiny_zeroscope(directory: str | Path, seed: int = 0) -> Path:
    """Write a tiny ``TextToVideoSDPipeline`` to ``directory`` and return the path.

    Sizes: CLIP text hidden 8 (the conditioning width, 77 tokens), 16x16 frames.
    """
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, TextToVideoSDPipeline, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from codi2.plugins.decoders.testing_components import tiny_clip_tokenizer

    torch.manual_seed(seed)
    unet = UNet3DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=8,
        attention_head_dim=4,
        norm_num_groups=2,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 8),
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        sample_size=16,
        norm_num_groups=2,
    )
    tokenizer = tiny_clip_tokenizer()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        hidden_size=8, intermediate_size=16, num_attention_heads=2, num_hidden_layers=2, vocab_size=len(tokenizer),
        hidden_act="gelu", projection_dim=8,
    ))
    pipe = TextToVideoSDPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
    directory = Path(directory)
    pipe.save_pretrained(directory)
    return directory
