"""``text-repurpose``: text-only instructions with phrases turned into encoder features (§4.1).

The paper repurposes text instruction data by replacing phrases with their ImageBind text
features, so the model learns to read features where words were. From an Alpaca-style file
(a JSON array or JSONL of ``{"instruction", "input", "output"}``), random phrases of the
instruction and input — runs of ``min_words`` to ``max_words`` words, seeded, never overlapping,
leading/trailing punctuation left as text — become feature parts::

    {"type": "text", "text": "the red fox", "encode": true}

which the model reads through its text encoder (``<text> f </text>``). The answer stays text.
A ``fraction`` of samples below 1 keeps the rest as plain text.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from codi2.errors import DatasetError
from codi2.training.builders.common import (
    BuilderOptions,
    BuildReport,
    conversation,
    field_of,
    finish,
    read_manifest,
)

NAME = "text-repurpose"
DESCRIPTION = "Alpaca-style text instructions with random phrases replaced by text-encoder features"
_WORD = re.compile(r"\S+")
_EDGE = "\"'`.,;:!?()[]{}<>«»“”‘’-–—"


class Options(BuilderOptions):
    max_phrases: int = Field(2, ge=1)
    min_words: int = Field(1, ge=1)
    max_words: int = Field(3, ge=1)
    #: share of samples that get replaced phrases
    fraction: float = Field(1.0, ge=0, le=1)

    @model_validator(mode="after")
    def _words(self) -> Options:
        if self.max_words < self.min_words:
            raise ValueError(f"max_words ({self.max_words}) is below min_words ({self.min_words})")
        return self


def choose_phrases(text: str, rng: random.Random, *, max_phrases: int, min_words: int, max_words: int) -> list[tuple[int, int]]:
    """Character spans of non-overlapping phrases (sorted), punctuation trimmed off their edges."""
    words = [m.span() for m in _WORD.finditer(text)]
    if len(words) < min_words:
        return []
    taken = [False] * len(words)
    spans = []
    for _ in range(rng.randint(1, max_phrases)):
        n = rng.randint(min_words, min(max_words, len(words)))
        starts = [i for i in range(len(words) - n + 1) if not any(taken[i : i + n])]
        if not starts:
            break
        i = rng.choice(starts)
        start, end = words[i][0], words[i + n - 1][1]
        while start < end and text[start] in _EDGE:
            start += 1
        while end > start and text[end - 1] in _EDGE:
            end -= 1
        if start < end:
            spans.append((start, end))
            for k in range(i, i + n):
                taken[k] = True
    return sorted(spans)


def replace_phrases(text: str, spans: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """``text`` as parts, each span a feature part."""
    parts: list[dict[str, Any]] = []
    pos = 0
    for start, end in spans:
        if start > pos:
            parts.append({"type": "text", "text": text[pos:start]})
        parts.append({"type": "text", "text": text[start:end], "encode": True})
        pos = end
    if pos < len(text):
        parts.append({"type": "text", "text": text[pos:]})
    return parts


def build(options: Options) -> BuildReport:
    source = Path(options.input).expanduser()
    if source.suffix.lower() not in (".json", ".jsonl"):
        raise DatasetError(f"{source}: expected an Alpaca-style .json (array) or .jsonl file")
    rng = random.Random(options.seed)
    records = []
    for index, (where, row) in enumerate(read_manifest(source)):
        if options.limit is not None and len(records) >= options.limit:
            break
        instruction = field_of(row, "instruction", where).strip()
        extra = row.get("input") or ""
        if not isinstance(extra, str):
            raise DatasetError(f"{where}: column 'input' must be a string, got {type(extra).__name__}")
        output = field_of(row, "output", where)
        prompt = instruction + (f"\n\n{extra.strip()}" if extra.strip() else "")
        replaced: list[str] = []
        if rng.random() < options.fraction:
            spans = choose_phrases(prompt, rng, max_phrases=options.max_phrases, min_words=options.min_words, max_words=options.max_words)
            replaced = [prompt[s:e] for s, e in spans]
            user = replace_phrases(prompt, spans)
        else:
            user = [{"type": "text", "text": prompt}]
        meta = {"source": where, "replaced": replaced}
        records.append(conversation(user, output, record_id=f"{NAME}-{index:06d}", meta=meta))
    return finish(NAME, options, records)
