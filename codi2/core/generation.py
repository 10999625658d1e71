"""Generation: text with the KV cache, and media whenever the model opens a media span.

When the model emits ``<image>`` (or ``<audio>``, ``<video>``), the loop feeds that modality's
learned slots, projects their last hidden states into the decoder's conditioning, renders the
item, feeds the closing marker and goes on with text. One answer may hold several media.
"""

from __future__ import annotations

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
    from codi2.core.model import Answer

    cfg = _options(model, options)
    seed = check_seed(seed, "generate(): seed")
    seq = model.sequence(messages, training=False, add_generation_prompt=True)
    batch = model.batch([seq]).to(model.device)
    references = {m: entries[-1][2] for m, entries in batch.inputs.items()}
    markers, llm = model.markers, model.llm

    sampler = torch.Generator().manual_seed(seed) if seed is not None else None
    blocked = torch.zeros(markers.vocab_size + len(markers), dtype=torch.bool)
    for modality in markers.modalities:
        blocked[markers.close(modality)] = True
        blocked[markers.open(modality)] = modality not in model.decoders

    device = model.device  # read once: a property walk per token adds up

    def step(ids: list[int], extra: torch.Tensor | None = None, past: Any = None):
        embeds = model.embed_ids(torch.tensor([ids], device=device))
        if extra is not None:
            embeds = torch.cat([embeds, extra[None].to(embeds.dtype)], 1)
        return llm.forward(embeds, past=past)

    out = llm.forward(model.inputs_embeds(batch))
    answer = Answer(modalities=model.modalities)
    pending: list[int] = []

    def notify(event: str) -> None:
        if progress is not None:
            progress(event, answer)

    def flush() -> None:
        if pending:
            answer.parts.append(model.llm.detokenize(pending))
            pending.clear()
            answer.draft = ""

    def on_step(done: int, total: int) -> None:
        answer.render_steps = (done, total)
        notify("step")

    finish = "length"
    blocked = blocked.to(device)
    media_count = 0
    for index in range(cfg.max_new_tokens):
        logits = model.logits(out.logits[0, -1], out.hidden[0, -1])
        if media_count >= cfg.max_media:
            blocked[[markers.open(m) for m in model.decoders]] = True
        token = _sample(logits.masked_fill(blocked, float("-inf")), cfg.temperature, cfg.top_p, sampler)
        answer.tokens += 1
        marker = markers.modality_of(token)
        if marker is None and token not in llm.eos_token_ids:
            pending.append(token)
            if progress is not None:  # streaming front ends show the text as it comes
                answer.draft = model.llm.detokenize(pending)
        notify("token")
        if token in llm.eos_token_ids:
            finish = "stop"
            break
        if marker is None:
            if index + 1 < cfg.max_new_tokens:  # the last token's forward would never be read
                out = step([token], past=out.past)
            continue
        flush()
        modality = marker[0]
        decoder = model.decoders[modality]
        out = step([token], model.slots[modality], past=out.past)
        cond = model.output_conditions(out.hidden, modality, [(0, 1)])
        reference = [references.get(modality)] if model.config.fidelity and decoder.supports_reference else None
        render_gen = torch.Generator().manual_seed(seed + 1 + media_count) if seed is not None else None
        answer.render_steps = None
        notify(f"render:{modality}")
        # decoders that report their diffusion steps take ``on_step`` (older ones need not)
        steps_hook = {"on_step": on_step} if progress is not None and _takes_on_step(decoder) else {}
        item = decoder.generate(cond, reference, steps=cfg.steps, guidance=cfg.guidance, generator=render_gen, **steps_hook)[0]
        answer.render_steps = None
        item.name = item.name or f"output{media_count}"
        answer.parts.append(item)
        media_count += 1
        notify("media")
        out = step([markers.close(modality)], past=out.past)
    flush()
    answer.finish_reason = finish
    return answer


__all__ = ["generate"]
