"""Plumbing shared by the diffusers-backed decoders (sd-unclip, audioldm2, zeroscope).

Imports torch: the registration modules import it only inside ``load``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from codi2.core.types import Media
from codi2.errors import CheckpointError, ComponentLoadError, ConfigError, MediaError
from codi2.plugins.decoders._pipeline_dir import check_pipeline_dir

POLICIES = ("frozen", "adapters", "full")


def load_pipeline(pipeline_cls: Any, name: str, options: Any) -> Any:
    """``pipeline_cls.from_pretrained(options.model)``; failures become :class:`ComponentLoadError`
    naming the decoder and the model id (an unknown hub id offline, a broken folder...)."""
    import torch

    check_pipeline_dir(name, options.model)
    try:
        pipe = pipeline_cls.from_pretrained(
            options.model, dtype=getattr(torch, options.dtype), local_files_only=options.local_files_only
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ComponentLoadError(
            f"decoder {name!r}: cannot load {pipeline_cls.__name__} from {options.model!r}: {exc}"
        ) from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe


def resolve_device(device: str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_cond(name: str, cond: torch.Tensor, tokens: int, dim: int, batch: int | None = None) -> None:
    if cond.dim() != 3 or tuple(cond.shape[1:]) != (tokens, dim):
        raise ValueError(f"decoder {name!r}: cond must be [B, {tokens}, {dim}], got {tuple(cond.shape)}")
    if batch is not None and cond.shape[0] != batch:
        raise ValueError(f"decoder {name!r}: cond has {cond.shape[0]} rows for {batch} target items")


def check_no_reference(name: str, reference: Sequence[Any] | None) -> None:
    """These decoders have no fidelity path: reference media would be silently ignored."""
    if reference is not None and any(r is not None for r in reference):
        raise MediaError(
            f"decoder {name!r} has no fidelity path (supports_reference=False); reference media cannot be used"
        )


def check_media(name: str, item: Any, modality: str) -> None:
    if not isinstance(item, Media) or item.modality != modality:
        what = item.modality if isinstance(item, Media) else type(item).__name__
        raise MediaError(f"decoder {name!r} needs {modality} media, got {what}", item=getattr(item, "label", None))


def step_callback(on_step: Any, steps: int, pipeline: Any = None) -> dict[str, Any]:
    """Keyword arguments that make a stock pipeline report its steps to ``on_step(done, total)``:
    ``callback_on_step_end`` where ``pipeline``'s call takes it, else the older
    ``callback(step, timestep, latents)``; ``{}`` without ``on_step``."""
    if on_step is None:
        return {}
    if pipeline is not None:
        import inspect

        if "callback_on_step_end" in inspect.signature(type(pipeline).__call__).parameters:
            def on_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
                on_step(min(step + 1, steps), steps)
                return tensors

            return {"callback_on_step_end": on_end}
    return {"callback": lambda step, timestep, latents: on_step(min(step + 1, steps), steps), "callback_steps": 1}


def noise_and_timesteps(
    latents: torch.Tensor, num_train_timesteps: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian noise like ``latents`` and one random training timestep per row, drawn on the
    CPU from ``generator`` (so a seed gives the same draw on every device)."""
    noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32)
    noise = noise.to(latents.device, latents.dtype)
    t = torch.randint(0, num_train_timesteps, (latents.shape[0],), generator=generator).to(latents.device)
    return noise, t


def prediction_target(
    scheduler: Any, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """What the UNet regresses to under the scheduler's ``prediction_type``."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, t)
    if kind == "sample":
        return latents
    raise ConfigError(f"unsupported scheduler prediction_type {kind!r}")


class DiffusersDecoderBase(nn.Module):
    """Trainable-state policy shared by the wrapped pipelines: ``frozen`` trains nothing,
    ``adapters`` trains the decoder's adapters (none unless it has a fidelity path),
    ``full`` trains the denoising UNet. Encoders, VAE and vocoder never train; they stay
    in eval mode (no dropout) whatever ``train()`` says, so targets are deterministic."""

    name: str
    frozen_parts: tuple[str, ...] = ()
    policy = "frozen"

    def train(self, mode: bool = True) -> DiffusersDecoderBase:
        super().train(mode)
        for part in self.frozen_parts:
            getattr(self, part).eval()
        return self

    def adapter_parameters(self) -> dict[str, torch.nn.Parameter]:
        return {}

    def enable_gradient_checkpointing(self) -> None:
        """Recompute the denoiser's activations in the backward pass (training memory)."""
        self.unet.enable_gradient_checkpointing()

    def set_trainable(self, policy: str) -> None:
        if policy not in POLICIES:
            known = ", ".join(POLICIES)
            raise ConfigError(f"decoder {self.name!r}: unknown trainable policy {policy!r}; known: {known}")
        self.policy = policy
        self.requires_grad_(False)
        if policy == "full":
            self.unet.requires_grad_(True)
        for param in self.adapter_parameters().values():
            param.requires_grad_(policy in ("adapters", "full"))

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        if self.policy == "full":
            return {f"unet.{k}": v.detach().clone() for k, v in self.unet.state_dict().items()}
        if self.policy == "adapters":
            return {k: v.detach().clone() for k, v in self.adapter_parameters().items()}
        return {}

    def load_trained_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        own = self.state_dict()
        for key, value in state.items():
            if key not in own:
                raise CheckpointError(f"decoder {self.name!r}: unexpected tensor {key!r}")
            if tuple(own[key].shape) != tuple(value.shape):
                raise CheckpointError(
                    f"decoder {self.name!r}: tensor {key!r} has shape {tuple(value.shape)}, "
                    f"expected {tuple(own[key].shape)}"
                )
        self.load_state_dict(dict(state), strict=False)

    @property
    def device(self) -> torch.device:
        # not self.unet.device: diffusers walks every submodule on each access (~4 ms at real size)
        return next(self.unet.parameters()).device

