"""The integrator's entry point: ``codi2.load(name_or_dir)``.

A model is named by a saved model directory, a packaged model (the default, ``"toy"``), a
preset configuration (``codi2-paper``) or a Hugging Face hub id (``org/codi2-model``); see
:mod:`codi2.assembly` for how a name resolves. ``push_to_hub`` (:mod:`codi2.hub`) publishes a
model with a model card.

Example::

    import codi2

    model = codi2.load()                                   # the embedded toy model
    model = codi2.load("runs/my-model", device="cuda", dtype="bfloat16")
    answer = model.generate("Make {a} purple.", media={"a": "square.png"}, seed=0)
    print(answer.text)                                     # the text of the answer
    answer.save("out")                                     # out/output0.png, out/output1.wav, ...

    chat = model.chat()                                    # multi-round
    chat.ask("Draw a large green square.")
    chat.ask("Now make it purple.")                        # works on the last output
    chat.save("conversation")                              # conversation.json + media files

``model.generate(prompt_or_messages, media=None, *, seed=None, steps=None, guidance=None,
max_new_tokens=None, temperature=None, top_p=None, max_media=None, progress=None)`` returns an
:class:`~codi2.core.model.Answer`: ``.text``, ``.media`` (list of
:class:`~codi2.core.types.Media`), ``.parts`` (text and media in order), ``.tokens``,
``.finish_reason`` ("stop" or "length") and ``.save(out_dir)``. :mod:`codi2.answers` turns an
answer into JSON (``answer_to_dict``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from codi2.assembly import DEFAULT_MODEL, ModelSource, model_names, preset_config, resolve_model
from codi2.errors import ConfigError

DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
          "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}  # fmt: skip


def _torch_dtype(dtype: str | Any) -> Any:
    import torch

    if not isinstance(dtype, str):
        return dtype
    if dtype.lower() not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; choose from {', '.join(sorted(set(DTYPES.values())))}")
    return getattr(torch, DTYPES[dtype.lower()])


def resolve_device(device: str | None) -> str:
    """``None``/"auto" -> the best device present; otherwise a checked torch device string."""
    import torch

    if device is None or device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"invalid device {device!r}: {exc}") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} is not available: this torch sees no CUDA GPU")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r} is not available: {torch.cuda.device_count()} CUDA GPU(s)")
    return str(parsed)


def load(
    name_or_dir: str | Path | ModelSource = DEFAULT_MODEL,
    *,
    device: str | None = None,
    dtype: str | Any | None = None,
    registry: Any = None,
    progress: bool = False,
) -> Any:
    """Load a codi2 model, ready for :meth:`~codi2.core.model.CoDi2Model.generate`.

    ``name_or_dir``: a saved model directory, a packaged model (default ``"toy"``), a preset
    name, a hub id (``org/codi2-model``) or an already resolved
    :class:`~codi2.assembly.ModelSource` (see :mod:`codi2.assembly`). ``device``: "cpu", "cuda", "cuda:1", "mps" or "auto"/None (the
    best one present). ``dtype``: "float32", "bfloat16" or "float16" (None keeps each
    component's own). ``registry``: the plugin registry components come from (default: the
    installed plugins). ``progress``: draw a progress bar over the components as they load.

    >>> model = codi2.load("runs/toy-edit", device="cpu")                  # doctest: +SKIP
    >>> answer = model.generate("What is in {a}?", media={"a": "cat.png"})  # doctest: +SKIP
    >>> answer.text, [m.modality for m in answer.media]                     # doctest: +SKIP

    Errors are :class:`~codi2.errors.Codi2Error` subclasses: ConfigError (unknown model, bad
    device or dtype), UnknownComponentError (a plugin is not installed), ComponentLoadError,
    CheckpointError.
    """
    from codi2.assembly import assemble

    target_dtype = _torch_dtype(dtype) if dtype is not None else None
    target_device = resolve_device(device)
    model = assemble(name_or_dir, registry=registry, progress=progress)
    if target_dtype is not None:
        model = model.to(target_dtype)
    model = model.to(target_device)
    model.eval()
    return model


def model_info(model: Any) -> dict[str, Any]:
    """A JSON-able description: name, input and output modalities, components."""
    cfg = model.config
    return {
        "id": getattr(model, "source_name", None) or "codi2",
        "input_modalities": sorted(model.encoder_for),
        "output_modalities": sorted(model.decoders),
        # how a client sends and shows each (suffixes and MIME types to accept, display kind)
        "modalities": {
            name: {"display": spec.display, "mime_types": list(spec.mime_types), "suffixes": list(spec.suffixes)}
            for name, spec in model.modalities.items()
            if name in model.encoder_for or name in model.decoders
        },
        "components": {
            "encoders": [e.plugin for e in cfg.encoders],
            "llm": cfg.llm.plugin,
            "decoders": {m: d.plugin for m, d in cfg.decoders.items()},
        },
        "device": str(model.device),
    }


__all__ = ["DEFAULT_MODEL", "ModelSource", "load", "model_info", "model_names", "preset_config",
           "resolve_device", "resolve_model"]  # fmt: skip
