"""The torch side of the ``hf-causal-lm`` plugin: loading and the :class:`HFCausalLM` module.

Imported only from :func:`codi2.plugins.llms.hf_causal_lm.load`; see that module for the options.
"""

from __future__ import annotations

import inspect
import os
import pickle
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from codi2.core.interfaces import LLMOutput, check_state_dict
from codi2.errors import (
    ComponentLoadError,
    ConfigError,
    TemplateError,
    pickle_refused,
    pickled_weights,
)
from codi2.plugins.llms.hf_causal_lm import FALLBACK_CHAT_TEMPLATE, NAME, HFCausalLMOptions

POLICIES = ("frozen", "lora", "full")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# peft names every adapter tensor lora_A / lora_B / lora_embedding_* / lora_magnitude_*
_LORA_MARK = "lora_"
# where the attention mask seen so far is remembered on a transformers Cache object
_MASK_ATTR = "_codi2_attention_mask"


class HFCausalLM(nn.Module):
    """A Hugging Face causal LM behind codi2's :class:`~codi2.core.interfaces.LLM` interface.

    ``model`` is the transformers model, or the peft ``PeftModel`` wrapping it once LoRA is on;
    :attr:`hf_model` is always the transformers model itself (adapters injected in place).
    """

    name = NAME

    def __init__(self, model: nn.Module, tokenizer: Any, options: HFCausalLMOptions | None = None):
        super().__init__()
        options = options or HFCausalLMOptions()  # chat template, system prompt, LoRA settings
        self.model = model
        self.tokenizer = tokenizer
        self.options = options
        embeddings = model.get_input_embeddings()
        self.vocab_size: int = embeddings.num_embeddings
        self.hidden_size: int = embeddings.embedding_dim
        self.eos_token_ids: tuple[int, ...] = _eos_ids(tokenizer, model)
        own_template = getattr(tokenizer, "chat_template", None)
        self.chat_template: str = options.chat_template or own_template or FALLBACK_CHAT_TEMPLATE
        # transformers 5 renamed the ``past_key_values`` argument and output field to ``cache``
        arguments = inspect.signature(model.forward).parameters
        self._cache_name = "cache" if "cache" in arguments else "past_key_values"
        self.policy = "full"  # what from_pretrained leaves; load() applies options.trainable
        #: what the ``instruct`` training stage sets (``frozen`` keeps the LLM frozen there too)
        self.default_policy: str = options.trainable
        self.lora_targets: list[str] | None = None  # the adapted modules, once LoRA is on
        self.gradient_checkpointing = False
        if options.gradient_checkpointing:
            self.enable_gradient_checkpointing()

    # --- structure ---------------------------------------------------------------------------

    @property
    def has_lora(self) -> bool:
        return hasattr(self.model, "peft_config")

    @property
    def hf_model(self) -> nn.Module:
        return self.model.get_base_model() if self.has_lora else self.model

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations in the backward pass. Non-reentrant, so gradients reach LoRA
        adapters even when the inputs themselves need no gradient."""
        hf, kwargs = self.hf_model, {"use_reentrant": False}
        if hasattr(hf, "activation_checkpointing_enable"):  # the name since transformers 5.2x
            hf.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        self.gradient_checkpointing = True

    # --- text --------------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        """Ids of ``text``; no BOS/EOS added, special tokens written in the text (``<s>``) parsed."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

    def render_chat(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool) -> str:
        """The chat template applied to ``messages``; ``system_prompt`` is prepended as a system
        message unless the conversation already opens with one."""
        import jinja2

        conversation = [dict(m) for m in messages]
        if self.options.system_prompt and not (conversation and conversation[0].get("role") == "system"):
            conversation.insert(0, {"role": "system", "content": self.options.system_prompt})
        try:
            return self.tokenizer.apply_chat_template(
                conversation,
                chat_template=self.chat_template,
                add_generation_prompt=add_generation_prompt,
                tokenize=False,
            )
        except jinja2.TemplateError as exc:
            raise TemplateError(f"llm {NAME!r}: chat template rejected the conversation: {exc}") from None

    # --- tensors -----------------------------------------------------------------------------

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        embeddings = self.model.get_input_embeddings()
        return embeddings(ids.to(embeddings.weight.device))

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past: Any = None,
        *,
        use_cache: bool | None = None,
    ) -> LLMOutput:
        """Run the transformer on ``inputs_embeds [B, L, H]``.

        ``attention_mask`` covers either the past and the new positions (the transformers
        convention) or only the new ones, the past's mask then being the one remembered from
        earlier calls. With a mask, positions count only attended tokens, so a left-padded row
        gives the same result as the unpadded one. ``past`` is the transformers cache returned
        by the previous call; it is extended in place, so continue each past only once.
        ``use_cache`` defaults to on, except in a training forward that builds a graph and
        continues no ``past``: nothing reads that cache (and with gradient checkpointing the
        recomputed backward pass would append to it a second time).
        """
        hf = self.hf_model
        if use_cache is None:
            training_graph = self.training and torch.is_grad_enabled()
            use_cache = not training_graph or (past is not None and not self.gradient_checkpointing)
        weight = self.model.get_input_embeddings().weight
        inputs_embeds = inputs_embeds.to(device=weight.device, dtype=weight.dtype)
        mask = self._full_mask(inputs_embeds, attention_mask, past)
        kwargs: dict[str, Any] = {self._cache_name: past}
        if mask is not None:
            kwargs["attention_mask"] = mask
            kwargs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -inputs_embeds.shape[1]:]
        out = hf(inputs_embeds=inputs_embeds, use_cache=use_cache, output_hidden_states=True, **kwargs)
        cache = out.get(self._cache_name) if use_cache else None
        if cache is not None and mask is not None:
            setattr(cache, _MASK_ATTR, mask)
        # the last entry of hidden_states is the final norm's output (what the LM head reads)
        return LLMOutput(logits=out.logits, hidden=out.hidden_states[-1], past=cache)

    @staticmethod
    def _full_mask(embeds: torch.Tensor, mask: torch.Tensor | None, past: Any) -> torch.Tensor | None:
        batch, new = embeds.shape[:2]
        past_len = past.get_seq_length() if past is not None else 0
        remembered = getattr(past, _MASK_ATTR, None) if past is not None else None
        if mask is None:
            if remembered is None:
                return None  # everything attended: let transformers build the causal mask
            mask = torch.ones(batch, new, dtype=remembered.dtype, device=embeds.device)
        mask = mask.to(embeds.device)
        if past_len and mask.shape[1] == new:
            if remembered is None:
                remembered = torch.ones(batch, past_len, dtype=mask.dtype, device=mask.device)
            mask = torch.cat([remembered.to(device=mask.device, dtype=mask.dtype), mask], 1)
        if mask.shape != (batch, past_len + new):
            raise ValueError(
                f"llm {NAME!r}: attention_mask has shape {tuple(mask.shape)}; expected ({batch}, {new}) "
                f"for the new positions or ({batch}, {past_len + new}) for past and new"
            )
        return mask

    # --- trainable state ---------------------------------------------------------------------

    def set_trainable(self, policy: str) -> None:
        """``frozen``: nothing trains. ``lora``: only LoRA adapters train (injected on first use,
        kept afterwards). ``full``: every weight trains; adapters present are first merged into
        the weights they adapt (exactly), so the model is plain again."""
        if policy not in POLICIES:
            known = ", ".join(POLICIES)
            raise ValueError(f"llm {NAME!r}: unknown trainable policy {policy!r}; known: {known}")
        if policy == "lora":
            self._ensure_lora()
            for param_name, param in self.model.named_parameters():
                param.requires_grad_(_LORA_MARK in param_name)
        elif policy == "full":
            if self.has_lora:
                self.model = self.model.merge_and_unload()
            self.model.requires_grad_(True)
        else:
            self.model.requires_grad_(False)
        self.policy = policy

    def _ensure_lora(self) -> None:
        if self.has_lora:
            return
        from peft import LoraConfig, TaskType, get_peft_model

        lora = self.options.lora
        targets = lora_targets(self.model, lora.target_modules)
        config = LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=targets, bias="none", task_type=TaskType.CAUSAL_LM,
        )
        try:
            self.model = get_peft_model(self.model, config)
        except ValueError as exc:  # a matched module peft cannot adapt
            problem = f"options lora.target_modules {targets}: {exc}"
            raise ConfigError(f"llm {NAME!r}: {problem}") from None
        self.lora_targets = targets

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """``{}`` when frozen; the adapter weights under ``lora``; every weight under ``full``.
        Tensors share storage with the live parameters: clone them to keep a snapshot."""
        if self.policy == "frozen":
            return {}
        if self.policy == "lora":
            from peft import get_peft_model_state_dict

            return {k: v.detach() for k, v in get_peft_model_state_dict(self.model).items()}
        return self._full_state()

    def _full_state(self) -> dict[str, torch.Tensor]:
        # named_parameters drops tied duplicates (lm_head tied to the embeddings), so each
        # tensor is stored once; persistent buffers belong to the state too
        hf = self.hf_model
        saved = hf.state_dict(keep_vars=True)
        state = {n: p.detach() for n, p in hf.named_parameters()}
        state.update({n: b.detach() for n, b in hf.named_buffers() if n in saved})
        return state

    def load_trained_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore :meth:`trained_state_dict` output. LoRA weights switch the policy to ``lora``
        (injecting adapters if needed), a full state to ``full``; ``{}`` restores nothing."""
        state = dict(state)
        if not state:
            return
        if any(_LORA_MARK in key for key in state):
            from peft import get_peft_model_state_dict, set_peft_model_state_dict

            self._ensure_lora()
            expected = get_peft_model_state_dict(self.model)
            _check_state(state, expected, lora_rank=self.options.lora.r)
            set_peft_model_state_dict(self.model, state)
            self.set_trainable("lora")
            return
        expected = self._plain_state_shapes()
        _check_state(state, expected)
        if self.has_lora:  # every weight is about to be overwritten: drop the adapters unmerged
            self.model = self.model.unload()
        self.model.load_state_dict(state, strict=False)  # completeness checked above
        self.set_trainable("full")

    def _plain_state_shapes(self) -> dict[str, torch.Tensor]:
        """The full state's names as they are without adapters (peft renames ``x.weight`` to
        ``x.base_layer.weight`` inside adapted layers)."""
        state = self._full_state()
        return {k.replace(".base_layer.", "."): v for k, v in state.items() if _LORA_MARK not in k}


def attention_projections(model: nn.Module) -> list[str]:
    """The linear layers of ``model``'s attention blocks, as ``block.layer`` names in model order
    (``self_attn.q_proj``, ``attn.c_attn``, ``attention.query_key_value`` ...)."""
    names: list[str] = []
    for path, module in model.named_modules():
        parent, _, leaf = path.rpartition(".")
        block = parent.rpartition(".")[2]
        if _is_linear(module) and ("attn" in block.lower() or "attention" in block.lower()):
            name = f"{block}.{leaf}"
            if name not in names:
                names.append(name)
    return names


def _is_linear(module: nn.Module) -> bool:
    # GPT-2 style models use transformers' Conv1D (a linear layer with transposed weights)
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def lora_targets(model: nn.Module, requested: str | Sequence[str]) -> list[str]:
    """The module names LoRA adapts for the ``lora.target_modules`` option (see its docs)."""
    found = attention_projections(model)
    model_type = getattr(getattr(model, "config", None), "model_type", "?")
    where = f"llm {NAME!r} ({type(model).__name__}, model_type {model_type!r})"
    if requested == "auto":
        if not found:
            raise ConfigError(
                f"{where}: options lora.target_modules 'auto' found no linear layer inside an attention "
                f"block; name the modules to adapt in lora.target_modules"
            )
        return found
    if requested == "peft":
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

        if model_type not in DEFAULTS:
            raise ConfigError(
                f"{where}: options lora.target_modules 'peft': peft has no default for this model type; "
                f"use 'auto' (the attention projections: {', '.join(found) or 'none found'}) or a list"
            )
        return list(DEFAULTS[model_type])
    modules = [path for path, _ in model.named_modules()]
    missing = [t for t in requested if not any(p == t or p.endswith("." + t) for p in modules)]
    if missing:
        problem = (
            f"options lora.target_modules {', '.join(missing)} match no module; "
            f"the attention projections are {', '.join(found) or 'none found'}"
        )
        if len(missing) == len(requested):
            raise ConfigError(f"{where}: {problem}")
        adapted = [t for t in requested if t not in missing]
        warnings.warn(f"{where}: {problem}; LoRA adapts only {', '.join(adapted)}", stacklevel=3)
    return list(requested)


def _check_state(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], *, lora_rank: int | None = None
) -> None:
    hint = f"; options lora.r is {lora_rank}: use the rank the checkpoint was trained with" if lora_rank else ""
    check_state_dict(state, expected, f"llm {NAME!r}", hint=hint)


def _eos_ids(tokenizer: Any, model: nn.Module) -> tuple[int, ...]:
    ids: list[int] = []
    generation = getattr(model, "generation_config", None)
    for source in (getattr(tokenizer, "eos_token_id", None), getattr(generation, "eos_token_id", None)):
        for i in source if isinstance(source, (list, tuple)) else [source]:
            if i is not None and int(i) not in ids:
                ids.append(int(i))
    return tuple(ids)


# --- loading -----------------------------------------------------------------------------------


def load_hf_causal_lm(options: HFCausalLMOptions) -> HFCausalLM:
    local_only = options.local_files_only if options.local_files_only is not None else _offline()
    tokenizer = _load_tokenizer(options, local_only)
    if options.init == "random":
        model = _build_random(options, local_only)
    else:
        model = _load_pretrained(options, local_only)
    llm = HFCausalLM(model, tokenizer, options)
    llm.set_trainable(options.trainable)
    return llm.eval()


def _offline() -> bool:
    flags = (os.environ.get(v, "").strip().lower() for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(flag in ("1", "on", "yes", "true") for flag in flags)


def _load_errors() -> tuple[type[BaseException], ...]:
    # what a missing, unreachable or corrupt checkpoint raises (OSError covers the hub's
    # not-found / offline errors, ValueError bad JSON and unknown architectures)
    from safetensors import SafetensorError

    return (OSError, ValueError, KeyError, SafetensorError)


def _load_failure(what: str, source: str, exc: BaseException, local_only: bool) -> ComponentLoadError:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    looks_like_path = os.path.isabs(source) or source.startswith((".", "~")) or source.count("/") > 1
    if os.path.isdir(os.path.expanduser(source)):
        hint = "the directory must hold files written by save_pretrained"
    elif looks_like_path:
        reason, hint = "no such directory", "check the path"
    elif local_only:
        reason = "not in the local Hugging Face cache and the hub is off (HF_HUB_OFFLINE / local_files_only)"
        hint = (
            f"download it on a connected machine (huggingface-cli download {source}) "
            "or point to a local directory"
        )
    else:
        hint = (
            "check the hub id and revision; gated models (Llama-2) need accepted terms "
            "and huggingface-cli login"
        )
    return ComponentLoadError(f"llm {NAME!r}: cannot load {what}{source!r}: {reason}; {hint}")


def _load_tokenizer(options: HFCausalLMOptions, local_only: bool) -> Any:
    from transformers import AutoTokenizer

    source = options.tokenizer or options.model
    revision = options.revision if options.tokenizer is None else None
    try:
        return AutoTokenizer.from_pretrained(source, revision=revision, local_files_only=local_only)
    except _load_errors() as exc:
        what = "" if source == options.model else "tokenizer "  # "cannot load 'X'" names the model
        raise _load_failure(what, source, exc, local_only) from None


def _model_kwargs(options: HFCausalLMOptions) -> dict[str, Any]:
    import transformers
    from packaging.version import Version

    # transformers renamed torch_dtype to dtype in 4.56
    key = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    kwargs: dict[str, Any] = {key: "auto" if options.dtype == "auto" else _DTYPES[options.dtype]}
    if options.attn_implementation:
        kwargs["attn_implementation"] = options.attn_implementation
    return kwargs


def _load_pretrained(options: HFCausalLMOptions, local_only: bool) -> nn.Module:
    from transformers import AutoModelForCausalLM

    kwargs = _model_kwargs(options)
    if options.device and options.device != "cpu":
        kwargs["device_map"] = {"": options.device}  # load straight onto the device
    try:
        return AutoModelForCausalLM.from_pretrained(
            options.model, revision=options.revision, local_files_only=local_only, **kwargs
        )
    except pickle.UnpicklingError:
        raise ComponentLoadError(f"llm {NAME!r}: {pickle_refused(pickled_weights(options.model))}") from None
    except _load_errors() as exc:
        raise _load_failure("", options.model, exc, local_only) from None


def _build_random(options: HFCausalLMOptions, local_only: bool) -> nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    overrides = dict(options.config or {})
    try:
        if "model_type" in overrides:
            config = AutoConfig.for_model(**overrides)
        else:
            config = AutoConfig.from_pretrained(
                options.model, revision=options.revision, local_files_only=local_only
            )
            for key, value in overrides.items():
                setattr(config, key, value)
    except _load_errors() as exc:
        raise _load_failure("configuration ", options.model, exc, local_only) from None
    kwargs = _model_kwargs(options)
    if options.dtype == "auto":  # no checkpoint to take a dtype from: the config's, else float32
        kwargs.pop("dtype", None)
        kwargs.pop("torch_dtype", None)
    with torch.device(options.device or "cpu"):  # build directly on the device; "meta" allocates nothing
        return AutoModelForCausalLM.from_config(config, **kwargs)
