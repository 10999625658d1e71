"""ImageBind's network (Girdhar et al., CVPR 2023), written for codi2.

Six modality towers share one design: a *preprocessor* turns the input into tokens (patch
embedding + class token + learned positions, or token embedding for text), a *trunk* of
pre-norm transformer blocks runs over them, a *head* reads the class token (the end-of-text
token for text) and projects it into the shared space, and a *postprocessor* normalises it
and multiplies by a (fixed or learned) contrastive logit scale.

Module and parameter names follow Meta's released ``imagebind_huge.pth``
(``modality_preprocessors.vision.rgbt_stem.proj.1.weight``, ...), so that checkpoint loads
with ``strict=True``; the towers a model does not need can be left out (``towers=``).
The network is inference-only: the drop-path regularisers of the training setup are omitted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

TOWERS = ("vision", "text", "audio", "depth", "thermal", "imu")

# Fixed by the released architecture (not by the size config)
IMAGE_SIZE = 224
VISION_PATCH = (2, 14, 14)  # (frames, height, width) of the Conv3d patch
AUDIO_MEL_BINS = 128
AUDIO_FRAMES = 204
AUDIO_PATCH, AUDIO_STRIDE = 16, 10
DEPTH_PATCH = THERMAL_PATCH = 16
IMU_CHANNELS, IMU_LENGTH, IMU_PATCH = 6, 2000, 8
TEXT_CONTEXT, TEXT_VOCAB = 77, 49408
#: the contrastive logit scale each postprocessor applies after normalising (None = learned)
LOGIT_SCALES: dict[str, float | None] = {
    "vision": 1.0,  # vision is only normalised
    "text": None,
    "audio": 20.0,
    "depth": 5.0,
    "thermal": 10.0,
    "imu": 5.0,
}


# --- preprocessors ---------------------------------------------------------------------------


class RepeatFrames(nn.Module):
    """Turn images ``[B, C, H, W]`` into still clips ``[B, C, T, H, W]`` by repeating them.

    A clip that already has a time axis with more than one frame passes unchanged."""

    def __init__(self, frames: int):
        super().__init__()
        self.frames = frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            x = x.unsqueeze(2)
        if x.shape[2] == 1:
            x = x.expand(-1, -1, self.frames, -1, -1)
        return x


class PatchStem(nn.Module):
    """Patchify (a conv or, for IMU, a linear map) and optionally normalise: ``-> [B, N, D]``."""

    def __init__(self, proj: nn.Module, norm_layer: nn.Module | None = None):
        super().__init__()
        self.proj = proj
        self.norm_layer = norm_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        if x.ndim > 3:  # conv output [B, D, *grid] -> [B, N, D]
            x = x.flatten(2).transpose(1, 2)
        return self.norm_layer(x) if self.norm_layer is not None else x


class PositionTable(nn.Module):
    """A learned position embedding ``[1, tokens, dim]`` (its own module: the released layout)."""

    def __init__(self, tokens: int, dim: int):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, dim) * dim**-0.5)


class PatchPreprocessor(nn.Module):
    """Patch tokens with a class token prepended and learned positions added.

    ``stem_name`` is the attribute the released checkpoint stores the stem under
    (``rgbt_stem`` for vision, audio and thermal; ``depth_stem`` for depth)."""

    def __init__(self, stem: PatchStem, stem_name: str, num_patches: int, dim: int):
        super().__init__()
        self.stem_name = stem_name
        self.add_module(stem_name, stem)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * dim**-0.5)
        self.pos_embedding_helper = PositionTable(1 + num_patches, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = getattr(self, self.stem_name)(x)
        tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)
        pos = self.pos_embedding_helper.pos_embed
        if tokens.shape[1] != pos.shape[1]:
            raise ValueError(f"input gives {tokens.shape[1]} tokens, the model was built for {pos.shape[1]}")
        return tokens + pos


class IMUPreprocessor(nn.Module):
    """IMU series ``[B, 6, 2000]`` cut into windows of 8 steps (48 values each) -> tokens."""

    def __init__(self, dim: int):
        super().__init__()
        self.imu_stem = PatchStem(nn.Linear(IMU_CHANNELS * IMU_PATCH, dim, bias=False), nn.LayerNorm(dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * dim**-0.5)
        self.pos_embed = nn.Parameter(torch.randn(1, IMU_LENGTH // IMU_PATCH + 1, dim) * 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        windows = x.unfold(-1, IMU_PATCH, IMU_PATCH).permute(0, 2, 1, 3).flatten(2)  # [B, 250, 48]
        tokens = self.imu_stem(windows)
        tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)
        return tokens + self.pos_embed


class TextPreprocessor(nn.Module):
    """CLIP token ids ``[B, 77]`` -> embeddings with positions; holds the causal mask."""

    def __init__(self, dim: int):
        super().__init__()
        self.token_embedding = nn.Embedding(TEXT_VOCAB, dim)
        self.pos_embed = nn.Parameter(torch.randn(1, TEXT_CONTEXT, dim) * 0.01)
        # additive mask (-inf above the diagonal); the released checkpoint stores it
        mask = torch.full((TEXT_CONTEXT, TEXT_CONTEXT), float("-inf")).triu_(1)
        self.register_buffer("mask", mask)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(ids) + self.pos_embed


# --- trunks ----------------------------------------------------------------------------------


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block. Audio, depth, thermal and IMU towers add a learned bias
    key/value (``add_bias_kv``), as in the release."""

    def __init__(self, dim: int, heads: int, add_bias_kv: bool):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, bias=True, add_bias_kv=add_bias_kv, batch_first=True)
        self.norm_1 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLP(dim, 4 * dim)
        self.norm_2 = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm_1(x)
        x = x + self.attn(h, h, h, attn_mask=attn_mask, need_weights=False)[0]
        return x + self.mlp(self.norm_2(x))


class Trunk(nn.Module):
    """A stack of blocks; the vision trunk first layer-normalises its input tokens."""

    def __init__(self, dim: int, depth: int, heads: int, *, pre_norm: bool, add_bias_kv: bool):
        super().__init__()
        self.pre_transformer_layer = nn.Sequential(nn.LayerNorm(dim, eps=1e-6) if pre_norm else nn.Identity())
        self.blocks = nn.Sequential(*(Block(dim, heads, add_bias_kv) for _ in range(depth)))

    def forward(self, tokens: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.pre_transformer_layer(tokens)
        for block in self.blocks:
            x = block(x, attn_mask)
        return x


# --- heads and postprocessors ----------------------------------------------------------------


class SelectToken(nn.Module):
    def __init__(self, index: int = 0):
        super().__init__()
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.index]


def class_token_head(dim: int, out_dim: int, dropout: float | None = None) -> nn.Sequential:
    """LayerNorm -> the class token -> linear projection into the shared space."""
    layers: list[nn.Module] = [nn.LayerNorm(dim, eps=1e-6), SelectToken(0)]
    if dropout is not None:  # the IMU head (dropout is inactive at inference)
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(dim, out_dim, bias=False))
    return nn.Sequential(*layers)


class EndOfTextHead(nn.Module):
    """Reads the token at each sequence's end-of-text position, then norm + projection."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, out_dim, bias=False))

    def forward(self, x: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        return self.proj(x[torch.arange(len(x), device=x.device), eot])


class Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1)


class LogitScale(nn.Module):
    """Multiply by ``exp(log_logit_scale)``, capped at 100 (learned for text, fixed otherwise)."""

    def __init__(self, init: float, learnable: bool):
        super().__init__()
        value = torch.tensor(math.log(init))
        if learnable:
            self.log_logit_scale = nn.Parameter(value)
        else:
            self.register_buffer("log_logit_scale", value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_logit_scale.exp().clamp(max=100) * x


def postprocessor(tower: str) -> nn.Module:
    scale = LOGIT_SCALES[tower]
    if tower == "vision":
        return Normalize()
    return nn.Sequential(Normalize(), LogitScale(1 / 0.07 if scale is None else scale, learnable=scale is None))


# --- the model -------------------------------------------------------------------------------


def _dims(size: Any) -> Mapping[str, int]:
    return size if isinstance(size, Mapping) else size.model_dump()


class ImageBindModel(nn.Module):
    """ImageBind with the towers named in ``towers`` (all six by default).

    ``size`` is an :class:`~codi2.plugins.encoders.imagebind.ImageBindSize` (or a mapping with
    its fields). ``video_frames`` fixes the vision positional table: ``video_frames / 2``
    temporal patches of 16 x 16 (2 for the released weights: 257 tokens).
    """

    def __init__(self, size: Any, towers: Iterable[str] = TOWERS, video_frames: int = 2):
        super().__init__()
        d = _dims(size)
        towers = tuple(t for t in TOWERS if t in set(towers))
        if not towers:
            raise ValueError("ImageBindModel needs at least one tower")
        self.towers, self.video_frames = towers, video_frames
        self.out_dim = d["out_embed_dim"]
        self.modality_preprocessors = nn.ModuleDict()
        self.modality_trunks = nn.ModuleDict()
        self.modality_heads = nn.ModuleDict()
        self.modality_postprocessors = nn.ModuleDict()
        for tower in towers:
            dim, depth, heads = d[f"{tower}_embed_dim"], d[f"{tower}_num_blocks"], d[f"{tower}_num_heads"]
            self.modality_preprocessors[tower] = self._preprocessor(tower, dim)
            self.modality_trunks[tower] = Trunk(
                dim, depth, heads, pre_norm=tower == "vision", add_bias_kv=tower not in ("vision", "text")
            )
            if tower == "text":
                self.modality_heads[tower] = EndOfTextHead(dim, self.out_dim)
            else:
                self.modality_heads[tower] = class_token_head(dim, self.out_dim, 0.5 if tower == "imu" else None)
            self.modality_postprocessors[tower] = postprocessor(tower)

    def _preprocessor(self, tower: str, dim: int) -> nn.Module:
        if tower == "vision":
            t, p, _ = VISION_PATCH
            conv = nn.Conv3d(3, dim, kernel_size=VISION_PATCH, stride=VISION_PATCH, bias=False)
            patches = (self.video_frames // t) * (IMAGE_SIZE // p) ** 2
            return PatchPreprocessor(PatchStem(nn.Sequential(RepeatFrames(self.video_frames), conv)), "rgbt_stem", patches, dim)
        if tower == "audio":
            conv = nn.Conv2d(1, dim, kernel_size=AUDIO_PATCH, stride=AUDIO_STRIDE, bias=False)
            grid = lambda n: (n - AUDIO_PATCH) // AUDIO_STRIDE + 1  # noqa: E731
            patches = grid(AUDIO_MEL_BINS) * grid(AUDIO_FRAMES)
            return PatchPreprocessor(PatchStem(conv, nn.LayerNorm(dim)), "rgbt_stem", patches, dim)
        if tower in ("depth", "thermal"):
            k = DEPTH_PATCH if tower == "depth" else THERMAL_PATCH
            conv = nn.Conv2d(1, dim, kernel_size=k, stride=k, bias=False)
            name = "depth_stem" if tower == "depth" else "rgbt_stem"
            return PatchPreprocessor(PatchStem(conv, nn.LayerNorm(dim)), name, (IMAGE_SIZE // k) ** 2, dim)
        if tower == "imu":
            return IMUPreprocessor(dim)
        return TextPreprocessor(dim)

    def _check(self, tower: str) -> None:
        if tower not in self.towers:
            raise ValueError(f"this ImageBindModel has no {tower!r} tower (built: {', '.join(self.towers)})")

    # --- the pieces, for callers that want intermediate results ------------------------------

    def trunk_tokens(self, tower: str, x: torch.Tensor) -> torch.Tensor:
        """The trunk's output tokens ``[B, L, D_tower]`` (what the head reads)."""
        self._check(tower)
        tokens = self.modality_preprocessors[tower](x)
        mask = self.modality_preprocessors[tower].mask if tower == "text" else None
        return self.modality_trunks[tower](tokens, mask)

    def head(self, tower: str, tokens: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """Project trunk tokens into the shared space ``[B, out_dim]`` (not yet normalised).
        Text needs its token ids ``x`` to find the end-of-text positions (the largest id)."""
        if tower == "text":
            return self.modality_heads[tower](tokens, x.argmax(dim=-1))
        return self.modality_heads[tower](tokens)

    def embed(self, tower: str, x: torch.Tensor, *, logit_scale: bool = False) -> torch.Tensor:
        """Unit embeddings ``[B, out_dim]`` of one batch (times the logit scale if asked)."""
        out = self.head(tower, self.trunk_tokens(tower, x), x)
        return self.modality_postprocessors[tower](out) if logit_scale else F.normalize(out, dim=-1)

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The reference model's forward: ``{tower: batch}`` -> ``{tower: [B, out_dim]}``.

        Inputs with 5 or more dimensions are ``[B, clips, ...]``: each clip is embedded and
        the (scaled) clip embeddings are averaged."""
        out = {}
        for tower, x in inputs.items():
            clips = x.ndim >= 5
            if clips:
                b, s = x.shape[:2]
                x = x.reshape(b * s, *x.shape[2:])
            y = self.embed(tower, x, logit_scale=True)
            out[tower] = y.reshape(b, s, -1).mean(dim=1) if clips else y
        return out
