"""Items per second: ``model.generate_batch`` of 8 prompts vs 8 ``model.generate`` calls.

The shipped toy model (``--stack toy``, the default) answers 8 prompts of the toy world's tasks
(drawing, playing, captioning, editing, image + sound in one answer) with the same seeds on
both sides; the run checks that both sides give the same answers (tokens and text identical,
media within the tolerance of batched arithmetic), so they do the same work. With
``--stack tiny`` the benchmark stack of the other scripts (tiny Llama through ``hf-causal-lm``,
ImageBind-architecture encoder, ``sd-unclip``; random weights) answers 8 image prompts with its
end-of-turn ids removed and media spans blocked (``max_media=0``), so every answer is ``--tokens``
text tokens: the LLM side alone; ``--with-media`` lets the random LLM open image spans, which
the tiny ``sd-unclip`` (a stock diffusers pipeline, one generator per row) renders.

Figure: ``items_per_s_ratio`` = median time of the 8 single calls / median time of one batch of
8 (CPU time with one torch thread, see ``_common.Timings``; wall time beside it). Goal >= 3 for
the toy model. Beside it, for the toy model, the same ratio for each part of the work (CPU time
inside the LLM's forward passes, each decoder's diffusion loop, the audio inversion, and the
rest): what gains how much in a batch, and so what bounds the total (docs/toy-model.md).

    python benchmarks/batch_throughput.py [--json] [--repeats N] [--stack toy|tiny] [--batch 8] [--steps N] [--with-media]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # first: it sets the offline environment before any model library loads


#: the toy model's work, timed inside each part on both sides: LLM forward passes, the two
#: decoders' diffusion loops, the mel -> waveform inversion, and the rest ("own": inputs,
#: the generation loop, outputs)
PARTS = ("llm", "image_diffusion", "audio_diffusion", "audio_inversion", "own")


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
    parser.add_argument("--with-media", action="store_true", help="--stack tiny: let the answers hold images (sd-unclip)")
    parser.add_argument("--steps", type=int, default=None, help="diffusion steps on both sides (default: the model's)")
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
            # text only unless --with-media: the random LLM opens image spans that sd-unclip renders
            options = {"max_new_tokens": args.tokens, **({} if args.with_media else {"max_media": 0})}
        model.eval()
        if args.steps is not None:
            options["steps"] = args.steps
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
        parts = None
        if args.stack == "toy":  # which part of the work gains how much (CPU time inside each)
            from codi2.plugins.toy import decoders as toy_decoders

            parts = _common.own_time(
                {"batch": batched, "single": single},
                [(model.llm, "forward"), (model.decoders["image"], "sample"), (model.decoders["audio"], "sample"), (toy_decoders, "mel_to_wave")],
                labels=PARTS[:-1], repeats=args.repeats)

    report = _common.Report("batch_throughput")
    times = timings.clock(args.clock)
    ratio = _common.median(times["single"]) / _common.median(times["batch"])
    report.add("items_per_s_ratio", ratio, "x", ">= 3" if args.stack == "toy" else None, f"{args.batch} single calls / one batch of {args.batch} ({args.clock} time)")
    other = "wall" if args.clock == "cpu" else "cpu"
    report.add(f"items_per_s_ratio_by_{other}", _common.median(timings.clock(other)["single"]) / _common.median(timings.clock(other)["batch"]), "x")
    report.add("batch_items_per_s", args.batch / _common.median(times["batch"]), "items/s")
    report.add("single_items_per_s", args.batch / _common.median(times["single"]), "items/s")
    for part in PARTS if parts else ():
        single_ms, batch_ms = parts["single"][f"{part}_ms"], parts["batch"][f"{part}_ms"]
        report.add(f"{part}_ratio", single_ms / batch_ms, "x", None, f"{single_ms:.0f} ms in {args.batch} single calls / {batch_ms:.0f} ms in one batch (cpu time)")
    report.details.update({
        "stack": args.stack, "batch": args.batch, "steps": args.steps or model.config.generation.steps, "mismatched_answers": mismatches,
        "media_per_round": sum(len(x.media) for x in a), "tokens_per_round": sum(x.tokens for x in a),
        "paired_ratio": _common.paired_ratio(times["single"], times["batch"]), "timings": timings.as_dict(),
    })
    if mismatches:
        report.notes.append(f"{mismatches} answers differ between the sides: the figure compares different work")
    return report.emit(args.json)


if __name__ == "__main__":
    main()
