"""Base classes that make a codi2 component short: subclass one and write only what is yours.

- :class:`FrozenEncoder`: a frozen, pretrained encoder over any ``torch.nn.Module``. You set
  ``name``, ``modalities``, ``embed_dim`` and write ``identity``, ``tokens_per_item`` and
  ``encode``; media loading, modality checks and the frozen trainable-state contract are done.
- :class:`DecoderBase`: any decoder. You set ``name``, ``modality``, ``condition`` and write
  ``target_features``, ``diffusion_loss`` and ``generate``; the trainable policy (``frozen`` |
  ``adapters`` | ``full``), the trained state and its checks, and the input checks are done.
- :class:`DiffusersDecoder`: a decoder over a stock diffusers pipeline (never a fork):
  :meth:`DiffusersDecoder.load_pipeline` loads it with clear errors, ``full`` trains its UNet,
  its other parts stay frozen and in eval mode; :func:`noise_and_timesteps` and
  :func:`prediction_target` are the DDPM training step's pieces.
- :class:`TransformersLLM`: an LLM over any transformers ``AutoModelForCausalLM`` and its
  tokenizer (chat template, KV cache, frozen / LoRA / full), the class behind ``hf-causal-lm``.

The contract each one fulfils is :mod:`codi2.core.interfaces`; :mod:`codi2.testing` checks it.
This module imports torch: import it from the module your ``load`` function imports, never
from the module that registers your plugin (see docs/plugins.md).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from codi2.core.interfaces import check_state_dict
from codi2.core.types import Media
from codi2.errors import (
    CheckpointError,
    ComponentLoadError,
    ConfigError,
    MediaError,
    UnknownModalityError,
    pickle_refused,
    pickled_weights,
)
from codi2.plugins.llms._hf_causal_lm_impl import HFCausalLM

DECODER_POLICIES = ("frozen", "adapters", "full")

# ==========================================================================================
# Encoders
# ==========================================================================================


class FrozenEncoder(nn.Module):
    """A frozen, pretrained encoder: modality checks, media loading, and the frozen contract.

    Subclasses set ``name``, ``modalities``, ``embed_dim`` (and ``sample_rate`` if they read
    audio) and implement ``identity``, ``tokens_per_item`` and ``encode``. It never trains:
    ``set_trainable`` accepts only ``"frozen"``, its trained state is empty, and it stays in eval
    mode even inside a model put in training mode (no dropout or batch statistics change its
    features)."""

    name: str = "encoder"
    modalities: tuple[str, ...] = ()
    embed_dim: int = 0
    #: the audio sample rate ``encode`` expects (``load_media`` resamples to it)
    sample_rate: int = 16000

    def check_modality(self, modality: str) -> None:
        if modality not in self.modalities:
            raise UnknownModalityError(
                f"encoder {self.name!r} does not encode {modality!r}; it encodes {', '.join(self.modalities)}"
            )

    def load_media(self, source: Any, modality: str, *, name: str | None = None) -> Media:
        """Read and validate one item (path, bytes, PIL image, array, tensor, Media; text: str),
        audio resampled to ``sample_rate``."""
        from codi2.core.modality import resolve_modalities

        self.check_modality(modality)  # read by the registered modality's spec (audio resampled to our rate)
        return resolve_modalities().load(source, modality, name=name, sample_rate=self.sample_rate)

    def check_items(self, items: Sequence[Media], modality: str) -> list[Media]:
        """Every item is a Media of ``modality`` (errors name the item)."""
        self.check_modality(modality)
        for index, item in enumerate(items):
            if not isinstance(item, Media):
                raise MediaError(f"encode() takes Media items (see load_media), got {type(item).__name__}", item=f"#{index}")
            if item.modality != modality:
                raise MediaError(f"is a {item.modality} item, encoded as {modality}", item=item.label)
        return list(items)

    def set_trainable(self, policy: str) -> None:
        if policy != "frozen":
            raise ConfigError(f"encoder {self.name!r} is a frozen pretrained encoder; policy {policy!r} is not supported")
        self.requires_grad_(False)

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_trained_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        if state:
            raise CheckpointError(
                f"encoder {self.name!r} is frozen and has no trained state, but the checkpoint holds "
                f"{len(state)} tensor(s) for it (first: {sorted(state)[0]!r})"
            )

    def train(self, mode: bool = True) -> FrozenEncoder:
        # Always eval: a parent model's .train() must not switch on dropout here.
        return super().train(False)


# ==========================================================================================
# Decoders
# ==========================================================================================


def check_cond(name: str, cond: torch.Tensor, tokens: int, dim: int, batch: int | None = None) -> None:
    """``cond`` is ``[B, tokens, dim]`` (and ``B == batch`` when given)."""
    if cond.dim() != 3 or tuple(cond.shape[1:]) != (tokens, dim):
        raise ValueError(f"decoder {name!r}: cond must be [B, {tokens}, {dim}], got {tuple(cond.shape)}")
    if batch is not None and cond.shape[0] != batch:
        raise ValueError(f"decoder {name!r}: cond has {cond.shape[0]} rows for {batch} target items")


def check_no_reference(name: str, reference: Sequence[Any] | None) -> None:
    """A decoder without a fidelity path: reference media would be silently ignored."""
    if reference is not None and any(r is not None for r in reference):
        raise MediaError(f"decoder {name!r} has no fidelity path (supports_reference=False); reference media cannot be used")


def check_media(name: str, item: Any, modality: str) -> None:
    if not isinstance(item, Media) or item.modality != modality:
        what = item.modality if isinstance(item, Media) else type(item).__name__
        raise MediaError(f"decoder {name!r} needs {modality} media, got {what}", item=getattr(item, "label", None))


class DecoderBase(nn.Module):
    """Any decoder: the trainable policy, its trained state and the input checks.

    Subclasses set ``name``, ``modality``, ``condition`` (a ``ConditionSpec``) and
    ``supports_reference``, and implement ``target_features``, ``diffusion_loss`` and
    ``generate``. What trains: ``full`` trains :meth:`trainable_modules` (default: every child
    module not in ``frozen_parts``), ``adapters`` trains :meth:`adapter_parameters` (default:
    none), ``frozen`` nothing (gradients still reach ``cond``). ``frozen_parts`` stay in eval
    mode whatever ``train()`` says, so targets are deterministic."""

    name: str = "decoder"
    modality: str = ""
    supports_reference: bool = False
    frozen_parts: tuple[str, ...] = ()
    policy: str = "frozen"
    #: appended to a checkpoint shape-mismatch error (say which option changes the shapes)
    state_hint: str = ""

    def trainable_modules(self) -> dict[str, nn.Module]:
        """What ``full`` trains, by attribute name."""
        return {n: m for n, m in self.named_children() if n not in self.frozen_parts}

    def adapter_parameters(self) -> dict[str, nn.Parameter]:
        """What ``adapters`` trains, by ``state_dict`` key (e.g. a widened fidelity ``conv_in``)."""
        return {}

    def train(self, mode: bool = True) -> DecoderBase:
        super().train(mode)
        for part in self.frozen_parts:
            getattr(self, part).eval()
        return self

    def set_trainable(self, policy: str) -> None:
        if policy not in DECODER_POLICIES:
            raise ConfigError(f"decoder {self.name!r}: unknown trainable policy {policy!r}; known: {', '.join(DECODER_POLICIES)}")
        self.policy = policy
        self.requires_grad_(False)
        if policy == "full":
            for module in self.trainable_modules().values():
                module.requires_grad_(True)
        for param in self.adapter_parameters().values():
            param.requires_grad_(policy in ("adapters", "full"))

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        state = {f"{n}.{k}": v for n, m in self.trainable_modules().items() for k, v in m.state_dict().items()}
        state.update(self.adapter_parameters())
        return state

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        if self.policy == "full":
            return {k: v.detach().clone() for k, v in self._trainable_state().items()}
        if self.policy == "adapters":
            return {k: v.detach().clone() for k, v in self.adapter_parameters().items()}
        return {}

    def load_trained_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore tensors of what ``full`` or ``adapters`` train; CheckpointError names any
        unknown or misshapen tensor before anything is copied."""
        check_state_dict(state, self._trainable_state(), f"decoder {self.name!r}", partial=True, hint=self.state_hint)
        self.load_state_dict(dict(state), strict=False)

    # --- input checks -------------------------------------------------------------------------

    def check_cond(self, cond: torch.Tensor, batch: int | None = None) -> None:
        check_cond(self.name, cond, self.condition.tokens, self.condition.dim, batch)

    def check_reference(self, reference: Sequence[Media | None] | None) -> None:
        if not self.supports_reference:
            check_no_reference(self.name, reference)

    def check_media(self, items: Sequence[Any]) -> list[Media]:
        for item in items:
            check_media(self.name, item, self.modality)
        return list(items)


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


def noise_and_timesteps(latents: torch.Tensor, num_train_timesteps: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian noise like ``latents`` and one random training timestep per row, drawn on the
    CPU from ``generator`` (so a seed gives the same draw on every device)."""
    noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32)
    noise = noise.to(latents.device, latents.dtype)
    t = torch.randint(0, num_train_timesteps, (latents.shape[0],), generator=generator).to(latents.device)
    return noise, t


def prediction_target(scheduler: Any, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the UNet regresses to under the scheduler's ``prediction_type``."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, t)
    if kind == "sample":
        return latents
    raise ConfigError(f"unsupported scheduler prediction_type {kind!r}")


def resolve_device(device: str | None) -> torch.device:
    """``None``: the GPU when there is one, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class DiffusersDecoder(DecoderBase):
    """A decoder over a stock diffusers pipeline: keep the pipeline as ``self.pipeline``, register
    its modules as attributes (``self.unet = pipeline.unet``, ...) so ``.to()`` and
    ``.parameters()`` reach them, and list every part but the UNet in ``frozen_parts``.
    ``full`` trains the UNet; sampling calls the pipeline itself with the conditioning as its
    embeddings. A stock pipeline takes one generator per row (diffusers' ``randn_tensor`` draws
    row ``i`` from ``generator[i]``): a subclass whose ``generate`` hands ``generator`` on to
    such calls sets ``per_item_generators = True``, so a batch of seeded items is one call
    (:func:`codi2.testing.check_decoder` checks each row equals the row generated alone). It is
    not set here: a subclass that draws its own noise from one generator would break."""

    pipeline: Any
    unet: nn.Module

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"unet": self.unet}

    @staticmethod
    def load_pipeline(pipeline_cls: Any, name: str, options: Any) -> Any:
        """``pipeline_cls.from_pretrained(options.model)`` (options as in
        :class:`codi2.plugins.decoders.PipelineOptions`); a missing part of a local folder, an
        unknown hub id offline or a broken file become :class:`ComponentLoadError` naming the
        decoder and the model."""
        from codi2.plugins.decoders._pipeline_dir import check_pipeline_dir

        check_pipeline_dir(name, options.model)
        try:
            pipe = pipeline_cls.from_pretrained(options.model, dtype=getattr(torch, options.dtype), local_files_only=options.local_files_only)
        except pickle.UnpicklingError:
            raise ComponentLoadError(f"decoder {name!r}: {pickle_refused(pickled_weights(options.model))}") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ComponentLoadError(f"decoder {name!r}: cannot load {pipeline_cls.__name__} from {options.model!r}: {exc}") from exc
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def enable_gradient_checkpointing(self) -> None:
        """Recompute the UNet's activations in the backward pass (training memory)."""
        self.unet.enable_gradient_checkpointing()

    @property
    def device(self) -> torch.device:
        # not self.unet.device: diffusers walks every submodule on each access (~4 ms at real size)
        return next(self.unet.parameters()).device


# ==========================================================================================
# LLMs
# ==========================================================================================

#: An LLM over a transformers causal LM: ``TransformersLLM(model, tokenizer, options=None)``
#: with any ``AutoModelForCausalLM`` and its tokenizer; ``options`` (an ``HFCausalLMOptions``)
#: sets the chat template, system prompt, LoRA settings and gradient checkpointing. Subclass it
#: to change how text is tokenized or rendered; see ``codi2/plugins/llms/hf_causal_lm.py``.
TransformersLLM = HFCausalLM


__all__ = ["DECODER_POLICIES", "DecoderBase", "DiffusersDecoder", "FrozenEncoder", "TransformersLLM", "check_cond",
           "check_media", "check_no_reference", "noise_and_timesteps", "prediction_target", "resolve_device",
           "step_callback"]  # fmt: skip
