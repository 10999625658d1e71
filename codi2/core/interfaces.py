"""The three component interfaces every plugin implements: Encoder, LLM, Decoder.

They are ``typing.Protocol``s, importable without torch, listing exactly what the model core
and the contract kit (:mod:`codi2.testing`) call. A component is also expected to be a
``torch.nn.Module`` so that the model can move, freeze and save it (``parameters()``,
``requires_grad_()``, ``to()``, ``train()``); the contract kit checks both. The base classes of
:mod:`codi2.plugins.base` implement everything but what is specific to a component.

Trainable state: every component reports what training changed through
``trained_state_dict()`` and takes it back through ``load_trained_state_dict()``. A frozen
backbone returns ``{}``; a LoRA-adapted LLM returns its adapter weights; a decoder with a
trained fidelity ``conv_in`` returns that layer. A codi2 checkpoint stores exactly this.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from codi2.core.types import ConditionSpec, Media

if TYPE_CHECKING:
    import torch

TRAINABLE_POLICIES = ("frozen", "lora", "adapters", "full")


@dataclass
class LLMOutput:
    """What an LLM forward returns: next-token ``logits [B, L, V]``, last-layer ``hidden
    [B, L, H]`` (after the final norm) and ``past`` (the KV cache, opaque to codi2)."""

    logits: torch.Tensor
    hidden: torch.Tensor
    past: Any = None


@runtime_checkable
class Encoder(Protocol):
    """A frozen, aligned media encoder (ImageBind, OpenCLIP, ...)."""

    name: str
    modalities: tuple[str, ...]
    embed_dim: int

    @property
    def identity(self) -> str:
        """A string that changes whenever the encoder's outputs could (for feature caches)."""

    def tokens_per_item(self, modality: str) -> int:
        """How many feature vectors ``encode`` returns per item of ``modality``."""

    def load_media(self, source: Any, modality: str, *, name: str | None = None) -> Media:
        """Read and validate one item (path, bytes, PIL image, array, tensor or Media)."""

    def encode(self, items: Sequence[Media], modality: str) -> torch.Tensor:
        """Features ``[B, tokens_per_item(modality), embed_dim]`` (float32, no gradient)."""

    def set_trainable(self, policy: str) -> None:
        """Only ``frozen`` (the model calls it once); anything else is a ConfigError."""

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """``{}``: a frozen encoder changes nothing."""

    def load_trained_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Accept ``{}``; raise CheckpointError on anything else."""


@runtime_checkable
class LLM(Protocol):
    """A causal language model driven by ``inputs_embeds``.

    codi2 never edits the LLM's vocabulary: marker tokens (``<image>`` ...) live in the model
    core as extra embedding rows and output logits, with ids ``vocab_size + k``. The LLM only
    has to tokenize plain text and run on embeddings.
    """

    name: str
    hidden_size: int
    #: number of rows ``embed`` accepts and of logits ``forward`` returns
    vocab_size: int
    eos_token_ids: tuple[int, ...]

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` (no BOS/EOS added; special tokens written in text are parsed)."""

    def detokenize(self, ids: Sequence[int]) -> str:
        """Text of ``ids``, special tokens dropped."""

    def render_chat(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool) -> str:
        """The model's chat template applied to ``[{"role", "content": str}]``."""

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings ``[B, L, hidden_size]`` of token ids ``[B, L]``."""

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past: Any = None,
    ) -> LLMOutput:
        """Run the transformer on embeddings, optionally continuing from ``past``."""

    def set_trainable(self, policy: str) -> None:
        """``frozen`` | ``lora`` | ``full``: which of its own parameters train."""

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """What training changed (``{}`` when frozen, adapter weights under LoRA)."""

    def load_trained_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore ``trained_state_dict()`` output; raise CheckpointError on mismatch."""


@runtime_checkable
class Decoder(Protocol):
    """A conditional generator of one modality (a diffusion pipeline in practice)."""

    name: str
    modality: str
    condition: ConditionSpec
    #: True when ``reference`` media is used (the fidelity path of the paper, §5.1)
    supports_reference: bool

    def target_features(self, media: Sequence[Media]) -> torch.Tensor:
        """The paper's ``C_x(x)``: the conditioning ``[B, N, D]`` that would reproduce ``media``."""

    def diffusion_loss(
        self,
        cond: torch.Tensor,
        media: Sequence[Media],
        reference: Sequence[Media | None] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The decoder's training loss for targets ``media`` given ``cond [B, N, D]``;
        a scalar whose gradient flows into ``cond``."""

    def generate(
        self,
        cond: torch.Tensor,
        reference: Sequence[Media | None] | None = None,
        *,
        steps: int | None = None,
        guidance: float | None = None,
        generator: torch.Generator | None = None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> list[Media]:
        """Render one item per row of ``cond [B, N, D]``; ``on_step(done, total)``, when given,
        is called after each diffusion step (optional: progress bars, and raising from it stops
        the rendering). A decoder whose class sets ``per_item_generators = True`` also takes a
        list of generators, one per row (as diffusers pipelines do; :func:`per_item_noise` draws
        such noise), which lets batched generation decode many seeded items in one call; others
        are called once per item."""

    def set_trainable(self, policy: str) -> None:
        """``frozen`` | ``adapters`` (e.g. the fidelity conv_in) | ``full``."""

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """What training changed (``{}`` when frozen; adapter or UNet weights otherwise)."""

    def load_trained_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore ``trained_state_dict()`` output; raise CheckpointError on mismatch."""


def check_state_dict(state: Mapping[str, Any], expected: Mapping[str, Any], owner: str, *,
                     partial: bool = False, hint: str = "") -> None:
    """For ``load_trained_state_dict``: raise :class:`~codi2.errors.CheckpointError` naming the
    first tensor of ``state`` that ``expected`` lacks, lacks in ``state`` (unless ``partial``),
    or has in another shape (``hint`` is appended to that message)."""
    from codi2.errors import CheckpointError

    if not partial:
        for key in expected:
            if key not in state:
                raise CheckpointError(f"{owner}: checkpoint lacks tensor {key!r} ({len(state)} tensors given, {len(expected)} expected)")
    for key, value in state.items():
        if key not in expected:
            raise CheckpointError(f"{owner}: checkpoint has unexpected tensor {key!r}")
        got, want = tuple(value.shape), tuple(expected[key].shape)
        if got != want:
            raise CheckpointError(f"{owner}: tensor {key!r} has shape {got}, expected {want}{hint}")


def per_item_noise(shape: Sequence[int], generator: Any) -> torch.Tensor:
    """Gaussian noise of ``shape`` whose row ``i`` comes from ``generator[i]`` when a list of
    generators is given (row ``i`` then equals what that generator alone would draw for a batch
    of one), else from the one ``generator``."""
    import torch

    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
        return torch.cat([torch.randn((1, *shape[1:]), generator=g) for g in generator])
    return torch.randn(tuple(shape), generator=generator)
