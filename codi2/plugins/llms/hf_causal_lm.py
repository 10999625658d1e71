"""The ``hf-causal-lm`` LLM plugin: any Hugging Face ``AutoModelForCausalLM`` (Llama-2 by default).

It loads a model and its tokenizer with ``from_pretrained`` (a hub id or a local directory),
runs the transformer on ``inputs_embeds``, and applies a trainable policy: ``frozen``,
``lora`` (peft adapters on the attention projections) or ``full``.

**The vocabulary is never edited.** codi2 keeps its marker tokens (``<image>``, ``</image>``, ...)
and the learned output slots in the model core, as extra embedding rows and logits with ids
``>= vocab_size`` (see :class:`codi2.core.interfaces.LLM`). So this plugin adds no tokens and
never resizes the embedding matrix: the backbone's weights stay byte-identical to the checkpoint
it came from, LoRA checkpoints stay small, and any tokenizer works as shipped.

Options (all validated, unknown keys rejected):

- ``model``: hub id or local directory (default ``meta-llama/Llama-2-7b-chat-hf``, the paper's LLM);
  ``tokenizer``: where the tokenizer comes from (default: ``model``); ``revision``.
- ``dtype``: ``auto`` (the checkpoint's own; the config's with ``init: random``) | ``float32`` |
  ``bfloat16`` | ``float16``; ``device``: where the weights are loaded (default: the CPU, the
  model core moves them; an accelerator loads them straight there, with accelerate).
- ``trainable``: ``frozen`` | ``lora`` | ``full`` (applied at load; ``set_trainable`` changes it;
  the ``instruct`` training stage trains the LLM this way, so ``frozen`` adds no LoRA there).
  The trained state is ``{}`` when frozen, the adapter weights under ``lora`` (a checkpoint
  needs the same ``lora`` options to load back), every weight under ``full``.
- ``lora``: ``r``, ``alpha``, ``dropout``, ``target_modules`` (``auto``: every linear layer of
  the attention blocks, whatever the architecture names them; ``peft``: peft's default for the
  model type; or a list, see :class:`LoraOptions`). The defaults (r=32, alpha=32, dropout=0.1
  on all attention projections) are those of NExT-GPT and PandaGPT, whose model code the CoDi-2
  release derives from; the CoDi-2 release itself adapts the same four projections but does
  not publish its values.
- ``gradient_checkpointing``: recompute activations in the backward pass (non-reentrant, so LoRA
  gradients flow even when the inputs do not require grad); the KV cache is off while training.
- ``attn_implementation``: e.g. ``sdpa``, ``eager``, ``flash_attention_2``.
- ``chat_template``: a Jinja template overriding the tokenizer's; tokenizers without one use
  :data:`FALLBACK_CHAT_TEMPLATE`. ``system_prompt``: prepended as a system message.
- ``local_files_only``: never contact the hub (default: on when ``HF_HUB_OFFLINE`` or
  ``TRANSFORMERS_OFFLINE`` is set).
- ``init``: ``pretrained`` (load weights) | ``random`` (build from a configuration, random
  weights: shape tests, benchmarks, toy models). With ``random``, ``config`` is a transformers
  configuration dict: with a ``model_type`` key it is the whole configuration, without one it
  overrides fields of the configuration stored at ``model``. ``device: "meta"`` (random only)
  builds the model without allocating memory — a Llama-2-7B in well under a second.

docs/llms.md documents every option with examples for each tested family.

This module is light at import: torch, transformers and peft load inside :func:`load`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from codi2.registry.hookspecs import hookimpl

if TYPE_CHECKING:
    from codi2.plugins.llms._hf_causal_lm_impl import HFCausalLM
    from codi2.registry.components import RegisterCallback

NAME = "hf-causal-lm"

#: Used when neither the tokenizer nor the options carry a chat template. One line per message,
#: ``role: content``; assistant turns end with the EOS token so the model learns to stop; the
#: generation prompt is ``assistant:``. BOS opens the conversation when the tokenizer has one.
FALLBACK_CHAT_TEMPLATE = (
    "{{ bos_token or '' }}"
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token or '' }}{% endif %}{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


class LoraOptions(BaseModel):
    """LoRA adapter settings (peft ``LoraConfig``).

    ``target_modules``: ``"auto"`` (default) adapts every linear projection of the model's
    attention blocks, whatever the architecture calls them (``q_proj``/``k_proj``/``v_proj``/
    ``o_proj`` in Llama, ``qkv_proj``/``o_proj`` in Phi-3, ``c_attn``/``c_proj`` in GPT-2,
    ``query_key_value``/``dense`` in GPT-NeoX and Falcon); ``"peft"`` takes peft's own default
    for the model type (``q_proj``/``v_proj`` in Llama); a list names modules the peft way (a
    module's name or the end of its dotted path, ``self_attn.o_proj``). A name that matches
    nothing is an error when nothing matches and a warning when others do; both name the
    attention projections the model has.
    """

    model_config = ConfigDict(extra="forbid")

    r: int = Field(32, ge=1)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: Literal["auto", "peft"] | list[str] = "auto"

    @field_validator("target_modules")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError('give at least one module name, or "auto"')
        return value


class HFCausalLMOptions(BaseModel):
    """Options of the ``hf-causal-lm`` plugin (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    model: str = "meta-llama/Llama-2-7b-chat-hf"
    tokenizer: str | None = None
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str | None = None
    trainable: Literal["frozen", "lora", "full"] = "lora"
    lora: LoraOptions = Field(default_factory=LoraOptions)
    gradient_checkpointing: bool = False
    attn_implementation: str | None = None
    chat_template: str | None = None
    system_prompt: str | None = None
    local_files_only: bool | None = None
    init: Literal["pretrained", "random"] = "pretrained"
    config: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> HFCausalLMOptions:
        if self.config is not None and self.init != "random":
            raise ValueError("'config' builds a randomly initialised model: it needs init='random'")
        if self.device == "meta" and self.init != "random":
            raise ValueError("device 'meta' holds no weights: it needs init='random'")
        return self


def load(options: HFCausalLMOptions) -> HFCausalLM:
    """Build the LLM component described by ``options`` (imports torch and transformers)."""
    from codi2.plugins.llms._hf_causal_lm_impl import load_hf_causal_lm

    return load_hf_causal_lm(options)


@hookimpl
def codi2_register_llms(register: RegisterCallback) -> None:
    register(
        NAME,
        load=load,
        options=HFCausalLMOptions,
        description="Hugging Face causal LM (Llama-2 and any AutoModelForCausalLM), frozen / LoRA / full",
    )
