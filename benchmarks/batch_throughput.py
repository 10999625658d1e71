"""Items per second: ``model.generate_batch`` of 8 prompts vs 8 ``model.generate`` calls.

The shipped toy model (``--stack toy``, the default) answers 8 prompts of the toy world's tasks
(drawing, playing, captioning, editing, image + sound in one answer) with the same seeds on
both sides; the run checks that both sides give the same answers (tokens and text identical,
media within the tolerance of batched arithmetic), so they do the same work. With
``--stack tiny`` the benchmark stack of the other scripts (tiny Llama through ``hf-causal-lm``,
ImageBind-architecture encoder, ``sd-unclip``; random weights) answers 8 image prompts with its
end-of-turn ids removed, so every answer is ``--tokens`` text tokens: the LLM side alone.

Figure: ``items_per_s_ratio`` = median time of the 8 single calls / median time of one batch of
8 (CPU time with one torch thread, see ``_common.Timings``; wall time beside it). Goal >= 3 for
the toy model.

    python benchmarks/batch_throughput.py [--json] [--repeats N] [--stack toy|tiny] [--batch 8]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # first: it sets the offline environment before any model library loads


def toy_prompts(count: int) -> tuple[list[str], list[dict | None]]:
    from codi2.toy import world as w

    red, blue = w.to_media(w.ImageItem("circle", "red")), w.to_media(w.ImageItem("square", "blue", "small"))
    tasks = [
        ("Draw a small blue square.", None), ("What is in {a}?", {"a": red}), ("Play a sine tone at G4.", None),
        ("Make {a} green.", {"a": blue}), ("Draw a red circle and play its sound.", None),
        ("Turn {a} into a triangle.", {"a": red}), ("Draw a large yellow triangle.", None), ("What does {a} sound like?", {"a": blue}),
    ]
    picked = [tasks[i % len(tasks)] for i in range(count)]
    return [p for p, _ in picked], [m for _, m in picked]


def main(argv: list[str] | None = None) -> dict:
    parser = _common.base_parser(__doc__.splitlines()[0], repeats=5, warmup=1)
    parser.add_argument("--stack", choices=("toy", "tiny"), default="toy", help="which model (default toy)")
    parser.add_argument("--batch", type=int, default=8, help="prompts per batch (default 8)")
    parser.add_argument("--tokens", type=int, default=16, help="--stack tiny: new tokens per answer (default 16)")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    _common.setup(args)

    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        if args.stack == "toy":
            import codi2

            model = codi2.load("toy", progress=False)
            prompts, media = toy_prompts(args.batch)
            options: dict = {}
        else:
            import _stack

            model = _stack.build_model(Path(args.workdir or tmp), llm="tiny", encoder="tiny", trainable="frozen")
            model.llm.eos_token_ids = ()  # every answer has exactly --tokens tokens
            images = _stack.images(args.batch, seed=1)
            prompts = ["{a} Describe this picture, please."] * args.batch
            media = [{"a": image} for image in images]
            options = {"max_new_tokens": args.tokens}
        model.eval()
        seeds = list(range(args.batch))

        def batched():
            return model.generate_batch(prompts, media, seeds=seeds, max_batch=args.batch, **options)

        def single():
            return [model.generate(p, media=m, seed=s, **options) for p, m, s in zip(prompts, media, seeds)]

        a, b = batched(), single()
        mismatches = 0
        for x, y in zip(a, b):
            same = x.text == y.text and x.tokens == y.tokens and len(x.media) == len(y.media)
            same = same and all(np.allclose(np.asarray(p.data, float), np.asarray(q.data, float), atol=2.0) for p, q in zip(x.media, y.media))
            mismatches += not same
        timings = _common.interleave({"batch": batched, "single": single}, repeats=args.repeats, warmup=args.warmup)

    report = _common.Report("batch_throughput")
    times = timings.clock(args.clock)
    ratio = _common.median(times["single"]) / _common.median(times["batch"])
    report.add("items_per_s_ratio", ratio, "x", ">= 3" if args.stack == "toy" else None, f"{args.batch} single calls / one batch of {args.batch} ({args.clock} time)")
    other = "wall" if args.clock == "cpu" else "cpu"
    report.add(f"items_per_s_ratio_by_{other}", _common.median(timings.clock(other)["single"]) / _common.median(timings.clock(other)["batch"]), "x")
    report.add("batch_items_per_s", args.batch / _common.median(times["batch"]), "items/s")
    report.add("single_items_per_s", args.batch / _common.median(times["single"]), "items/s")
    report.details.update({
        "stack": args.stack, "batch": args.batch, "mismatched_answers": mismatches,
        "media_per_round": sum(len(x.media) for x in a), "tokens_per_round": sum(x.tokens for x in a),
        "paired_ratio": _common.paired_ratio(times["single"], times["batch"]), "timings": timings.as_dict(),
    })
    if mismatches:
        report.notes.append(f"{mismatches} answers differ between the sides: the figure compares different work")
    return report.emit(args.json)


if __name__ == "__main__":
    main()
