"""codi2 — CoDi-2: in-context, interleaved and interactive any-to-any generation.

``import codi2`` is light: torch, transformers and diffusers load only when a model does.

>>> import codi2
>>> model = codi2.load()                          # doctest: +SKIP  (the embedded toy model)
>>> answer = model.generate("Make {a} blue.", media={"a": "square.png"}, seed=0)  # doctest: +SKIP
>>> answer.save("out")                            # doctest: +SKIP  (out/output0.png, ...)

See :func:`codi2.api.load` and :func:`codi2.hub.push_to_hub`.
"""

from __future__ import annotations

from codi2.api import DEFAULT_MODEL, load  # light: the standard library and codi2.errors only
from codi2.core.modality import set_default_modalities
from codi2.hub import push_to_hub  # light: huggingface_hub loads inside


def _registered_modalities():  # the registry imports only when a modality is first looked up
    from codi2.registry import default_registry

    return default_registry().modalities()


set_default_modalities(_registered_modalities)

__version__ = "0.1.0"

__all__ = ["DEFAULT_MODEL", "__version__", "load", "push_to_hub"]
