"""A tiny Llama checkpoint built offline, for tests that load ``hf-causal-lm`` the real way.

:func:`build_tiny_llama` writes a randomly initialised ``LlamaForCausalLM`` and a Llama-style
tokenizer to a directory with ``save_pretrained``, so tests can go through the plugin's own
``from_pretrained`` path with no hub. torch, tokenizers and transformers are imported inside
the function.
"""

from __future__ import annotations

from pathlib import Path

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
    import json

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

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
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(directory)

    # 2. the model, sized to the vocabulary
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=256, bos_token_id=1, eos_token_id=2,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory
