"""Answering with text and an image: ``model.generate`` vs LLM generation + decoder call done directly.

Forcing the answer: the stack is first overfitted for a few seconds (text loss only) on one
conversation, "<image> Show this as a painting, please." -> "Here it is: <image>", so that
greedy decoding produces exactly that answer: a few text tokens, the ``<image>`` marker, the
image, and the end-of-turn token. The run checks that both sides emit the same tokens and the
same image (same seed), so they do the same work.

codi2 side: ``model.generate(prompt, media, seed=0)``: chat template, tokenizer, encoder,
projector, prefill, per-token decoding with the KV cache, slots, output projector and the
``sd-unclip`` decoder. Baseline: :class:`_raw.RawAnswer`: the prompt's token ids (rendered and
tokenized once, outside the timing), ``encoder.encode`` + the input projector, one transformers
forward per token with its KV cache, and the stock ``StableUnCLIPImg2ImgPipeline`` call with
``image_embeds``. The baseline thus skips prompt rendering: that cost is codi2's to carry.

Figure: ``answer_ratio`` = median codi2 time / median baseline time (CPU time of this process on
a CPU with one thread, see ``_common.Timings``). Goal <= 1.05. Next to it, ``overhead_ms``: the
CPU time each side spends outside the calls both make (encoder, transformers forward, diffusers
pipeline), codi2 minus baseline (``_common.own_time``): the wrapper's cost without the noise of
the components' run times, which on a shared machine is larger than the effect measured.

    python benchmarks/answer_latency.py [--json] [--repeats N] [--steps S] [--size tiny|small] [--aa]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # first: it sets the offline environment before any model library loads

PROMPT = "{src} Show this as a painting, please."


def main(argv: list[str] | None = None) -> dict:
    parser = _common.base_parser(__doc__.splitlines()[0], repeats=50, warmup=2)
    parser.add_argument("--steps", type=int, default=4, help="diffusion steps of the image (default 4)")
    parser.add_argument("--size", choices=("tiny", "small"), default="small", help="LLM shape (default small)")
    parser.add_argument("--attribute-repeats", type=int, default=20, help="rounds of the overhead attribution (default 20)")
    parser.add_argument("--fit-steps", type=int, default=150, help="at most this many overfitting steps (default 150)")
    parser.add_argument("--workdir", default=None)
    _common.add_aa_option(parser)
    args = parser.parse_args(argv)
    _common.setup(args)

    import _raw
    import _stack
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        model = _stack.build_model(workdir, llm=args.size, encoder="tiny", steps=args.steps)
        source, target = _stack.images(2, seed=3)
        start = time.perf_counter()
        fit_steps = overfit(model, _stack.edit_conversation(source, target), max_steps=args.fit_steps)
        fit_s = time.perf_counter() - start
        model.eval()

        def codi2_answer():
            return model.generate(PROMPT, media={"src": source}, seed=0, max_new_tokens=32)

        answer = codi2_answer()
        if [m.modality for m in answer.media] != ["image"] or answer.finish_reason != "stop":
            raise RuntimeError(f"overfitting did not force the answer: {answer.parts!r} ({answer.finish_reason})")

        from codi2.core.messages import normalize_messages

        def render():
            return model.sequence(normalize_messages(PROMPT, {"src": source}), training=False, add_generation_prompt=True)

        seq = render()  # the baseline gets the prompt's ids and its input item ready-made
        inputs = [(start, media) for _, start, media in model.batch([seq]).inputs["image"]]
        raw = _raw.RawAnswer(model, seq.ids, inputs)
        decoder = model.decoders["image"]

        def raw_answer():
            return raw(answer.tokens, args.steps, decoder.options.guidance, seed=0)

        tokens, image = raw_answer()
        pixels = (np.asarray(image) * 255).round().clip(0, 255).astype(np.uint8)
        if len(tokens) != answer.tokens or not np.array_equal(pixels, answer.media[0].data):
            raise AssertionError("the baseline does not produce codi2's answer (tokens or image differ)")
        times = _common.interleave({"codi2": codi2_answer, "raw": codi2_answer if args.aa else raw_answer},
                                   repeats=args.repeats, warmup=args.warmup)
        seq_s = _common.median(_time(render, 5))
        components = [(model.encoder_for["image"], "encode"), (raw.hf, "forward"), (type(decoder.pipeline), "__call__")]
        own = _common.own_time({"codi2": codi2_answer, "raw": raw_answer}, components, repeats=args.attribute_repeats)

    report = _common.Report("answer_latency")
    if args.aa:
        report.notes.append("A/A run: both sides are the codi2 answer; the ratio shows this machine's noise floor")
    report.compare("answer_ratio", times, args.clock, ("codi2", "raw"), goal="<= 1.05",
                   note="model.generate / LLM generation + decoder call done directly")
    report.add("prompt_rendering", 1000 * seq_s, "ms", note="chat template + tokenizer: in codi2's side only")
    add_overhead(report, own, "encoder, transformers forward, diffusers pipeline call", 1000 * _common.median(times.cpu["raw"]))
    report.details.update({
        "aa": args.aa, "answer": answer.text, "tokens": answer.tokens, "prompt_tokens": len(seq), "diffusion_steps": args.steps,
        "image_shape": list(answer.media[0].data.shape), "size": args.size, "overfit_steps": fit_steps,
        "overfit_s": fit_s, "clock": args.clock, "repeats": args.repeats, "warmup": args.warmup, **times.as_dict(),
    })
    return report.emit(args.json)


def add_overhead(report, own: dict, components: str, baseline_ms: float) -> None:
    """The instrumented overhead: codi2's own time minus the baseline's (see ``_common.own_time``)."""
    extra = own["codi2"]["own_ms"] - own["raw"]["own_ms"]
    report.add("overhead_ms", extra, "ms", note=f"CPU time outside the shared calls ({components}), codi2 minus baseline")
    report.add("overhead_share", extra / baseline_ms, "", note="overhead_ms / the baseline's median CPU time")
    report.details["own_time"] = own


def overfit(model, conversation, *, max_steps: int) -> int:
    """Teach the model one answer (text loss only) until greedy decoding reproduces it."""
    import torch

    model.set_trainable(llm="lora")
    saved = model.config.loss
    model.config.loss = saved.model_copy(update={"feature": False, "diffusion": False})
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-3)
    batch = model.collate([conversation])
    targets = batch.label_mask[:, 1:] & batch.attention_mask[:, 1:].bool()
    model.train()
    try:
        for step in range(1, max_steps + 1):
            losses = model(batch)
            opt.zero_grad(set_to_none=True)
            losses["total"].backward()
            opt.step()
            if step % 10 == 0:
                with torch.no_grad():
                    model.eval()
                    out = model.llm.forward(model.inputs_embeds(batch), attention_mask=batch.attention_mask)
                    model.train()
                    logits = model.logits(out.logits[:, :-1][targets], out.hidden[:, :-1][targets])
                    if bool((logits.argmax(-1) == batch.ids[:, 1:][targets]).all()):
                        return step
        return max_steps
    finally:
        model.config.loss = saved


def _time(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


if __name__ == "__main__":
    main()
