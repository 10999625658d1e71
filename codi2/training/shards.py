"""Sharded training data: WebDataset tar shards and Hugging Face ``datasets`` Arrow shards.

A JSONL file names its media as separate files; at millions of samples that is millions of
small files and nothing streams. A *shard* holds many whole samples, media inside: each rank
and data-loader worker streams its own shards (see :mod:`codi2.training.stream`).

Two layouts, both written by ``codi2 data convert`` (and ``codi2 data build --format ...``):

- **WebDataset** (a folder of ``shard-000000.tar`` ... plus ``shards.json``). A sample is the
  tar members sharing one key: ``000000017.json`` (the JSONL record) and its media,
  ``000000017.m0.png`` ...; a media part of the record names its member (``"path": "m0.png"``).
  Read with ``webdataset``'s tar iterator (local paths, or any URL it opens: ``pipe:curl ...``).
  ``shards.json`` records each shard's sample count, so a rank plans its epoch, and a resume
  skips whole shards, without opening them.
- **Arrow** (a folder written by ``datasets.Dataset.save_to_disk``: ``data-00000-of-00004.arrow``
  ... with columns ``__key__``, ``json`` and ``media`` (a list of ``{name, data}``)). Each
  ``.arrow`` file is one shard, memory-mapped, so a resume jumps to its sample directly.
- **Parquet** (``data-00000-of-00004.parquet`` ..., the same columns; the layout of datasets on
  the Hugging Face Hub): each file is one shard, streamed with ``datasets``' streaming loader
  (``load_dataset("parquet", ..., streaming=True)``), so a shard may also be a remote URL
  (``hf://datasets/...``) that fsspec opens; its row count comes from the Parquet footer.

A record is checked exactly like a JSONL line (:func:`codi2.training.data.check_record`); a
problem is reported with its shard and key (``shard-000003.tar: key '000000017': ...``).
This module does not import torch.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from codi2.errors import DatasetError
from codi2.training.data import (
    Sample,
    ValidationReport,
    check_record,
    iter_samples,
    resolve_media_path,
)

INDEX_FILE = "shards.json"
INDEX_FORMAT = "codi2-webdataset/1"
#: a placeholder media source while a record is checked; the member's bytes replace it after
_PLACEHOLDER = "data:,"

Format = Literal["webdataset", "arrow", "parquet"]
_TABLE_SUFFIXES = (".arrow", ".parquet")


@dataclass(frozen=True)
class Shard:
    """One shard: where it is, how many samples it holds, and its layout."""

    name: str
    url: str
    samples: int
    kind: Format


@dataclass
class ShardSample(Sample):
    """A validated sample of a shard (media as bytes); ``line`` is its index in the shard."""

    key: str = ""

    @property
    def where(self) -> str:
        return f"{self.file}: key {self.key!r}" + (f" (id {self.id!r})" if self.id is not None else "")


@dataclass
class BadSample:
    """A sample of a shard that failed its check: carried to the trainer to be reported."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


# --- finding shards ------------------------------------------------------------------------------


def is_sharded(path: str | Path) -> bool:
    """Whether a ``data.train`` / ``data.eval`` entry names shards rather than a JSONL file."""
    path = Path(path)
    return path.name == INDEX_FILE or path.is_dir() or path.suffix in _TABLE_SUFFIXES or "://" in str(path)


def find_shards(paths: Sequence[str | Path]) -> list[Shard]:
    """The shards of every entry (a shard folder, its ``shards.json``, or ``.arrow`` files), in order."""
    shards: list[Shard] = []
    for entry in paths:
        path = Path(entry)
        if path.name == INDEX_FILE or (path.is_dir() and (path / INDEX_FILE).is_file()):
            shards += _webdataset_index(path if path.name == INDEX_FILE else path / INDEX_FILE)
        elif path.suffix in _TABLE_SUFFIXES and (path.is_file() or "://" in str(entry)):
            shards.append(_table_shard(str(entry)))
        elif path.is_dir() and sorted(path.glob("*.arrow")):
            shards += [_table_shard(str(p)) for p in sorted(path.glob("*.arrow"))]
        elif path.is_dir() and sorted(path.glob("*.parquet")):
            shards += [_table_shard(str(p)) for p in sorted(path.glob("*.parquet"))]
        elif path.is_dir():
            raise DatasetError(f"{path}: holds neither {INDEX_FILE} (WebDataset shards) nor .arrow or .parquet files "
                               "(Hugging Face datasets); make shards with `codi2 data convert`")
        else:
            raise DatasetError(f"{path}: no such shard folder or file")
    if not shards:
        raise DatasetError(f"{', '.join(map(str, paths))}: no shards")
    names = [s.name for s in shards]
    if len(set(names)) != len(names):
        raise DatasetError(f"shard names repeat across {', '.join(map(str, paths))}: give each shard folder once")
    return shards


def _webdataset_index(index: Path) -> list[Shard]:
    if not index.is_file():
        raise DatasetError(f"{index}: missing (WebDataset shards need the index `codi2 data convert` writes)")
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        entries = data["shards"] if data.get("format") == INDEX_FORMAT else None
        if entries is None:
            raise DatasetError(f"{index}: not a codi2 shard index (format {data.get('format')!r}, expected {INDEX_FORMAT!r})")
        shards = []
        for entry in entries:
            url = str(entry["url"])
            local = url if "://" in url or url.startswith("pipe:") else str(index.parent / url)
            shards.append(Shard(f"{index.parent.name}/{Path(url).name}", local, int(entry["samples"]), "webdataset"))
        return shards
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DatasetError(f"{index}: malformed shard index ({type(exc).__name__}: {exc})") from None


def _table_shard(url: str) -> Shard:
    """An Arrow file (memory-mapped) or a Parquet file (local or remote: its footer only)."""
    import pyarrow as pa

    name = "/".join(url.rstrip("/").split("/")[-2:])
    try:
        if url.endswith(".parquet"):
            import fsspec
            import pyarrow.parquet as pq

            with fsspec.open(url, "rb") as handle:
                return Shard(name, url, pq.ParquetFile(handle).metadata.num_rows, "parquet")
        with pa.memory_map(url) as source:
            return Shard(name, url, pa.ipc.open_stream(source).read_all().num_rows, "arrow")
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise DatasetError(f"{url}: not a readable {Path(url).suffix[1:]} shard ({exc})") from None


# --- reading one shard ----------------------------------------------------------------------------


def read_shard(shard: Shard, skip: int = 0) -> Iterator[tuple[int, str, bytes | None, dict[str, bytes]]]:
    """``(index, key, record JSON bytes, media members)`` for each sample of ``shard`` from
    sample ``skip`` on. An unreadable shard raises DatasetError naming it."""
    if shard.kind in ("arrow", "parquet"):
        yield from _read_table(shard, skip)
    else:
        yield from _read_tar(shard, skip)


def _read_tar(shard: Shard, skip: int) -> Iterator[tuple[int, str, bytes | None, dict[str, bytes]]]:
    from webdataset.tariterators import group_by_keys, tar_file_expander, url_opener

    def stop(exc: Exception) -> bool:
        if isinstance(exc, DatasetError):
            raise exc
        raise DatasetError(f"{shard.name}: unreadable shard ({exc.args[0] if exc.args else type(exc).__name__})")

    try:
        opened = url_opener([{"url": shard.url}], handler=stop)
        samples = group_by_keys(tar_file_expander(opened, handler=stop), handler=stop)
        for index, sample in enumerate(samples):
            if index < skip:
                continue
            members = {k: v for k, v in sample.items() if not k.startswith("__") and k != "json"}
            yield index, sample["__key__"], sample.get("json"), members
    except (OSError, ValueError, EOFError, tarfile.TarError) as exc:
        raise DatasetError(f"{shard.name}: unreadable shard ({exc})") from None


def _read_table(shard: Shard, skip: int) -> Iterator[tuple[int, str, bytes | None, dict[str, bytes]]]:
    import datasets

    datasets.disable_progress_bars()
    try:
        if shard.kind == "arrow":  # memory-mapped: a resume indexes its row directly
            table = datasets.Dataset.from_file(shard.url, in_memory=False)
            columns, rows = table.column_names, (table[i] for i in range(skip, len(table)))
        else:  # streamed: nothing but the rows read is held
            table = datasets.load_dataset("parquet", data_files=[shard.url], split="train", streaming=True)
            columns, rows = list(table.features or {}), iter(table.skip(skip))
    except Exception as exc:  # noqa: BLE001 (datasets raises many kinds; all mean "cannot read this shard")
        raise DatasetError(f"{shard.name}: unreadable shard ({exc})") from None
    missing = {"__key__", "json"} - set(columns)
    if missing:
        raise DatasetError(f"{shard.name}: {shard.kind} shard without column(s) {sorted(missing)} (has {columns})")
    for index, row in enumerate(rows, start=skip):
        json_value = row["json"]
        members = {m["name"]: m["data"] for m in row.get("media") or []}
        yield index, str(row["__key__"]), json_value.encode("utf-8") if isinstance(json_value, str) else json_value, members


def to_sample(shard: Shard, index: int, key: str, raw: bytes | None, members: dict[str, bytes]) -> ShardSample | BadSample:
    """Check one sample of a shard like a JSONL line; media parts get their members' bytes."""
    where = f"{shard.name}: key {key!r}"
    if raw is None:
        return BadSample(where, "no .json member (the conversation)")
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, a 5000-digit number, too deep
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).splitlines()[0]
        return BadSample(where, f"invalid JSON ({reason})")
    fills: list[tuple[int, int, bytes]] = []
    if isinstance(record, dict) and isinstance(record.get("messages"), list):
        record = {**record, "messages": [dict(m) if isinstance(m, dict) else m for m in record["messages"]]}
        for i, message in enumerate(record["messages"]):
            content = message.get("content") if isinstance(message, dict) else None
            if not isinstance(content, list):
                continue
            content = message["content"] = [dict(p) if isinstance(p, dict) else p for p in content]
            for j, part in enumerate(content):
                if isinstance(part, dict) and part.get("type") != "text" and isinstance(part.get("path"), str):
                    member = part["path"]
                    if member not in members:
                        return BadSample(where, f"messages[{i}].content[{j}].path: no member {member!r} in the sample (has {sorted(members)})")
                    fills.append((i, j, members[member]))
                    part.pop("path")
                    part["data"] = _PLACEHOLDER
    sample, problems = check_record(record, shard.name, index)
    if sample is None:
        return BadSample(where, "; ".join(f"{p.field}: {p.message}" if p.field else p.message for p in problems))
    for i, j, data in fills:
        sample.messages[i]["content"][j]["data"] = data
    return ShardSample(sample.messages, sample.file, sample.line, sample.id, sample.meta, key)


def validate_shards(paths: Sequence[str | Path], *, decode: bool = False) -> ValidationReport:
    """Check every sample of the shards (``codi2 data validate DIR``); ``decode`` also decodes
    every media member. Problems name the shard and key (the "line" is the sample's index)."""
    from codi2.core.modality import resolve_modalities
    from codi2.errors import Codi2Error
    from codi2.training.data import Problem

    shards = find_shards(paths)
    report = ValidationReport([str(p) for p in paths])
    for shard in shards:
        for index, key, raw, members in read_shard(shard):
            sample = to_sample(shard, index, key, raw, members)
            if isinstance(sample, ShardSample) and decode:
                for message in sample.messages:
                    for part in message["content"] if isinstance(message["content"], list) else []:
                        if isinstance(part.get("data"), bytes):
                            try:
                                resolve_modalities().load(part["data"], part["type"], sample_rate=None)
                            except Codi2Error as exc:
                                sample = BadSample(sample.where, str(exc))
                                break
                    if isinstance(sample, BadSample):
                        break
            if isinstance(sample, BadSample):
                report.problems.append(Problem(shard.name, index, f"key {key!r}", sample.message))
            else:
                report.samples += 1
    return report


# --- writing --------------------------------------------------------------------------------------


@dataclass
class ConvertReport:
    """What :func:`convert` wrote."""

    out: Path
    kind: Format
    shards: int
    samples: int
    skipped: list[str]

    def summary(self) -> str:
        text = f"wrote {self.samples} sample(s) in {self.shards} {self.kind} shard(s) to {self.out}"
        if self.skipped:
            text += f"\nskipped {len(self.skipped)} invalid line(s):\n  " + "\n  ".join(self.skipped[:20])
        return text


def convert(sources: str | Path | Sequence[str | Path], out: str | Path, *, kind: Format = "webdataset",
            shard_size: int = 1000, on_error: Literal["raise", "skip"] = "raise") -> ConvertReport:
    """Turn JSONL datasets into shards of ``shard_size`` samples each, media packed inside.

    Every line is checked first (as ``codi2 data validate`` does); a bad line stops the
    conversion listing the problems, or with ``on_error="skip"`` is left out and reported.
    """
    from codi2.training.data import format_problems

    if shard_size < 1:
        raise DatasetError(f"shard size must be at least 1, got {shard_size}")
    out = Path(out)
    files = [sources] if isinstance(sources, (str, Path)) else list(sources)
    skipped, problems = [], []
    for sample, found in iter_samples(files):
        if sample is None:
            problems += found
    if problems and on_error == "raise":
        raise DatasetError(format_problems(problems, header="cannot convert", hint="fix the lines or pass --on-error skip"))
    skipped = [str(p) for p in problems]
    if kind in ("arrow", "parquet"):
        shards, samples = _write_table([str(f) for f in files], out, shard_size, kind)
    else:
        shards, samples = _write_tars(_records(files), out, shard_size)
    if not samples:
        raise DatasetError(f"{', '.join(map(str, files))}: no valid samples to convert")
    return ConvertReport(out, kind, shards, samples, skipped)


def _records(files: Sequence[str | Path]) -> Iterator[tuple[str, dict[str, Any], dict[str, bytes]]]:
    valid = (sample for sample, _ in iter_samples(files) if sample is not None)
    return (_packed(sample, number) for number, sample in enumerate(valid))


def _arrow_rows(files: list[str]) -> Iterator[dict[str, Any]]:
    for key, record, members in _records(files):
        yield {"__key__": key, "json": json.dumps(record, ensure_ascii=False),
               "media": [{"name": k, "data": v} for k, v in members.items()]}


def _packed(sample: Sample, number: int) -> tuple[str, dict[str, Any], dict[str, bytes]]:
    """``(key, record, members)``: the record with each media file replaced by a member name."""
    members: dict[str, bytes] = {}
    messages = []
    for message in sample.messages:
        content = message["content"]
        if isinstance(content, list):
            content = [dict(p) for p in content]
            for part in content:
                if part["type"] != "text" and "path" in part:
                    path = resolve_media_path(part["path"], Path(sample.file).parent)
                    name = f"m{len(members)}{path.suffix.lower()}"
                    members[name] = path.read_bytes()
                    part["path"] = name
        messages.append({**message, "content": content})
    record: dict[str, Any] = {"messages": messages}
    if sample.id is not None:
        record["id"] = sample.id
    if sample.meta is not None:
        record["meta"] = sample.meta
    return f"{number:09d}", record, members


def _write_tars(records: Iterator[tuple[str, dict, dict]], out: Path, shard_size: int) -> tuple[int, int]:
    from webdataset import TarWriter

    out.mkdir(parents=True, exist_ok=True)
    index: list[dict[str, Any]] = []
    writer, count, total = None, 0, 0
    try:
        for key, record, members in records:
            if writer is None or count == shard_size:
                if writer is not None:
                    _close_tar(writer, out, index, count)
                name = f"shard-{len(index):06d}.tar"
                index.append({"url": name, "samples": 0})
                writer, count = TarWriter(str(out / f".{name}.tmp"), encoder=False), 0
            writer.write({"__key__": key, "json": json.dumps(record, ensure_ascii=False).encode("utf-8"), **members})
            count += 1
            total += 1
        if writer is not None:
            _close_tar(writer, out, index, count)
    finally:
        for leftover in out.glob(".shard-*.tar.tmp"):
            leftover.unlink()
    tmp = out / f".{INDEX_FILE}.tmp"
    tmp.write_text(json.dumps({"format": INDEX_FORMAT, "samples": total, "shards": index}, indent=1) + "\n")
    os.replace(tmp, out / INDEX_FILE)  # last: a folder with an index is complete
    return len(index), total


def _close_tar(writer: Any, out: Path, index: list[dict[str, Any]], count: int) -> None:
    writer.close()
    name = index[-1]["url"]
    os.replace(out / f".{name}.tmp", out / name)
    index[-1]["samples"] = count


def _write_table(files: list[str], out: Path, shard_size: int, kind: str) -> tuple[int, int]:
    import tempfile

    import datasets

    features = datasets.Features({
        "__key__": datasets.Value("string"), "json": datasets.Value("string"),
        "media": datasets.List({"name": datasets.Value("string"), "data": datasets.Value("binary")}),
    })
    datasets.disable_progress_bars()  # codi2 prints its own one-line summary
    with tempfile.TemporaryDirectory(prefix="codi2-arrow-") as cache:
        table = datasets.Dataset.from_generator(_arrow_rows, features=features, cache_dir=cache, gen_kwargs={"files": files})
        if not len(table):
            return 0, 0
        num_shards = max(1, -(-len(table) // shard_size))
        if kind == "arrow":
            table.save_to_disk(str(out), num_shards=num_shards)
        else:
            out.mkdir(parents=True, exist_ok=True)
            for i in range(num_shards):
                table.shard(num_shards, i, contiguous=True).to_parquet(str(out / f"data-{i:05d}-of-{num_shards:05d}.parquet"))
        return num_shards, len(table)
