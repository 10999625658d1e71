"""The text modality: a ``str``, read through the text encoder like media (the paper's
text-repurposed data) and written as UTF-8 ``.txt``."""

from __future__ import annotations

from typing import Any

from codi2.core.media import load_text, looks_like_text
from codi2.core.modality import ModalitySpec
from codi2.registry import hookimpl


def _load(source: Any, *, name: str | None = None, limits: Any = None, **_: Any) -> Any:
    return load_text(source, name=name, limits=limits)


def _sniff(head: bytes) -> bool:
    return looks_like_text(head[:512])


def spec() -> ModalitySpec:
    return ModalitySpec(
        name="text",
        description="text (str), UTF-8 .txt files",
        load=_load,
        encode=lambda media: str(media.data).encode("utf-8"),
        suffixes=(".txt",),
        mime_type="text/plain",
        sniff=_sniff,
        describe=lambda m: {"characters": len(str(m.data))},
        display="text",
        is_text=True,
    )


@hookimpl
def codi2_register_modalities(register: Any) -> None:
    register("text", load=lambda options: spec(), description="text: UTF-8 .txt")
