"""The point-cloud encoder and decoder: real (tiny) torch modules implementing codi2's
``Encoder`` and ``Decoder`` interfaces for the ``pointcloud`` modality."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from codi2.core.interfaces import check_state_dict
from codi2.core.types import ConditionSpec, Media
from codi2.errors import MediaError, UnknownModalityError
from codi2_pointcloud.modality import NAME, load_pointcloud


def _check_modality(owner: str, modality: str) -> None:
    if modality != NAME:
        raise UnknownModalityError(f"{owner} handles {NAME!r} only, not {modality!r}")


def _check_items(items: Sequence[Any]) -> list[np.ndarray]:
    for index, item in enumerate(items):
        if not isinstance(item, Media) or item.modality != NAME:
            raise MediaError(f"expected a {NAME} Media, got {getattr(item, 'modality', type(item).__name__)}", item=f"#{index}")
    return [np.asarray(item.data, dtype=np.float32) for item in items]


def _centred(points: np.ndarray) -> np.ndarray:
    """Centred on the mean and scaled into the unit ball (shape, not position or size)."""
    points = points - points.mean(0)
    return points / max(float(np.linalg.norm(points, axis=1).max()), 1e-6)


class PointCloudEncoder(nn.Module):
    """A frozen PointNet-style encoder: one shared MLP per point, max-pooled into one vector.

    The max over points makes the feature independent of point order; centring and scaling
    make it depend on shape alone.
    """

    name = "pointcloud-encoder"
    modalities = (NAME,)
    sample_rate = 16000  # the protocol asks every encoder; point clouds have no audio

    def __init__(self, embed_dim: int = 16, seed: int = 0):
        super().__init__()
        self.embed_dim, self.seed = embed_dim, seed
        self.options = {"embed_dim": embed_dim, "seed": seed}
        generator = torch.Generator().manual_seed(seed)
        self.mlp = nn.Sequential(nn.Linear(3, 64), nn.ReLU(), nn.Linear(64, embed_dim))
        with torch.no_grad():
            for p in self.mlp.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) / math.sqrt(p.shape[-1]))
        self.requires_grad_(False)

    @property
    def identity(self) -> str:
        return f"{self.name}/d{self.embed_dim}/s{self.seed}"

    def tokens_per_item(self, modality: str) -> int:
        _check_modality(f"encoder {self.name!r}", modality)
        return 1

    def load_media(self, source: Any, modality: str, *, name: str | None = None) -> Media:
        _check_modality(f"encoder {self.name!r}", modality)
        return load_pointcloud(source, name=name)

    @torch.no_grad()
    def encode(self, items: Sequence[Media], modality: str) -> torch.Tensor:
        _check_modality(f"encoder {self.name!r}", modality)
        device = next(self.parameters()).device
        feats = [self.mlp(torch.from_numpy(_centred(p)).to(device)).max(0).values for p in _check_items(items)]
        return torch.stack(feats)[:, None].float()

    def set_trainable(self, policy: str) -> None:
        if policy != "frozen":
            raise ValueError(f"encoder {self.name!r} is frozen; policy {policy!r} is not supported")

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_trained_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        check_state_dict(state, {}, f"encoder {self.name!r}")


class PointCloudDecoder(nn.Module):
    """Denoising diffusion over ``points`` points (``[points, 3]`` flattened), conditioned on
    ``tokens x dim`` vectors; DDPM training objective (predict the noise), deterministic DDIM
    sampling. Clouds of any size are resampled to ``points`` points, sorted along x so the
    order the network sees does not depend on the file's."""

    name = "pointcloud-decoder"
    modality = NAME
    supports_reference = False
    timesteps = 100

    def __init__(self, points: int = 32, tokens: int = 2, dim: int = 8, steps: int = 20, seed: int = 0):
        super().__init__()
        self.points, self.default_steps = points, steps
        self.options = {"points": points, "tokens": tokens, "dim": dim, "steps": steps, "seed": seed}
        self.condition = ConditionSpec(tokens, dim)
        torch.manual_seed(seed)
        width = 3 * points
        self.denoiser = nn.Sequential(nn.Linear(width + tokens * dim + 16, 256), nn.SiLU(), nn.Linear(256, 256),
                                      nn.SiLU(), nn.Linear(256, width))  # fmt: skip
        self.features = nn.Linear(width, tokens * dim)  # frozen: C_x(x), what the LLM learns to aim at
        self.features.requires_grad_(False)
        betas = torch.linspace(1e-4, 0.05, self.timesteps)
        self.register_buffer("alphas_bar", torch.cumprod(1 - betas, 0), persistent=False)
        self.policy = "frozen"
        self.restored = False  # holds trained weights from a checkpoint: save them again
        self.set_trainable("frozen")

    def _canonical(self, media: Sequence[Media]) -> torch.Tensor:
        rows = []
        for points in _check_items(media):
            points = _centred(points)
            pick = np.linspace(0, len(points) - 1, self.points).round().astype(int)
            chosen = points[np.argsort(points[:, 0], kind="stable")][pick]
            rows.append(chosen.reshape(-1))
        return torch.from_numpy(np.stack(rows)).to(self.alphas_bar.device)

    def _time(self, t: torch.Tensor) -> torch.Tensor:
        freqs = torch.exp(torch.arange(8, device=t.device) * (-math.log(1000.0) / 8))
        angles = t.float()[:, None] * freqs[None]
        return torch.cat([angles.sin(), angles.cos()], -1)

    def _eps(self, x: torch.Tensor, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.denoiser(torch.cat([x, cond.flatten(1).to(x.dtype), self._time(t)], -1))

    def target_features(self, media: Sequence[Media]) -> torch.Tensor:
        with torch.no_grad():
            return self.features(self._canonical(media)).view(len(media), *self._cond_shape)

    @property
    def _cond_shape(self) -> tuple[int, int]:
        return self.condition.tokens, self.condition.dim

    def diffusion_loss(self, cond: torch.Tensor, media: Sequence[Media], reference: Any = None,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        x0 = self._canonical(media).to(cond.device)
        t = torch.randint(0, self.timesteps, (len(x0),), generator=generator).to(cond.device)
        noise = torch.randn(x0.shape, generator=generator).to(cond.device)
        a = self.alphas_bar[t][:, None]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        return nn.functional.mse_loss(self._eps(xt, cond.float(), t), noise)

    @torch.no_grad()
    def generate(self, cond: torch.Tensor, reference: Any = None, *, steps: int | None = None,
                 guidance: float | None = None, generator: torch.Generator | None = None) -> list[Media]:
        steps = min(steps or self.default_steps, self.timesteps)
        cond = cond.float()
        x = torch.randn((len(cond), 3 * self.points), generator=generator).to(cond.device)
        times = torch.linspace(self.timesteps - 1, 0, steps).round().long().tolist()
        for i, t in enumerate(times):
            a = self.alphas_bar[t]
            a_next = self.alphas_bar[times[i + 1]] if i + 1 < len(times) else torch.tensor(1.0)
            eps = self._eps(x, cond, torch.full((len(x),), t, device=x.device))
            x0 = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1.5, 1.5)
            x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
        return [Media(NAME, row.view(self.points, 3).cpu().numpy().astype(np.float32)) for row in x]

    def set_trainable(self, policy: str) -> None:
        if policy not in ("frozen", "adapters", "full"):
            raise ValueError(f"decoder {self.name!r}: unknown trainable policy {policy!r}")
        self.policy = policy
        self.denoiser.requires_grad_(policy == "full")

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        if self.policy != "full" and not self.restored:
            return {}
        return {f"denoiser.{k}": v.detach().clone() for k, v in self.denoiser.state_dict().items()}

    def load_trained_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        check_state_dict(state, self.state_dict(), f"decoder {self.name!r}", partial=True)
        self.load_state_dict(dict(state), strict=False)
        self.restored = self.restored or bool(state)
