"""The integrator's entry point: ``codi2.load(name_or_dir)``.

A model is named in one of three ways, tried in this order:

1. a directory saved by :meth:`CoDi2Model.save_pretrained` (``config.json`` + ``model.safetensors``);
2. a model that ships inside the package (``codi2/assets/NAME/``; the default, ``"toy"``, is
   one);
3. a preset configuration (``codi2/presets/NAME.json``) whose components load through the
   plugin registry (their backbones from a hub id or a local path, as each plugin's options say).

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

import json
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from codi2.errors import ConfigError

#: the model ``codi2.load()`` and every command use when none is named
DEFAULT_MODEL = "toy"

DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
          "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}  # fmt: skip


def preset_names() -> list[str]:
    """Model presets that ship with codi2 (``codi2/presets/*.json``)."""
    folder = resources.files("codi2") / "presets"
    if not folder.is_dir():
        return []
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def packaged_model_names() -> list[str]:
    """Trained models that ship inside the package (``codi2/assets/NAME/config.json``)."""
    folder = resources.files("codi2") / "assets"
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and (p / "config.json").is_file())


def preset_config(name: str) -> dict[str, Any]:
    """The configuration of a packaged preset."""
    names = preset_names()
    if name not in names:
        raise ConfigError(f"unknown model {name!r}: not a directory and not a preset; presets: {', '.join(names) or 'none'}")
    return json.loads((resources.files("codi2") / "presets" / f"{name}.json").read_text())


@dataclass(frozen=True)
class ModelSource:
    """Where a model name points: a saved directory (``path``) or a preset (``config``)."""

    name: str
    kind: str  # "directory" | "packaged" | "preset"
    path: Path | None = None
    config: dict[str, Any] | None = None


def resolve_model(name_or_dir: str | Path = DEFAULT_MODEL) -> ModelSource:
    """Find what ``name_or_dir`` names, without loading anything (no torch import).

    Raises :class:`~codi2.errors.ConfigError` with the known names when nothing matches.
    """
    text = str(name_or_dir)
    path = Path(name_or_dir).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model directory {text}: no config.json (not a saved codi2 model)")
        return ModelSource(text, "directory", path=path)
    if text in packaged_model_names():
        folder = resources.files("codi2") / "assets" / text
        return ModelSource(text, "packaged", path=Path(str(folder)))
    if text in preset_names():
        return ModelSource(text, "preset", config=preset_config(text))
    known = ", ".join(packaged_model_names() + preset_names()) or "none"
    if text == DEFAULT_MODEL:
        raise ConfigError(
            f"the default model {DEFAULT_MODEL!r} is not installed in this copy of codi2; "
            f"name a saved model directory or one of: {known} (--model DIR on the command line)"
        )
    looks_like_path = any(c in text for c in "/\\") or text.startswith(".")
    what = "no such model directory" if looks_like_path else "unknown model"
    raise ConfigError(f"{what} {text!r}: not a directory, packaged model or preset; known: {known}")


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


def check_components(config: Any, registry: Any) -> None:
    """Fail fast (before any weights load) when a configured plugin is not installed."""
    from codi2.core.config import ModelConfig

    if not isinstance(config, ModelConfig):
        config = ModelConfig.from_dict(config)
    for enc in config.encoders:
        registry.get("encoder", enc.plugin)
    registry.get("llm", config.llm.plugin)
    for dec in config.decoders.values():
        registry.get("decoder", dec.plugin)


def load(
    name_or_dir: str | Path = DEFAULT_MODEL,
    *,
    device: str | None = None,
    dtype: str | Any | None = None,
    registry: Any = None,
    progress: bool = False,
) -> Any:
    """Load a codi2 model, ready for :meth:`~codi2.core.model.CoDi2Model.generate`.

    ``name_or_dir``: a saved model directory, a packaged model (default ``"toy"``) or a preset
    name (see the module docs). ``device``: "cpu", "cuda", "cuda:1", "mps" or "auto"/None (the
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
    source = resolve_model(name_or_dir)
    if registry is None:
        from codi2.registry import default_registry

        registry = default_registry()
    from codi2.core.config import ModelConfig

    if source.path is not None:
        config = ModelConfig.from_file(source.path / "config.json")
    else:
        config = ModelConfig.from_dict(source.config, source=f"preset {source.name!r}")
    check_components(config, registry)

    from tqdm.auto import tqdm

    from codi2.core.model import CoDi2Model

    target_dtype = _torch_dtype(dtype) if dtype is not None else None
    target_device = resolve_device(device)
    steps = [("encoder", None, c) for c in config.encoders] + [("llm", None, config.llm)]
    steps += [("decoder", m, c) for m, c in config.decoders.items()]
    with tqdm(total=len(steps) + 1, desc=f"loading {source.name}", unit="part", file=sys.stderr,
              disable=not progress, leave=False) as bar:  # fmt: skip
        encoders, llm, decoders = [], None, {}
        for kind, modality, cfg in steps:
            bar.set_postfix_str(f"{kind} {cfg.plugin}")
            component = registry.load(kind, cfg)
            if kind == "encoder":
                encoders.append(component)
            elif kind == "llm":
                llm = component
            else:
                decoders[modality] = component
            bar.update()
        bar.set_postfix_str("weights")
        if source.path is not None:
            components = {"encoders": encoders, "llm": llm, "decoders": decoders}
            model = CoDi2Model.from_pretrained(source.path, components=components, modalities=registry.modalities())
        else:
            model = CoDi2Model(config, encoders, llm, decoders, registry.modalities())
        if target_dtype is not None:
            model = model.to(target_dtype)
        model = model.to(target_device)
        bar.update()
    model.eval()
    # how front ends name the model (/v1/models, --json): a directory by its folder name
    model.source_name = source.path.resolve().name if source.kind == "directory" else source.name
    model.source_path = source.path  # its folder (None for a preset): front ends read examples.json there
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


__all__ = ["DEFAULT_MODEL", "ModelSource", "load", "model_info", "packaged_model_names",
           "preset_config", "preset_names", "resolve_device", "resolve_model"]  # fmt: skip
