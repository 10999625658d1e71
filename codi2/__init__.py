"""codi2 — CoDi-2: in-context, interleaved and interactive any-to-any generation.

``import codi2`` is light: torch, transformers and diffusers load only when a model does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from codi2.core.model import CoDi2Model


def load(name_or_dir: str, **kwargs: Any) -> CoDi2Model:
    """Load a codi2 model from a preset name or a saved directory (see :func:`codi2.core.model.CoDi2Model.from_pretrained`)."""
    from codi2.api import load as _load

    return _load(name_or_dir, **kwargs)


__all__ = ["__version__", "load"]
