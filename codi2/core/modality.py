"""Modalities as values: what one modality knows (:class:`ModalitySpec`) and the set a model
works with (:class:`Modalities`).

Everything specific to one modality lives in its spec: reading and validating an item,
writing it (suffix, MIME type), recognising a file (suffixes, magic bytes), describing it in
JSON and how a page shows it. The rest of codi2 asks the collection and never names a
modality. Specs are registered by plugins (``codi2_register_modalities``; the built-in image,
audio, video and text ones too, in ``codi2/plugins/modalities/``); the core receives the
collection the way it receives components and never imports the registry.

No torch at import time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codi2.core.types import Media
from codi2.errors import MediaDecodeError, MediaLimitError, UnknownModalityError

#: how a page may show an item: natively, or as a download link (with an optional preview)
DISPLAYS = ("image", "audio", "video", "text", "download")
#: bytes of a file's head handed to ``sniff``
SNIFF_BYTES = 4096


@dataclass(frozen=True)
class ModalitySpec:
    """Everything codi2 needs to know about one modality.

    ``load(source, *, name=None, limits=None, **options) -> Media`` reads and validates one
    item from whatever a caller holds (path, bytes, ``data:`` URI, array, tensor, Media, ...)
    and raises :mod:`codi2.errors` media errors naming the item. ``encode(media) -> bytes`` is
    the file content of ``suffixes[0]`` / ``mime_type``. ``sniff(head) -> bool`` tells the
    modality's files by their first bytes; ``claims(obj) -> bool`` its in-memory objects (an
    array of a telling shape, a PIL image). ``describe(media) -> dict`` is a JSON-able summary
    (shape, duration, ...). ``display`` is how a page shows it (:data:`DISPLAYS`);
    ``preview(media) -> PNG bytes`` goes with ``display="download"``. ``writes`` are the
    suffixes of the files it writes (always starting with ``suffixes[0]``, the default);
    ``save(media, path)`` writes a file whose suffix is one of them (for modalities that write
    several formats; without it, ``write`` stores ``encode(media)``). ``noun`` is how a prompt names
    one item ("an audio clip").
    """

    name: str
    load: Callable[..., Media]
    encode: Callable[[Media], bytes]
    suffixes: tuple[str, ...]
    mime_type: str
    description: str = ""
    mime_types: tuple[str, ...] = ()
    sniff: Callable[[bytes], bool] | None = None
    claims: Callable[[Any], bool] | None = None
    describe: Callable[[Media], dict[str, Any]] | None = None
    display: str = "download"
    preview: Callable[[Media], bytes] | None = None
    save: Callable[[Media, Path], Path] | None = None
    writes: tuple[str, ...] = ()
    is_text: bool = False
    #: how a prompt names one item ("an audio clip"); default "a <name>" / "an <name>"
    noun: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "_").isidentifier():
            raise ValueError(f"modality name must be a word like 'depth', got {self.name!r}")
        if not self.suffixes or any(not s.startswith(".") or s != s.lower() for s in self.suffixes):
            raise ValueError(f"modality {self.name!r}: suffixes must be lower-case and start with '.', got {self.suffixes!r}")
        if any(not s.startswith(".") or s != s.lower() for s in self.writes):
            raise ValueError(f"modality {self.name!r}: writes must be lower-case suffixes starting with '.', got {self.writes!r}")
        if self.display not in DISPLAYS:
            raise ValueError(f"modality {self.name!r}: display must be one of {', '.join(DISPLAYS)}, got {self.display!r}")
        if "/" not in self.mime_type:
            raise ValueError(f"modality {self.name!r}: mime_type must look like 'type/subtype', got {self.mime_type!r}")
        mimes = (self.mime_type, *(m for m in self.mime_types if m != self.mime_type))
        object.__setattr__(self, "mime_types", mimes)
        object.__setattr__(self, "writes", (self.suffix, *(w for w in self.writes if w != self.suffix)))
        if not self.noun:
            object.__setattr__(self, "noun", f"{'an' if self.name[0] in 'aeiou' else 'a'} {self.name}")

    def __repr__(self) -> str:
        return f"ModalitySpec({self.name!r}, suffixes={self.suffixes}, display={self.display!r})"

    @property
    def suffix(self) -> str:
        """The suffix written files get."""
        return self.suffixes[0]

    def summary(self, media: Media) -> dict[str, Any]:
        """The facts every item has (type, name, MIME type) plus ``describe(media)`` (default:
        the data's shape); no data."""
        info: dict[str, Any] = {"type": self.name, "name": media.name, "mime_type": self.mime_type}
        shape = getattr(media.data, "shape", None)
        if self.describe is not None:
            info.update(self.describe(media))
        elif shape is not None:
            info["shape"] = [int(n) for n in shape]
        return info

    def write(self, media: Media, path: str | Path) -> Path:
        """Write ``media`` to ``path`` and return the path written: its suffix picks one of the
        formats the modality ``writes``; any other suffix gets ``suffixes[0]`` appended
        (``odd.xyz`` -> ``odd.xyz.png``). Parent folders are created."""
        path = Path(path)
        if path.suffix.lower() not in self.writes:
            path = path.with_name(path.name + self.suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.save is not None:
            return self.save(media, path)
        path.write_bytes(self.encode(media))
        return path


class Modalities(Mapping[str, ModalitySpec]):
    """The modalities a process (or a model) knows, by name, in registration order.

    Lookups fail with typed errors that name the registered modalities; nothing returns
    ``None`` for "don't know".
    """

    def __init__(self, specs: Iterable[ModalitySpec] = ()):
        self._specs: dict[str, ModalitySpec] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise ValueError(f"modality {spec.name!r} given twice")
            self._specs[spec.name] = spec

    # --- mapping ---------------------------------------------------------------------------

    def __getitem__(self, name: str) -> ModalitySpec:
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def __repr__(self) -> str:
        return f"Modalities({', '.join(self._specs)})"

    def known(self) -> str:
        return ", ".join(self._specs) or "(none registered)"

    def get(self, name: Any, default: Any = None, *, where: str = "") -> ModalitySpec:  # type: ignore[override]
        """The spec of ``name``; :class:`UnknownModalityError` names the registered ones."""
        if isinstance(name, str) and name in self._specs:
            return self._specs[name]
        if default is not None:
            return default
        prefix = f"{where}: " if where else ""
        raise UnknownModalityError(f"{prefix}unknown modality {name!r}; registered: {self.known()}")

    def check(self, names: Iterable[str], *, where: str = "") -> None:
        """Raise UnknownModalityError for the first of ``names`` that is not registered."""
        for name in names:
            self.get(name, where=where)

    @property
    def media(self) -> tuple[str, ...]:
        """Names of the modalities that are files (every one but text)."""
        return tuple(n for n, s in self._specs.items() if not s.is_text)

    def subset(self, names: Iterable[str]) -> Modalities:
        return Modalities(self.get(n) for n in names)

    def union(self, other: Iterable[ModalitySpec] | Modalities) -> Modalities:
        specs = other.values() if isinstance(other, Modalities) else other
        return Modalities([*self._specs.values(), *(s for s in specs if s.name not in self._specs)])

    # --- recognising ------------------------------------------------------------------------

    def by_suffix(self, suffix: str, *, item: str = "file") -> ModalitySpec | None:
        """The one modality claiming ``suffix`` (``.npy``); None when none does; an
        UnknownModalityError when several do (say which: ``MODALITY:PATH``)."""
        found = self._by_suffix(suffix)
        if len(found) > 1:
            raise UnknownModalityError(
                f"{item}: suffix {suffix} is used by several modalities ({', '.join(s.name for s in found)}); "
                "say which, e.g. --media name=MODALITY:PATH or {'type': MODALITY, 'path': ...}"
            )
        return found[0] if found else None

    def _by_suffix(self, suffix: str) -> list[ModalitySpec]:
        suffix = suffix.lower()
        return [s for s in self._specs.values() if suffix in s.suffixes]

    def by_mime(self, mime: str) -> ModalitySpec | None:
        """The modality accepting MIME type ``mime`` (parameters ignored), else None; an
        UnknownModalityError when several do (``application/x-npy``: say which)."""
        mime = mime.split(";")[0].strip().lower()
        found = [spec for spec in self._specs.values() if mime in spec.mime_types]
        if len(found) > 1:
            raise UnknownModalityError(
                f"MIME type {mime} is used by several modalities ({', '.join(s.name for s in found)}); "
                "say which, e.g. {'type': MODALITY, 'data': ...}"
            )
        if found:
            return found[0]
        major = mime.split("/")[0]
        return self._specs.get(major) if major in self._specs and not self._specs[major].is_text else None

    def sniff(self, source: bytes | bytearray | memoryview | str | Path, *, item: str | None = None) -> ModalitySpec:
        """The modality of a file or byte string: magic bytes first, the suffix breaks ties
        and speaks for files no magic test knows (and for paths that do not exist); text
        last. Never None: an unrecognised or ambiguous file, or a missing file with an
        unknown suffix, is an :class:`UnknownModalityError` naming the registered
        modalities; an empty one a :class:`MediaLimitError`."""
        suffix_specs: list[ModalitySpec] = []
        if isinstance(source, (bytes, bytearray, memoryview)):
            head = bytes(source[:SNIFF_BYTES])
            item = item or "<bytes>"
        else:
            path = Path(source)
            item = item or repr(path.name or str(path))
            suffix_specs = self._by_suffix(path.suffix) if path.suffix else []
            try:
                is_file = path.is_file()
            except (OSError, ValueError):
                is_file = False
            if not is_file:
                if len(suffix_specs) == 1:
                    return suffix_specs[0]
                if suffix_specs:
                    self.by_suffix(path.suffix, item=item)  # raises the ambiguity error
                raise UnknownModalityError(
                    f"{item}: cannot tell the modality from suffix {path.suffix or '(none)'} and there is no such "
                    f"file to read; give it as {{'type': MODALITY, 'path': ...}} (registered: {self.known()})"
                )
            try:
                with path.open("rb") as fh:
                    head = fh.read(SNIFF_BYTES)
            except OSError as exc:
                raise MediaDecodeError(f"cannot read {path}: {exc.strerror or exc}", item=item) from None
        magic = [s for s in self._specs.values() if s.sniff and not s.is_text and _safe(s.sniff, head)]
        both = [s for s in magic if s in suffix_specs]
        for candidates in (both, magic, suffix_specs):
            if len(candidates) == 1:
                return candidates[0]
            if len(candidates) > 1:
                raise UnknownModalityError(
                    f"{item}: could be {' or '.join(s.name for s in candidates)}; say which, e.g. "
                    "--media name=MODALITY:PATH or {'type': MODALITY, 'path': ...}"
                )
        for spec in self._specs.values():
            if spec.is_text and spec.sniff and _safe(spec.sniff, head):
                return spec
        if not head:
            raise MediaLimitError("empty (0 bytes)", item=item)
        raise UnknownModalityError(
            f"media {item}: not a file of any registered modality ({self.known()}); name the modality if it is one"
        )

    def infer(self, source: Any, *, item: str = "attachment") -> ModalitySpec:
        """The modality of anything a caller may attach: a Media, a ``{"type": ...}`` dict, a
        path, bytes, a ``data:`` URI or an in-memory object a spec ``claims``."""
        if isinstance(source, Media):
            return self.get(source.modality, where=item)
        if isinstance(source, Mapping) and "type" in source:
            return self.get(source["type"], where=item)
        if isinstance(source, str) and source.startswith("data:"):
            mime = source[5:].split(",")[0].split(";")[0]
            spec = self.by_mime(mime) if mime else None
            if spec is None:
                raise UnknownModalityError(f"{item}: no registered modality takes MIME type {mime or '(none)'!r}; registered: {self.known()}")
            return spec
        if isinstance(source, (str, Path, bytes, bytearray, memoryview)):
            return self.sniff(source, item=item)
        for spec in self._specs.values():
            if spec.claims is not None and _safe(spec.claims, source):
                return spec
        raise UnknownModalityError(
            f"{item}: cannot tell the modality of a {type(source).__name__}; give it as "
            f"{{'type': MODALITY, 'data': ...}} (registered: {self.known()})"
        )

    # --- reading and writing ------------------------------------------------------------------

    def load(self, source: Any, modality: str | None = None, *, name: str | None = None, limits: Any = None, **options: Any) -> Media:
        """Read and validate one item (its modality inferred when not given)."""
        spec = self.get(modality) if modality else self.infer(source, item=repr(name) if name else "attachment")
        kwargs = {"name": name, **options}
        if limits is not None:
            kwargs["limits"] = limits
        return spec.load(source, **kwargs)

    def save(self, media: Media, path: str | Path) -> Path:
        return self.get(media.modality, where=media.label).write(media, path)

    def encode(self, media: Media) -> bytes:
        return self.get(media.modality, where=media.label).encode(media)

    def summary(self, media: Media) -> dict[str, Any]:
        return self.get(media.modality, where=media.label).summary(media)


# --- the process default ------------------------------------------------------------------
# The core never imports the registry. ``import codi2`` installs a provider that returns the
# registered modalities; code that holds a collection (a model) passes it explicitly.
_default_provider: Callable[[], Modalities] | None = None


def set_default_modalities(provider: Callable[[], Modalities] | None) -> None:
    """Install the function that gives the default collection (``import codi2`` does this)."""
    global _default_provider
    _default_provider = provider


def resolve_modalities(modalities: Modalities | None = None) -> Modalities:
    """``modalities`` if given, else the process default (the registered modalities). An empty
    collection (a bare test registry that registers none) counts as not given."""
    if modalities:
        return modalities
    if _default_provider is None:
        raise UnknownModalityError("no modalities are known: pass modalities=registry.modalities()")
    return _default_provider()


def _safe(test: Callable[[Any], bool], value: Any) -> bool:
    """A recognition test that raises counts as "no" (one plugin's bug must not hide others)."""
    try:
        return bool(test(value))
    except Exception:
        return False


__all__ = ["DISPLAYS", "Modalities", "ModalitySpec", "resolve_modalities", "set_default_modalities"]
