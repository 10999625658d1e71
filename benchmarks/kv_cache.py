"""Decoding cost per generated token at 512 vs 32 tokens of context (is the KV cache used?).

``model.generate`` on a text prompt of about ``--long`` and ``--short`` tokens (chat template
included), each with ``--tokens-a`` and ``--tokens-b`` new tokens. The per-token cost at a
context is ``(t(b) - t(a)) / (b - a)``: prefill, encoder and set-up cancel out. With a KV cache a
new token attends to the cached keys, so its cost barely grows with the context; without one the
whole context would be recomputed per token (about 16x the work at 512 vs 32).

Forcing the length: the end-of-turn ids are removed from the LLM component for the run
(``llm.eos_token_ids = ()``), and the model has no decoder, so media markers are blocked: every
answer has exactly the requested number of tokens (checked).

Figure: ``per_token_ratio`` = median ms/token at the long context / median ms/token at the short
one. Goal <= 1.3.
For information, the same ratio of a hand-written greedy loop over the transformers model.

    python benchmarks/kv_cache.py [--json] [--repeats N] [--long 512] [--short 32]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # first: it sets the offline environment before any model library loads

WORDS = ["the", "cat", "sat", "on", "the", "mat", "and", "looked", "at", "the", "red", "circle", "near", "a", "blue", "square"]


def main(argv: list[str] | None = None) -> dict:
    parser = _common.base_parser(__doc__.splitlines()[0], repeats=15, warmup=1)
    parser.add_argument("--long", type=int, default=512, help="long context in tokens (default 512)")
    parser.add_argument("--short", type=int, default=32, help="short context in tokens (default 32)")
    parser.add_argument("--tokens-a", type=int, default=4, help="fewer new tokens (default 4)")
    parser.add_argument("--tokens-b", type=int, default=36, help="more new tokens (default 36)")
    parser.add_argument("--size", choices=("tiny", "small"), default="small", help="LLM shape (default small)")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    _common.setup(args)

    import _raw
    import _stack
    import torch

    from codi2.core.messages import normalize_messages

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        positions = max(1024, args.long + args.tokens_b + 16)
        model = _stack.build_model(workdir, llm=args.size, encoder="tiny", decoder=False, max_positions=positions, trainable="frozen")
        model.eval()
        model.llm.eos_token_ids = ()  # force every answer to its full length

        def prompt(target: int) -> tuple[str, int]:
            """The longest text prompt whose whole sequence has at most ``target`` tokens."""
            def length(n: int) -> int:
                text = " ".join(WORDS[i % len(WORDS)] for i in range(n))
                return len(model.sequence(normalize_messages(text), training=False, add_generation_prompt=True))
            lo, hi = 0, target
            while lo < hi:  # largest n with length(n) <= target
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if length(mid) <= target else (lo, mid - 1)
            return " ".join(WORDS[i % len(WORDS)] for i in range(lo)), length(lo)

        contexts = {"short": prompt(args.short), "long": prompt(args.long)}
        counts = (args.tokens_a, args.tokens_b)
        sides, raw_sides = {}, {}
        hf = model.llm.hf_model
        cache = _raw.cache_argument(hf)
        for name, (text, _) in contexts.items():
            messages = normalize_messages(text)
            ids = torch.tensor([model.sequence(messages, training=False, add_generation_prompt=True).ids])
            for n in counts:
                sides[f"{name}/{n}"] = _answer(model, text, n)
                raw_sides[f"{name}/{n}"] = _raw_decode(hf, cache, ids, n)
        for key, fn in sides.items():
            got = fn().tokens
            if got != int(key.split("/")[1]):
                raise AssertionError(f"{key}: generated {got} tokens")
        times = _common.interleave({**{f"codi2:{k}": f for k, f in sides.items()}, **{f"raw:{k}": f for k, f in raw_sides.items()}},
                                   repeats=args.repeats, warmup=args.warmup)

    clock = times.clock(args.clock)
    step = counts[1] - counts[0]

    def per_token(kind: str, ctx: str) -> list[float]:
        return [(b - a) / step for a, b in zip(clock[f"{kind}:{ctx}/{counts[0]}"], clock[f"{kind}:{ctx}/{counts[1]}"])]

    report = _common.Report("kv_cache")
    ratios = {}
    for kind in ("codi2", "raw"):
        short, long = per_token(kind, "short"), per_token(kind, "long")
        ratios[kind] = _common.median(long) / _common.median(short)
        report.details.setdefault("median_of_paired_ratios", {})[kind] = _common.median([lo / sh for lo, sh in zip(long, short)])
        goal = "<= 1.3" if kind == "codi2" else None
        note = f"ms/token at {contexts['long'][1]} vs {contexts['short'][1]} tokens of context ({args.clock} time)"
        report.add("per_token_ratio" if kind == "codi2" else "raw_per_token_ratio", ratios[kind], "x", goal,
                   note if kind == "codi2" else "the same, hand-written greedy loop over the transformers model")
        report.add(f"{kind}_ms_per_token_short", 1000 * _common.median(short), "ms")
        report.add(f"{kind}_ms_per_token_long", 1000 * _common.median(long), "ms")
    report.details.update({
        "contexts": {k: v[1] for k, v in contexts.items()}, "new_tokens": list(counts), "size": args.size,
        "clock": args.clock, "repeats": args.repeats, "warmup": args.warmup, **times.as_dict(),
    })
    return report.emit(args.json)


def _answer(model, text: str, n: int):
    return lambda: model.generate(text, max_new_tokens=n, temperature=0.0)


def _raw_decode(hf, cache: str, ids, n: int):
    """Greedy decoding with the transformers model's own KV cache (the LLM's intrinsic ratio)."""
    import torch

    @torch.no_grad()
    def run():
        out = hf(input_ids=ids, use_cache=True)
        for _ in range(n - 1):
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            out = hf(input_ids=token, use_cache=True, **{cache: out[cache]})
        return out

    return run


if __name__ == "__main__":
    main()
