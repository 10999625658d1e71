"""The training data format: JSONL, one conversation per line.

Each line is an object::

    {"id": "edit-0001",                          # optional (str or int)
     "messages": [
       {"role": "user", "content": [
          {"type": "text", "text": "Make "},
          {"type": "image", "path": "media/cat.png"},
          {"type": "text", "text": " look like a painting."}]},
       {"role": "assistant", "content": [{"type": "image", "path": "media/cat-painted.png"}]}],
     "meta": {...}}                              # optional, free-form (builders record provenance)

Messages follow :mod:`codi2.core.messages`: assistant turns are learning targets unless they say
``"target": false``; a media part in a target turn is generated (a training target for the
decoder) unless the part says ``"target": false``; a text part with ``"encode": true`` is read
through the text encoder (the paper's text-only repurposed data).

Media paths are relative to the JSONL file's folder; absolute paths (and ``~``) are accepted as
they are — a dataset that uses them is not relocatable. ``data`` may hold a ``data:`` URI.
URLs are never fetched.

Validation reports every problem with its file, line and field
(``train.jsonl:12: messages[1].content[0].path: media file not found: ...``). With
``on_error="skip"`` bad lines are left out, counted and reported, never dropped silently.
This module does not import torch.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from codi2.core.modality import Modalities, resolve_modalities
from codi2.errors import Codi2Error, DatasetError

RECORD_KEYS = ("id", "messages", "meta")
MESSAGE_KEYS = ("role", "content", "target")
ROLES = ("system", "user", "assistant")
#: at most this many problems are spelled out in one DatasetError
MAX_LISTED = 20


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one line of a dataset file."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


@dataclass
class Sample:
    """A validated conversation with its media paths resolved, and where it came from."""

    messages: list[dict[str, Any]]
    file: str
    line: int
    id: str | int | None = None
    meta: dict[str, Any] | None = None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" + (f" (id {self.id!r})" if self.id is not None else "")


@dataclass
class ValidationReport:
    """What :func:`validate_files` found."""

    files: list[str]
    samples: int = 0
    problems: list[Problem] = field(default_factory=list)
    #: media counts: ``"image in"``, ``"image out"``, ``"text in"`` (encoded text) ...
    media: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        lines = [f"{self.samples} valid sample(s) in {', '.join(self.files)}"]
        if self.media:
            lines.append("media: " + ", ".join(f"{n} {k}" for k, n in sorted(self.media.items())))
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s):")
            lines.extend(f"  {p}" for p in self.problems)
        return "\n".join(lines)


# --- reading and checking one line ------------------------------------------------------------


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any, Problem | None]]:
    """``(line_number, object, problem)`` for each non-blank line; ``problem`` is set (and the
    object None) when the line is not valid JSON."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: dataset file not found")
    # Bytes, decoded line by line: a text-mode reader decodes ahead in blocks, so an invalid
    # byte on line 6 surfaced while reading line 1, and ended the file instead of that line.
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, None, Problem(str(path), number, "", f"not UTF-8 text (byte {exc.start + 1} of the line: {exc.reason})")
                continue
            if not line.strip():
                continue  # a blank line holds no sample
            try:
                yield number, json.loads(line.rstrip("\r\n")), None
            except json.JSONDecodeError as exc:
                yield number, None, Problem(str(path), number, "", f"invalid JSON at column {exc.colno}: {exc.msg}")
            except (ValueError, RecursionError) as exc:  # a 5000-digit number, nesting too deep
                reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).splitlines()[0]
                yield number, None, Problem(str(path), number, "", f"invalid JSON: {reason}")


def resolve_media_path(value: str, base: Path) -> Path:
    """A media path from a dataset: relative to ``base`` (the JSONL's folder) unless absolute."""
    path = Path(value).expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else base / path))


def check_record(record: Any, file: str | Path, line: int, *, decode: bool = False,
                 modalities: Modalities | None = None) -> tuple[Sample | None, list[Problem]]:
    """Validate one parsed line. Returns the sample (paths resolved) or the problems found."""
    modalities = resolve_modalities(modalities)
    file = str(file)
    base = Path(file).resolve().parent
    problems: list[Problem] = []

    def problem(where: str, message: str) -> None:
        problems.append(Problem(file, line, where, message))

    if not isinstance(record, Mapping):
        problem("", f"expected a JSON object with 'messages', got {type(record).__name__}")
        return None, problems
    for key in sorted(set(record) - set(RECORD_KEYS)):
        problem(key, f"unknown key (known: {', '.join(RECORD_KEYS)})")
    if "id" in record and not isinstance(record["id"], (str, int)):
        problem("id", f"must be a string or an integer, got {type(record['id']).__name__}")
    if "meta" in record and not isinstance(record["meta"], Mapping):
        problem("meta", "must be an object")
    messages = record.get("messages")
    if messages is None:
        problem("messages", "missing")
        return None, problems
    if not isinstance(messages, list) or not messages:
        problem("messages", "must be a non-empty list of messages")
        return None, problems

    resolved: list[dict[str, Any]] = []
    media_paths: list[tuple[str, str, Path]] = []  # (field, modality, path) for decoding
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            problem(where, f"expected an object with 'role' and 'content', got {type(message).__name__}")
            continue
        for key in sorted(set(message) - set(MESSAGE_KEYS)):
            problem(f"{where}.{key}", f"unknown key (known: {', '.join(MESSAGE_KEYS)})")
        if message.get("role") not in ROLES:
            problem(f"{where}.role", f"must be one of {', '.join(ROLES)}, got {message.get('role')!r}")
        if "target" in message and not isinstance(message["target"], bool):
            problem(f"{where}.target", "must be true or false")
        content = message.get("content")
        if isinstance(content, str):
            resolved.append(dict(message))
            continue
        if not isinstance(content, list) or not content:
            problem(f"{where}.content", "must be a string or a non-empty list of parts")
            continue
        parts = []
        for j, part in enumerate(content):
            pw = f"{where}.content[{j}]"
            fixed = _check_part(part, pw, base, problem, modalities)
            if fixed is not None:
                parts.append(fixed)
                if fixed.get("type") in modalities.media and "path" in fixed:
                    media_paths.append((f"{pw}.path", fixed["type"], Path(fixed["path"])))
        resolved.append({**message, "content": parts})
    if problems:
        return None, problems

    from codi2.core.messages import normalize_messages

    try:
        normalized = normalize_messages(resolved, modalities=modalities)
    except Codi2Error as exc:
        problem("messages", str(exc))
        return None, problems
    if not any(m.role == "assistant" and m.target for m in normalized):
        problem("messages", "no assistant message to learn from (every training sample needs a target turn)")
        return None, problems
    if decode:
        for where, modality, path in media_paths:
            try:
                modalities.load(path, modality, sample_rate=None)
            except Codi2Error as exc:
                problem(where, str(exc))
        if problems:
            return None, problems
    sample = Sample(resolved, file, line, record.get("id"), dict(record["meta"]) if "meta" in record else None)
    return sample, problems


def _check_part(part: Any, where: str, base: Path, problem: Any, modalities: Modalities) -> dict[str, Any] | None:
    if not isinstance(part, Mapping):
        problem(where, f"expected an object with a 'type', got {type(part).__name__}")
        return None
    kind = part.get("type")
    if kind == "text":
        if not isinstance(part.get("text"), str):
            problem(f"{where}.text", "a text part needs 'text' (a string)")
        if "encode" in part and not isinstance(part["encode"], bool):
            problem(f"{where}.encode", "must be true or false")
        for key in sorted(set(part) - {"type", "text", "encode"}):
            problem(f"{where}.{key}", "unknown key in a text part (known: type, text, encode)")
        return dict(part)
    if kind not in modalities.media:
        problem(f"{where}.type", f"unknown part type {kind!r}; known: text, {', '.join(modalities.media)}")
        return None
    allowed = {"type", "path", "data", "name", "target"}
    for key in sorted(set(part) - allowed):
        problem(f"{where}.{key}", f"unknown key in a {kind} part (known: {', '.join(sorted(allowed))})")
    sources = [k for k in ("path", "data") if part.get(k) is not None]
    if len(sources) != 1:
        problem(where, f"a {kind} part needs exactly one of 'path' or 'data'")
        return None
    fixed = dict(part)
    if "path" in sources:
        if not isinstance(part["path"], str) or not part["path"]:
            problem(f"{where}.path", "must be a non-empty string")
            return None
        path = resolve_media_path(part["path"], base)
        if not path.is_file():
            problem(f"{where}.path", f"media file not found: {part['path']!r} (looked at {path})")
            return None
        fixed["path"] = str(path)
    elif not (isinstance(part["data"], str) and part["data"].startswith("data:")):
        problem(f"{where}.data", "in a JSONL file 'data' must be a data: URI (use 'path' for files)")
        return None
    if "name" in part and not isinstance(part["name"], str):
        problem(f"{where}.name", "must be a string")
    if "target" in part and not isinstance(part["target"], bool):
        problem(f"{where}.target", "must be true or false")
    return fixed


# --- whole files ------------------------------------------------------------------------------


def iter_samples(paths: str | Path | Sequence[str | Path], *, decode: bool = False,
                 modalities: Modalities | None = None) -> Iterator[tuple[Sample | None, list[Problem]]]:
    """Check every line of every file; yields ``(sample, [])`` or ``(None, problems)``.
    ``modalities``: the part types accepted (default: the registered modalities)."""
    modalities = resolve_modalities(modalities)
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        for line, record, bad in iter_jsonl(path):
            if bad is not None:
                yield None, [bad]
                continue
            yield check_record(record, path, line, decode=decode, modalities=modalities)


def validate_files(paths: str | Path | Sequence[str | Path], *, decode: bool = False,
                   modalities: Modalities | None = None) -> ValidationReport:
    """Check files without stopping at the first problem. ``decode`` also reads every media file."""
    files = [str(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    report = ValidationReport(files)
    for sample, problems in iter_samples(files, decode=decode, modalities=modalities):
        if sample is None:
            report.problems.extend(problems)
            continue
        report.samples += 1
        report.media.update(_media_kinds(sample))
    return report


def _media_kinds(sample: Sample) -> Iterable[str]:
    for message in sample.messages:
        content = message["content"]
        if isinstance(content, str):
            continue
        target_turn = message["role"] == "assistant" and message.get("target", True)
        for part in content:
            if part["type"] == "text":
                if part.get("encode"):
                    yield "text in"
            else:
                yield f"{part['type']} {'out' if target_turn and part.get('target', True) else 'in'}"


class ConversationDataset:
    """Validated samples of one or more JSONL files, in file order (a map-style dataset: torch's
    ``DataLoader`` takes it as is). ``skipped`` lists the problems of the lines left out."""

    def __init__(self, paths: str | Path | Sequence[str | Path], *, on_error: Literal["raise", "skip"] = "raise", decode: bool = False,
                 modalities: Modalities | None = None):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.files = [str(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
        self.samples: list[Sample] = []
        self.skipped: list[Problem] = []
        for sample, problems in iter_samples(self.files, decode=decode, modalities=modalities):
            if sample is None:
                self.skipped.extend(problems)
            else:
                self.samples.append(sample)
        if self.skipped and on_error == "raise":
            raise DatasetError(format_problems(self.skipped, header="invalid training data", hint="fix the lines or set data.on_error: skip"))
        if not self.samples:
            raise DatasetError(f"{', '.join(self.files)}: no valid samples" + (f" ({len(self.skipped)} line(s) skipped)" if self.skipped else ""))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]

    def skipped_lines(self) -> int:
        return len({(p.file, p.line) for p in self.skipped})


def format_problems(problems: Sequence[Problem], *, header: str, hint: str = "") -> str:
    """One error message listing up to :data:`MAX_LISTED` problems."""
    lines = [f"{header}: {len(problems)} problem(s)" + (f" ({hint})" if hint else "")]
    lines += [f"  {p}" for p in problems[:MAX_LISTED]]
    if len(problems) > MAX_LISTED:
        lines.append(f"  ... and {len(problems) - MAX_LISTED} more (run `codi2 data validate` for the full list)")
    return "\n".join(lines)


# --- writing ----------------------------------------------------------------------------------


def write_jsonl(path: str | Path, records: Iterable[Mapping[str, Any]]) -> int:
    """Write records as JSONL atomically (a temporary file renamed into place); returns the count."""
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return count
