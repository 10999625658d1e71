"""Tiny causal-LM checkpoints built offline, for tests that load ``hf-causal-lm`` the real way.

:func:`build_tiny_causal_lm` does the same for the other families codi2 is tested on
(:data:`FAMILIES`). :func:`build_tiny_llama` writes a randomly initialised ``LlamaForCausalLM`` and a Llama-style
tokenizer to a directory with ``save_pretrained``, so tests can go through the plugin's own
``from_pretrained`` path with no hub. torch, tokenizers and transformers are imported inside
the function.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Text the tokenizer's BPE merges are learned from (any other text still tokenizes, byte by byte).
CORPUS = (
    "hello world, this is a tiny corpus for a tiny llama.",
    "the cat sat on the mat and looked at the red circle.",
    "describe the image please. turn this picture into a painting.",
    "a blue square, a green triangle and an orange circle.",
    "you are a helpful assistant that answers with text and images.",
    "play the sound of rain, then show me a video of the sea.",
)

#: The Llama-2 chat format: ``<s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST] {answer} </s>``,
#: user and assistant turns alternating (anything else is rejected, as Llama-2's template does).
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set system = messages[0]['content'] %}{% set turns = messages[1:] %}"
    "{% else %}{% set system = '' %}{% set turns = messages %}{% endif %}"
    "{% for message in turns %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('roles must alternate user/assistant/user/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}"
    "{% set text = message['content'].strip() %}"
    "{% if loop.first and system %}"
    "{% set text = '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' + text %}{% endif %}"
    "{{ bos_token + '[INST] ' + text + ' [/INST]' }}"
    "{% else %}{{ ' ' + message['content'].strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)


def build_tiny_llama(
    directory: str | Path,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    chat_template: str | None = LLAMA2_CHAT_TEMPLATE,
    seed: int = 0,
) -> Path:
    """Write a tiny random Llama (model + tokenizer) to ``directory`` and return its path.

    The tokenizer is built like Llama-2's: BPE over ``▁``-marked words with byte fallback
    (ids 3-258 are ``<0x00>``-``<0xFF>``), ``<unk>``/``<s>``/``</s>`` at ids 0/1/2, BOS prepended
    when special tokens are added. ``chat_template=None`` leaves the tokenizer without one.
    The model's vocabulary is exactly the tokenizer's.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = Path(directory)
    tokenizer = build_tiny_tokenizer(chat_template=chat_template)
    tokenizer.save_pretrained(directory)
    vocab = tokenizer.get_vocab()

    # the model, sized to the vocabulary
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=256, bos_token_id=1, eos_token_id=2,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


def build_tiny_tokenizer(
    *, chat_template: str | None = None, specials: Sequence[str] = (), bos: str = "<s>", eos: str = "</s>"
) -> Any:
    """A Llama-2-style BPE tokenizer (byte fallback) learned on :data:`CORPUS`; ``specials`` are
    added as special tokens (chat markers such as ``<|im_start|>``), ``bos``/``eos`` name two of
    them (``<s>``/``</s>`` by default)."""
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    # 1. learn merges on the corpus, then lay the vocabulary out the way Llama-2 does
    learner = Tokenizer(models.BPE(unk_token="<unk>"))
    learner.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    learner.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=160, show_progress=False))
    learned = json.loads(learner.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for piece, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]

    bpe = models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True)
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    extra = [t for t in (bos, eos, *specials) if t not in vocab]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos if bos in vocab else None, eos_token=eos if eos in vocab else None,
        unk_token="<unk>",
    )
    if extra:
        tokenizer.add_special_tokens({"additional_special_tokens": extra})
        tokenizer.bos_token, tokenizer.eos_token = bos, eos
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


#: Phi-3-mini's chat template as published with microsoft/Phi-3-mini-4k-instruct: a rendering
#: without a generation prompt ends with ``eos_token``, so it is not prefix-stable.
PHI3_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)

#: ChatML, as Qwen2 / Qwen3 write it (without their tool-calling branches).
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

#: Gemma's turn format (system text folded into the first user turn; the assistant is "model").
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% if messages and messages[0]['role'] == 'system' %}"
    "{% set first = messages[0]['content'] + '\\n\\n' %}{% set turns = messages[1:] %}"
    "{% else %}{% set first = '' %}{% set turns = messages %}{% endif %}"
    "{% for message in turns %}{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + (first if loop.first else '') + message['content'] + '<end_of_turn>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)

#: family -> (model_type, configuration fields, chat template, extra special tokens, eos).
#: Tiny sizes (hidden 64, 2 layers, 4 heads of 16); GPT-2 and GPT-NeoX ship no chat template.
FAMILIES: dict[str, tuple[str, dict[str, Any], str | None, tuple[str, ...], str]] = {
    "llama": ("llama", {}, LLAMA2_CHAT_TEMPLATE, (), "</s>"),
    "mistral": ("mistral", {"sliding_window": None}, LLAMA2_CHAT_TEMPLATE, (), "</s>"),
    "qwen2": ("qwen2", {}, CHATML_TEMPLATE, ("<|im_start|>", "<|im_end|>"), "<|im_end|>"),
    "qwen3": ("qwen3", {"head_dim": 16}, CHATML_TEMPLATE, ("<|im_start|>", "<|im_end|>"), "<|im_end|>"),
    "gemma2": ("gemma2", {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 64},
               GEMMA_TEMPLATE, ("<start_of_turn>", "<end_of_turn>"), "<end_of_turn>"),
    "gemma3": ("gemma3_text", {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 64},
               GEMMA_TEMPLATE, ("<start_of_turn>", "<end_of_turn>"), "<end_of_turn>"),
    "phi3": ("phi3", {"pad_token_id": 0}, PHI3_CHAT_TEMPLATE,
             ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|endoftext|>"), "<|endoftext|>"),
    "gpt2": ("gpt2", {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 256}, None, (), "</s>"),
    "gpt_neox": ("gpt_neox", {"rotary_pct": 0.5}, None, (), "</s>"),
    "olmo": ("olmo", {"pad_token_id": 0}, CHATML_TEMPLATE, ("<|im_start|>", "<|im_end|>"), "<|im_end|>"),
    "falcon": ("falcon", {"new_decoder_architecture": True, "num_kv_heads": 2, "alibi": False},
               CHATML_TEMPLATE, ("<|im_start|>", "<|im_end|>"), "<|im_end|>"),
}  # fmt: skip


def build_tiny_causal_lm(directory: str | Path, family: str, *, seed: int = 0) -> Path:
    """Write a tiny random model of ``family`` (a key of :data:`FAMILIES`: its transformers
    class, a tokenizer with the family's chat markers and template) to ``directory``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    model_type, fields, template, specials, eos = FAMILIES[family]
    directory = Path(directory)
    tokenizer = build_tiny_tokenizer(chat_template=template, specials=specials, eos=eos)
    tokenizer.save_pretrained(directory)
    sizes = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "max_position_embeddings": 256}  # fmt: skip
    if model_type == "gpt2":
        sizes = {}
    config = AutoConfig.for_model(
        model_type, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, **{**sizes, **fields},
    )
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    return directory
