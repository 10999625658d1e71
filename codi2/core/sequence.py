"""From messages to one interleaved token sequence — the single path all data takes.

The LLM's own chat template formats the turns. Media items enter the template as sentinel
strings, so any template works; the rendered text is then split at the sentinels and each media
item becomes a span wrapped in its modality's markers:

- an input item: ``<image> f_1 ... f_T </image>`` (``T`` encoder features, projected in);
- a generated item (an assistant target): ``<image> s_1 ... s_N </image>`` (``N`` learned slots
  whose last hidden states are projected out to the decoder's conditioning).

Marker tokens are not part of the LLM's vocabulary: they get ids ``vocab_size + k`` and their
own embedding rows in the model core. Only assistant turns are learning targets (labels);
where the template adds a generation prompt (``<|im_start|>assistant``), that part is not.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from codi2.core.config import DEFAULT_MODALITIES
from codi2.core.messages import MediaPart, Message, TextPart
from codi2.errors import MessageError, TemplateError, UnknownModalityError

_SENTINEL = "\ue000{}\ue001"
_SENTINEL_RE = re.compile("\ue000(\\d+)\ue001")
FILL_ID = 0  # id at feature and slot positions; their embeddings are replaced


@dataclass(frozen=True)
class Markers:
    """Ids of the ``<modality>`` / ``</modality>`` markers, placed after the LLM's vocabulary,
    two rows per modality in the order the model config gives (``marker_modalities()``;
    default: the classic image, audio, video, text layout)."""

    vocab_size: int
    modalities: tuple[str, ...] = DEFAULT_MODALITIES

    def open(self, modality: str) -> int:
        if modality not in self.modalities:
            raise UnknownModalityError(
                f"this model has no markers for {modality!r}; it has: {', '.join(self.modalities)}"
            )
        return self.vocab_size + 2 * self.modalities.index(modality)

    def close(self, modality: str) -> int:
        return self.open(modality) + 1

    def __len__(self) -> int:
        return 2 * len(self.modalities)

    def modality_of(self, token_id: int) -> tuple[str, bool] | None:
        """``(modality, is_open)`` for a marker id, else None."""
        k = token_id - self.vocab_size
        if 0 <= k < len(self):
            return self.modalities[k // 2], k % 2 == 0
        return None


@dataclass
class MediaSpan:
    start: int  # first feature / slot position
    length: int
    part: MediaPart
    message: int


@dataclass
class TokenSequence:
    ids: list[int] = field(default_factory=list)
    labels: list[bool] = field(default_factory=list)  # is the token at this position a target
    inputs: list[MediaSpan] = field(default_factory=list)
    outputs: list[MediaSpan] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, ids: Sequence[int], label: bool) -> None:
        self.ids.extend(ids)
        self.labels.extend([label] * len(ids))


def render_pieces(
    messages: Sequence[Message], render: Callable, *, training: bool, add_generation_prompt: bool,
    tokenize: Callable[[str], list[int]] | None = None,
) -> list[tuple[str, bool, int]]:
    """The rendered conversation as ``(text, is_target, message_index)`` pieces.

    Each message's text is the difference between renderings of the conversation up to it and
    up to the one before, so the template decides all formatting. Templates that close every
    rendering with text that moves to the end when more turns follow (Phi-3 writes ``eos_token``
    unless a generation prompt is asked for) are split before that closing text: it is
    recognised as a tail of the shorter rendering that the full conversation ends with too (see
    :func:`_stable_end`). Any other change to earlier text is a :class:`TemplateError` when
    training (turns must be told apart to label them); for generation the whole rendering is
    then one piece.
    """
    chat: list[dict[str, str]] = []
    counter = 0
    for msg in messages:
        content = []
        for part in msg.parts:
            if isinstance(part, TextPart):
                content.append(part.text)
            else:
                content.append(_SENTINEL.format(counter))
                counter += 1
        chat.append({"role": msg.role, "content": "".join(content)})

    renders = [render(chat[: i + 1], add_generation_prompt=False) for i in range(len(messages))]
    final = render(chat, add_generation_prompt=True) if add_generation_prompt else None
    try:
        return _split(messages, chat, renders, final, render, tokenize, training=training)
    except TemplateError:
        if training:
            raise
        # generating needs no turn boundaries (nothing is a target): the whole rendering as one piece
        return [(final if final is not None else (renders[-1] if renders else ""), False, 0)]


def _split(
    messages: Sequence[Message], chat: list[dict[str, str]], renders: list[str], final: str | None,
    render: Callable, tokenize: Callable[[str], list[int]] | None, *, training: bool,
) -> list[tuple[str, bool, int]]:
    ending = renders[-1] if renders else ""
    pieces: list[tuple[str, bool, int]] = []
    prev = ""
    for i, msg in enumerate(messages):
        full = renders[i]  # starts with prev: every cut below keeps the text before it
        target = training and msg.role == "assistant" and msg.target
        if target and i > 0:
            prompt = render(chat[:i], add_generation_prompt=True)
            if prompt.startswith(prev) and full.startswith(prompt):
                pieces.append((prompt[len(prev) :], False, i))
                prev = prompt
        following = renders[i + 1] if i + 1 < len(renders) else final
        end = len(full) if following is None else _stable_end(full, following, ending, len(prev), tokenize)
        if end is None:
            raise TemplateError(
                f"the chat template is not prefix-stable at message {i}: rendering more turns changed "
                "earlier text (not only closing text at the end), so turns cannot be told apart; "
                "set a simpler chat_template"
            )
        pieces.append((full[len(prev) : end], target, i))
        prev = full[:end]
    if final is not None:
        pieces.append((final[len(prev) :], False, len(messages)))
    return pieces


def _stable_end(
    text: str, following: str, ending: str, start: int, tokenize: Callable[[str], list[int]] | None
) -> int | None:
    """Where ``text`` (a rendering) stops being a prefix of ``following`` (the next one), if what
    comes after is closing text: a tail of ``text`` that ``ending`` (the whole conversation's
    rendering) ends with too. The cut moves back to where the tokens before it are those of
    ``text`` (``<|endoftext|>`` and ``<|assistant|>`` share their first characters, but not a
    token). None: no such cut."""
    common = len(os.path.commonprefix([text, following]))
    if common == len(text):
        return common
    shared_tail = len(os.path.commonprefix([text[::-1], ending[::-1]]))
    cuts = range(common, max(start, len(text) - shared_tail) - 1, -1)  # each leaves a tail ending ends with
    if tokenize is not None and cuts:
        whole = tokenize(text[start:])  # this message's piece, tokenized on its own as build_sequence does
        for end in cuts:  # the first cut whose tokens are unchanged by the closing text
            head = tokenize(text[start:end])
            if whole[: len(head)] == head:
                return end
    return cuts[0] if cuts else None


def build_sequence(
    messages: Sequence[Message],
    *,
    tokenize: Callable[[str], list[int]],
    render: Callable,
    markers: Markers,
    input_tokens: Callable[[str], int],
    output_tokens: Callable[[str], int | None],
    training: bool,
    add_generation_prompt: bool,
) -> TokenSequence:
    """Lay out ``messages`` as token ids, labels and media spans.

    ``input_tokens(modality)`` is how many features an encoded item takes; ``output_tokens``
    how many slots a generated item takes (None: the model cannot generate that modality).
    """
    parts = [(i, p) for i, m in enumerate(messages) for p in m.parts if isinstance(p, MediaPart)]
    seq = TokenSequence()
    pieces = render_pieces(messages, render, training=training, add_generation_prompt=add_generation_prompt, tokenize=tokenize)
    for text, target, msg_index in pieces:
        pos = 0
        for match in _SENTINEL_RE.finditer(text):
            if match.start() > pos:
                seq.add(tokenize(text[pos : match.start()]), target)
            pos = match.end()
            owner, part = parts[int(match.group(1))]
            generated = target and part.target and messages[owner].role == "assistant"
            if generated:
                n = output_tokens(part.modality)
                if n is None:
                    raise MessageError(
                        f"message {owner}: assistant {part.modality} {part.label} is a training target, "
                        f"but the model has no {part.modality} decoder (mark it \"target\": false to read it as input)"
                    )
                seq.add([markers.open(part.modality)], True)
                seq.outputs.append(MediaSpan(len(seq), n, part, owner))
            else:
                n = input_tokens(part.modality)
                seq.add([markers.open(part.modality)], False)
                seq.inputs.append(MediaSpan(len(seq), n, part, owner))
            seq.add([FILL_ID] * n, False)
            seq.add([markers.close(part.modality)], False)
        if pos < len(text):
            seq.add(tokenize(text[pos:]), target)
    return seq
