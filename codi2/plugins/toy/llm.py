"""The toy LLM's directory: a tiny Llama configuration and a tokenizer learnt from the toy world.

:func:`build_toy_llm_dir` writes what ``hf-causal-lm`` loads with ``init: random``: the
transformers ``config.json`` and a Llama-2-style tokenizer (BPE over ``▁``-marked words with
byte fallback, so any text still tokenizes) whose merges make every word of the world's
prompts and captions one token. No weights are written: the codi2 checkpoint holds them
(the LLM is trained in full). The chat template is ``hf-causal-lm``'s fallback
(``user: ...`` / ``assistant: ...</s>``), the shortest one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path


def build_toy_llm_dir(
    directory: str | Path,
    corpus: Iterable[str],
    *,
    hidden_size: int = 128,
    layers: int = 4,
    heads: int = 4,
    vocab_size: int = 640,
    max_positions: int = 512,
) -> Path:
    """Write a tokenizer learnt on ``corpus`` and a Llama configuration to ``directory``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    texts = list(corpus)
    learner = Tokenizer(models.BPE(unk_token="<unk>"))
    learner.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always"), pre_tokenizers.Punctuation()]
    )
    learner.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False))
    learned = json.loads(learner.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for piece, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"), pre_tokenizers.Punctuation()]
    )
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>").save_pretrained(directory)
    LlamaConfig(
        vocab_size=len(vocab), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=max_positions, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True,
    ).save_pretrained(directory)
    return directory
