"""Generation: text with the KV cache, and media whenever the model opens a media span.

When the model emits ``<image>`` (or ``<audio>``, ``<video>``), the loop feeds that modality's
learned slots, projects their last hidden states into the decoder's conditioning, renders the
item, feeds the closing marker and goes on with text. One answer may hold several media.

Several conversations are generated together (:func:`generate_batch`): their sequences share
one right-padded LLM batch and one KV cache. Each step feeds every unfinished row its own block
(one token, or an opening marker plus its slots) and masks the rest, so the cache holds masked
holes; since the LLM counts positions over attended tokens only, each row sees exactly what it
would see alone. Rows that open the same modality in the same step are rendered by one decoder
call. A single conversation (:func:`generate`) is a batch of one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from codi2.core.config import GenerationConfig, check_seed, format_validation_error
from codi2.core.messages import Message
from codi2.errors import ConfigError

if TYPE_CHECKING:
    from codi2.core.model import Answer, CoDi2Model


def _options(model: CoDi2Model, options: dict[str, Any]) -> GenerationConfig:
    from pydantic import ValidationError

    base = model.config.generation.model_dump()
    base.update({k: v for k, v in options.items() if v is not None})
    try:
        return GenerationConfig.model_validate(base)
    except ValidationError as exc:
        raise ConfigError(f"generate(): {format_validation_error(exc)}") from None


def _sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> int:
    if temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / temperature, -1)
    if not torch.isfinite(probs).all():  # a temperature so small the logits overflow: greedy
        return int(logits.argmax())
    if top_p < 1:
        sorted_probs, order = probs.sort(descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < top_p
        keep[0] = True  # a top_p below float32's resolution (1e-300 -> 0) keeps the likeliest token
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


def _takes_on_step(decoder: Any) -> bool:
    """Whether ``decoder.generate`` reports its diffusion steps (an optional ``on_step``)."""
    import inspect

    try:
        params = inspect.signature(decoder.generate).parameters
    except (TypeError, ValueError):
        return False
    return "on_step" in params


@torch.no_grad()
def generate(
    model: CoDi2Model,
    messages: Sequence[Message],
    *,
    seed: int | None = None,
    progress: Callable[[str, Answer], None] | None = None,
    **options: Any,
) -> Answer:
    """Generate the assistant's answer to ``messages``.

    ``progress(event, answer)``, if given, is called with the partial answer: ``"token"`` after
    each sampled token (``answer.draft`` holds the text sampled since the last part),
    ``"render:<modality>"`` before a media item is decoded, ``"step"`` after each of its
    diffusion steps (``answer.render_steps`` is ``(done, total)``; only decoders whose
    ``generate`` takes ``on_step`` report them) and ``"media"`` after it.
    Front ends draw progress bars with it; an exception it raises stops generation and
    propagates (a server uses this to enforce per-request deadlines).
    """
    seed = check_seed(seed, "generate(): seed")
    relay = (lambda event, index, answer: progress(event, answer)) if progress is not None else None
    return generate_batch(model, [messages], seeds=[seed], progress=relay, defer_media=False, **options)[0]


@torch.no_grad()
def generate_batch(
    model: CoDi2Model,
    conversations: Sequence[Sequence[Message]],
    *,
    seeds: Sequence[int | None] | None = None,
    max_batch: int = 8,
    progress: Callable[[str, int, Answer], None] | None = None,
    should_stop: Callable[[int], bool] | None = None,
    max_new_tokens_per_item: Sequence[int | None] | None = None,
    on_done: Callable[[int, Answer], None] | None = None,
    defer_media: bool = True,
    **options: Any,
) -> list[Answer]:
    """Answer several conversations, at most ``max_batch`` at a time; one :class:`Answer` each.

    ``seeds[i]`` seeds item ``i`` exactly as ``generate(..., seed=seeds[i])`` would: the same
    tokens, and the same media up to the decoders' batched arithmetic (identical where a
    decoder renders each item alone). ``progress(event, index, answer)`` reports as in
    :func:`generate`, with the item's index; with ``defer_media`` (the default) the media of
    each chunk are rendered after its text, one decoder call per modality, so ``"media"``
    events come last. ``options`` are :func:`generate`'s.

    ``should_stop(index)``, if given, is asked before each token of every unfinished item and
    before its media are rendered (and after each diffusion step of a call whose items all
    stop): when it says True, that item alone leaves the batch, its answer keeps what it had
    (unrendered media dropped) with ``finish_reason`` ``"cancelled"``, and the others go on.
    A server uses it for per-request deadlines and cancellation.

    ``max_new_tokens_per_item[i]`` (None: the ``max_new_tokens`` option) limits item ``i``
    alone, with the answer ``generate(..., max_new_tokens=that)`` gives: items with different
    limits share one batch. ``on_done(index, answer)`` is called with each item's final answer
    as soon as it is complete (its text ended and its media are rendered), before the batch
    ends: a server answers each request without waiting for the longest one.
    """
    if max_batch < 1:
        raise ConfigError(f"generate_batch(): max_batch must be >= 1, got {max_batch}")
    seeds = list(seeds) if seeds is not None else [None] * len(conversations)
    if len(seeds) != len(conversations):
        raise ConfigError(f"generate_batch(): {len(conversations)} conversations but {len(seeds)} seeds")
    seeds = [check_seed(s, f"generate_batch(): seeds[{i}]") for i, s in enumerate(seeds)]
    cfg = _options(model, options)
    limits = list(max_new_tokens_per_item) if max_new_tokens_per_item is not None else [None] * len(conversations)
    if len(limits) != len(conversations):
        raise ConfigError(f"generate_batch(): {len(conversations)} conversations but {len(limits)} max_new_tokens_per_item")
    for i, limit in enumerate(limits):
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"generate_batch(): max_new_tokens_per_item[{i}] must be an integer >= 1, got {limit!r}")
    limits = [cfg.max_new_tokens if limit is None else limit for limit in limits]
    answers: list[Answer] = []
    for first in range(0, len(conversations), max_batch):
        rows = range(first, min(first + max_batch, len(conversations)))
        seqs = [model.sequence(conversations[i], training=False, add_generation_prompt=True) for i in rows]

        def notify(event: str, row: int, answer: Answer, _first: int = first) -> None:
            if progress is not None:
                progress(event, _first + row, answer)

        def stop(row: int, _first: int = first) -> bool:
            return bool(should_stop(_first + row))

        def done(row: int, answer: Answer, _first: int = first) -> None:
            on_done(_first + row, answer)

        answers += _generate_rows(model, seqs, [seeds[i] for i in rows], cfg, notify if progress is not None else None,
                                  defer_media, stop if should_stop is not None else None, [limits[i] for i in rows],
                                  done if on_done is not None else None)  # fmt: skip
    return answers


def _render(decoder: Any, cond: torch.Tensor, reference: list | None, generators: list, steps: int | None,
            guidance: float | None, on_step: Callable[[int, int], None] | None) -> list:
    """Decode the rows of ``cond``: in one call when the decoder takes a generator per row (or
    there is one row, or no seed), else one call per row so that each keeps its own noise."""
    hook = {"on_step": on_step} if on_step is not None and _takes_on_step(decoder) else {}
    if len(generators) == 1 or all(g is None for g in generators) or getattr(decoder, "per_item_generators", False):
        generator = generators[0] if len(generators) == 1 else generators if generators[0] is not None else None
        return decoder.generate(cond, reference, steps=steps, guidance=guidance, generator=generator, **hook)
    items = []
    for k, generator in enumerate(generators):
        ref = [reference[k]] if reference is not None else None
        items += decoder.generate(cond[k : k + 1], ref, steps=steps, guidance=guidance, generator=generator, **hook)
    return items


class _AllStopped(Exception):
    """Raised from a decoder's ``on_step`` when every item of its call should stop."""


def _generate_rows(
    model: CoDi2Model, seqs: list, seeds: list[int | None], cfg: GenerationConfig, report: Callable | None, defer_media: bool,
    should_stop: Callable[[int], bool] | None = None,
    limits: list[int] | None = None,
    on_done: Callable[[int, Answer], None] | None = None,
) -> list[Answer]:
    """Generate for a padded batch of sequences (``limits``: each row's max_new_tokens). Text after a media item depends on its slots'
    hidden states, never on the rendered item, so with ``defer_media`` every item is rendered
    after the text is done (one decoder call per modality for the whole batch); otherwise each
    is rendered as soon as its span closes (what a streaming front end wants)."""
    from codi2.core.model import Answer

    markers, llm = model.markers, model.llm
    device = model.device  # read once: a property walk per token adds up
    batch = model.batch(seqs).to(device)
    n = len(seqs)
    references: list[dict[str, Any]] = [{} for _ in range(n)]
    for modality, entries in batch.inputs.items():
        for row, _, media in entries:  # in order, so the last input of each modality wins
            references[row][modality] = media

    blocked = torch.zeros(markers.vocab_size + len(markers), dtype=torch.bool)
    for modality in markers.modalities:
        blocked[markers.close(modality)] = True
        blocked[markers.open(modality)] = modality not in model.decoders
    blocked = [blocked.to(device).clone() for _ in range(n)]  # per row: max_media blocks one row only
    samplers = [torch.Generator().manual_seed(s) if s is not None else None for s in seeds]
    answers = [Answer(modalities=model.modalities) for _ in range(n)]
    pending: list[list[int]] = [[] for _ in range(n)]
    media_count = [0] * n
    finish = ["length"] * n
    active = set(range(n))

    mask = batch.attention_mask
    alone = n == 1  # one row has no padding and no holes: let the LLM build its plain causal mask
    out = llm.forward(model.inputs_embeds(batch), attention_mask=None if alone else mask)
    rows = torch.arange(n, device=device)
    last = mask.sum(1) - 1
    # each row's newest LLM logits and hidden state (rows not fed in a step keep theirs)
    row_logits, row_hidden = out.logits[rows, last], out.hidden[rows, last]

    def forward(feeds: dict[int, torch.Tensor]) -> None:
        """Feed each row in ``feeds`` its embeddings ``[k, H]``; other rows get masked padding."""
        nonlocal out, mask
        width = max(len(e) for e in feeds.values())
        first = next(iter(feeds.values()))
        embeds = first.new_zeros(n, width, first.shape[-1])
        new_mask = mask.new_zeros(n, width)
        for row, e in feeds.items():
            embeds[row, : len(e)] = e
            new_mask[row, : len(e)] = 1
        mask = torch.cat([mask, new_mask], 1)
        out = llm.forward(embeds, attention_mask=None if alone else mask, past=out.past)
        for row, e in feeds.items():
            row_logits[row], row_hidden[row] = out.logits[row, len(e) - 1], out.hidden[row, len(e) - 1]

    def embed(ids: list[int]) -> torch.Tensor:
        return model.embed_ids(torch.tensor([ids], device=device))[0]

    def notify(event: str, row: int) -> None:
        if report is not None:
            report(event, row, answers[row])

    jobs: list[tuple] = []  # media spans opened and not rendered yet

    def stop(row: int) -> None:
        """Take ``row`` out of the batch (asked by ``should_stop``): no more tokens or media."""
        active.discard(row)
        finish[row] = "cancelled"
        jobs[:] = [job for job in jobs if job[1] != row]

    def stopping(rows_: Sequence[int]) -> list[int]:
        return [row for row in rows_ if finish[row] == "cancelled" or (should_stop is not None and should_stop(row))]

    def render(queue: list[tuple]) -> None:
        """Decode the queued items, one decoder call per modality (see :func:`_render`)."""
        for row in stopping(sorted({job[1] for job in queue})):
            stop(row)
        for modality in dict.fromkeys(job[0] for job in queue):
            group = [job for job in queue if job[0] == modality]
            decoder = model.decoders[modality]
            use_reference = model.config.fidelity and decoder.supports_reference
            reference = [references[job[1]].get(modality) for job in group] if use_reference else None
            rows_ = [job[1] for job in group]

            def on_step(done: int, total: int, rows_: list[int] = rows_) -> None:
                for row in rows_:
                    answers[row].render_steps = (done, total)
                    notify("step", row)
                if should_stop is not None and len(stopping(rows_)) == len(rows_):
                    raise _AllStopped  # nobody waits for this call's items any more

            for row in rows_:
                answers[row].render_steps = None
                notify(f"render:{modality}", row)
            try:
                items = _render(decoder, torch.stack([job[3] for job in group]), reference, [job[5] for job in group],
                                cfg.steps, cfg.guidance, on_step if report is not None or should_stop is not None else None)
            except _AllStopped:
                for row in rows_:
                    stop(row)
                continue
            for (_, row, place, _, name, _), item in zip(group, items):
                item.name = item.name or name
                answers[row].parts[place] = item
                answers[row].render_steps = None
                notify("media", row)
        queue.clear()

    def flush(row: int) -> None:
        if pending[row]:
            answers[row].parts.append(llm.detokenize(pending[row]))
            pending[row].clear()
            answers[row].draft = ""

    completed = [False] * n

    def complete(row: int) -> None:
        """Finish ``row``'s answer (its text ended, its media rendered) and report it."""
        flush(row)
        answers[row].finish_reason = finish[row]
        if finish[row] == "cancelled":  # the places of media it never rendered
            answers[row].parts = [part for part in answers[row].parts if part is not None]
        completed[row] = True
        if on_done is not None:
            on_done(row, answers[row])

    limits = limits or [cfg.max_new_tokens] * n
    for index in range(max(limits)):
        for row in [row for row in active if index >= limits[row]]:  # done at its own limit: "length"
            active.discard(row)
        if on_done is not None:  # rows out of the batch with no media left to render are complete
            waiting = {job[1] for job in jobs}
            for row in range(n):
                if not completed[row] and row not in active and row not in waiting:
                    complete(row)
        if not active:
            break
        logits_all = model.logits(row_logits, row_hidden)
        feeds: dict[int, torch.Tensor] = {}
        text: dict[int, int] = {}  # row -> its new text token, embedded for all rows at once below
        opened: dict[str, list[int]] = defaultdict(list)
        for row in stopping(sorted(active)) if should_stop is not None else ():
            stop(row)
        for row in sorted(active):
            if media_count[row] >= cfg.max_media:
                blocked[row][[markers.open(m) for m in model.decoders]] = True
            token = _sample(logits_all[row].masked_fill(blocked[row], float("-inf")), cfg.temperature, cfg.top_p, samplers[row])
            answers[row].tokens += 1
            marker = markers.modality_of(token)
            if marker is None and token not in llm.eos_token_ids:
                pending[row].append(token)
                if report is not None:  # streaming front ends show the text as it comes
                    answers[row].draft = llm.detokenize(pending[row])
            notify("token", row)
            if token in llm.eos_token_ids:
                finish[row] = "stop"
                active.discard(row)
                continue
            if marker is None:
                if index + 1 < limits[row]:  # the last token's forward would never be read
                    text[row] = token
                continue
            flush(row)
            modality = marker[0]
            feeds[row] = torch.cat([embed([token]), model.slots[modality].to(out.hidden.dtype)])
            opened[modality].append(row)
        if text:
            feeds.update(zip(text, embed(list(text.values()))[:, None]))
        if not feeds:
            continue
        forward(feeds)
        if not opened:
            continue
        for modality, group in opened.items():
            cond = model.output_conditions(out.hidden, modality, [(row, 1) for row in group])
            for row, c in zip(group, cond):
                seed = seeds[row]
                jobs.append((modality, row, len(answers[row].parts), c, f"output{media_count[row]}",
                             torch.Generator().manual_seed(seed + 1 + media_count[row]) if seed is not None else None))
                answers[row].parts.append(None)  # the item's place, filled when it is rendered
                media_count[row] += 1
        if not defer_media:
            render(jobs)
        forward({row: embed([markers.close(m)]) for m, group in opened.items() for row in group})
    render(jobs)
    for row in range(n):
        if not completed[row]:
            complete(row)
    return answers


__all__ = ["generate", "generate_batch"]
