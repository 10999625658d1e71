"""Tiny random feature networks saved in the layouts the real ones load from.

For tests (ours and plugin authors'): each builder writes a randomly initialised, very small
instance of the real class to disk, so that loading exercises the same code path as the real
weights (``from_pretrained(dir)`` for DINO and CLIP, a PANNs-style checkpoint for CNN14).
Imports torch and transformers when called.
"""

from __future__ import annotations

from pathlib import Path


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character map (the byte-level BPE alphabet)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


def tiny_clip_tokenizer():
    """A CLIP tokenizer with only the byte alphabet as vocabulary (no merges), built in memory."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}
    alphabet = list(_bytes_to_unicode().values())
    for suffix in ("", "</w>"):
        for ch in alphabet:
            vocab[ch + suffix] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


def save_tiny_clip(directory: str | Path, *, image_size: int = 32, seed: int = 0) -> Path:
    """A tiny ``CLIPModel`` + image processor + tokenizer, ``save_pretrained`` into ``directory``."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    directory = Path(directory)
    tokenizer = tiny_clip_tokenizer()
    config = CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 37,
                         "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 77,
                         "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                         "pad_token_id": tokenizer.pad_token_id},
        vision_config={"image_size": image_size, "patch_size": 8, "hidden_size": 32, "intermediate_size": 37,
                           "num_hidden_layers": 1, "num_attention_heads": 2},
        projection_dim=16,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(directory)
    return directory


def save_tiny_dino(directory: str | Path, *, image_size: int = 32, seed: int = 0) -> Path:
    """A tiny ``ViTModel`` (no pooler) + ``ViTImageProcessor``, ``save_pretrained`` into ``directory``."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    directory = Path(directory)
    config = ViTConfig(image_size=image_size, patch_size=8, hidden_size=32, intermediate_size=37,
                       num_hidden_layers=1, num_attention_heads=2)
    torch.manual_seed(seed)
    ViTModel(config, add_pooling_layer=False).save_pretrained(directory)
    ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(directory)
    return directory


#: the smallest CNN14 that runs: 5 halvings of 32 mel bins leave one
TINY_CNN14 = {"mel_bins": 32, "channels": (4, 4, 8, 8, 8, 8), "embedding_dim": 8, "classes": 10}


def save_tiny_cnn14(path: str | Path, *, seed: int = 0) -> Path:
    """A tiny random CNN14 (16 kHz front end) saved like PANNs' checkpoints (``{"model": ...}``,
    or safetensors for a ``.safetensors`` suffix). Batch-norm statistics are randomised too, so
    a wrong load cannot pass for a right one."""
    import torch

    from codi2.evaluation.networks.cnn14 import Cnn14, Cnn14Config, save_cnn14

    torch.manual_seed(seed)
    model = Cnn14(Cnn14Config(**TINY_CNN14))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return save_cnn14(model.eval(), path)
