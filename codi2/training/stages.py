"""Building the model for a run and choosing what trains (the paper's stages).

See :mod:`codi2.training.config` for what each stage trains.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from codi2.core.model import CoDi2Model
from codi2.errors import ConfigError
from codi2.training.config import TrainableConfig, TrainConfig


def build_model(config: TrainConfig, registry: Any) -> tuple[CoDi2Model, set[str]]:
    """The model ``config.model`` names (through the one assembly path, :func:`codi2.assembly.assemble`),
    and which component groups came with trained weights (``"llm"``, ``"decoder.image"`` ...)
    when continuing from a saved codi2 directory."""
    from codi2.assembly import assemble, resolve_model

    spec = config.model
    source = resolve_model(dict(spec) if isinstance(spec, Mapping) else spec, registry)
    model = assemble(source, registry=registry)
    return model, _trained_groups(source.path / "model.safetensors") if source.path is not None else set()


def _trained_groups(weights: Path) -> set[str]:
    if not weights.is_file():
        return set()
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as handle:
        keys = list(handle.keys())
    groups = set()
    for key in keys:
        head, _, rest = key.partition(".")
        groups.add(f"decoder.{rest.partition('.')[0]}" if head == "decoder" else head)
    return groups


def apply_stage(model: CoDi2Model, trainable: TrainableConfig, continued: set[str] = frozenset()) -> None:
    """Make exactly the stage's parts trainable. A component that came with trained weights
    (LoRA of an earlier stage) and is frozen now keeps its policy, so its weights stay in the
    saved model; it only stops receiving gradients."""
    keep_llm = trainable.llm == "frozen" and "llm" in continued
    model.set_trainable(
        input_projectors=trainable.input_projectors, output_side=trainable.output_side, markers=trainable.markers,
        llm=None if keep_llm else trainable.llm,
    )
    if keep_llm:
        model.llm.requires_grad_(False)
    for modality, decoder in model.decoders.items():
        if trainable.decoders == "frozen" and f"decoder.{modality}" in continued:
            decoder.requires_grad_(False)
        else:
            decoder.set_trainable(trainable.decoders)


def enable_gradient_checkpointing(model: CoDi2Model) -> list[str]:
    """Recompute activations in the backward pass through the whole model: the LLM (its own
    checkpointing; required), every decoder that offers it (the diffusion denoiser) and the
    core's projectors. Gradients are unchanged; returns the parts switched."""
    from functools import partial

    from torch.utils.checkpoint import checkpoint

    enable = getattr(model.llm, "enable_gradient_checkpointing", None)
    if enable is None:
        raise ConfigError(f"gradient_checkpointing: llm {model.llm.name!r} does not support it (no enable_gradient_checkpointing())")
    enable()
    parts = ["llm"]
    for modality, decoder in model.decoders.items():
        if hasattr(decoder, "enable_gradient_checkpointing"):
            decoder.enable_gradient_checkpointing()
            parts.append(f"decoders.{modality}")
    for group_name in ("in_proj", "out_proj"):
        for modality, projector in getattr(model, group_name).items():
            # an instance attribute: state-dict names stay as they are; non-reentrant, so
            # parameter gradients flow even when the projector's input needs none
            projector.forward = partial(checkpoint, type(projector).forward.__get__(projector), use_reentrant=False)
            parts.append(f"{group_name}.{modality}")
    return parts


def frozen_parts_to_eval(model: CoDi2Model, *, keep_llm: bool = False) -> None:
    """Frozen backbones run in eval mode (no dropout) while the rest trains. ``keep_llm``: a
    frozen LLM stays in train mode, where gradient checkpointing is active (gradients still
    pass through it to the input projectors)."""
    for part in [*model.encoders, *([] if keep_llm else [model.llm]), *model.decoders.values()]:
        if not any(p.requires_grad for p in part.parameters()):
            part.eval()


def param_groups(model: CoDi2Model, weight_decay: float) -> tuple[list[dict[str, Any]], list[str]]:
    """AdamW groups: weight decay on matrices, none on biases, norms and slot/marker vectors."""
    decay, plain, names = [], [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 and not name.startswith("slots.") else plain).append((name, param))
    groups = []
    for params, wd in ((decay, weight_decay), (plain, 0.0)):
        if params:
            groups.append({"params": [p for _, p in params], "weight_decay": wd})
            names.extend(n for n, _ in params)
    return groups, names


def prepare_registry(registry: Any, plugins: Sequence[str]) -> Any:
    if registry is None:
        from codi2.registry import default_registry

        registry = default_registry()
    present = {p.name for p in registry.plugins()} if plugins else set()
    for module in plugins:
        if module in present:
            continue  # already registered (a second run in the same process)
        try:
            registry.register_plugin(importlib.import_module(module), name=module)
        except ImportError as exc:
            raise ConfigError(f"plugins: cannot import {module!r}: {exc}") from None
        failed = [p.error for p in registry.plugins() if p.name == module and p.error]
        if failed:
            raise ConfigError(f"plugins: {module!r} did not register: {failed[0]}")
    return registry
