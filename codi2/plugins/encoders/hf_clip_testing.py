"""Tiny random CLIP, SigLIP and CLAP checkpoints for tests of the ``hf-clip`` encoder.

Each builder saves a model of the real transformers class with its preprocessing (image
processor or feature extractor, and a tokenizer built in memory) to a directory, so the plugin
loads it through the same ``from_pretrained`` path a hub id takes. Heavy imports inside.
"""

from __future__ import annotations

from pathlib import Path


def build_tiny_clip(directory: str | Path, seed: int = 0) -> Path:
    """A ``CLIPModel``: 32x32 images in patches of 8, 16-d projections."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from codi2.plugins.decoders.testing_components import tiny_clip_tokenizer

    tokenizer = tiny_clip_tokenizer()
    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2,
                     "vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
                     "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(seed)
    return _save(directory, CLIPModel(config), tokenizer, CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32))


def build_tiny_siglip(directory: str | Path, seed: int = 0) -> Path:
    """A ``SiglipModel``: 32x32 images in patches of 8, 32-d embeddings, 16-token texts."""
    import torch
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    from codi2.plugins.decoders.testing_audio_video import _t5_tokenizer

    tokenizer = _t5_tokenizer(max_length=16)
    config = SiglipConfig(
        text_config={"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2,
                     "vocab_size": len(tokenizer), "max_position_embeddings": 16, "pad_token_id": tokenizer.pad_token_id,
                     "bos_token_id": tokenizer.eos_token_id, "eos_token_id": tokenizer.eos_token_id},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2,
                       "image_size": 32, "patch_size": 8},
    )  # fmt: skip
    torch.manual_seed(seed)
    return _save(directory, SiglipModel(config), tokenizer, SiglipImageProcessor(size={"height": 32, "width": 32}))


def build_tiny_clap(directory: str | Path, seed: int = 0) -> Path:
    """A ``ClapModel``: HTSAT audio tower on 64 mel bins at 48 kHz, 16-d projections."""
    import torch
    from transformers import ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapTextConfig

    from codi2.plugins.decoders.testing_audio_video import _roberta_tokenizer

    tokenizer = _roberta_tokenizer()
    text = ClapTextConfig(bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=16, intermediate_size=37,
                          num_attention_heads=2, num_hidden_layers=2, vocab_size=len(tokenizer), projection_dim=16)  # fmt: skip
    audio = ClapAudioConfig(spec_size=64, window_size=4, num_mel_bins=64, intermediate_size=37, depths=[2, 2],
                            num_attention_heads=[2, 2], num_hidden_layers=2, hidden_size=32, patch_embeds_hidden_size=16,
                            projection_dim=16, patch_size=2, patch_stride=2, patch_embed_input_channels=1)  # fmt: skip
    # the released extractor's settings, with a hop that gives <= 64 frames for the tiny tower
    extractor = ClapFeatureExtractor(feature_size=64, sampling_rate=48000, hop_length=7900, max_length_s=10,
                                     fft_window_size=1024, frequency_min=50, frequency_max=14000,
                                     truncation="rand_trunc", padding="repeatpad")  # fmt: skip
    torch.manual_seed(seed)
    model = ClapModel(ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=16))
    return _save(directory, model, tokenizer, extractor)


def _save(directory: str | Path, model, tokenizer, processor) -> Path:
    directory = Path(directory)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
