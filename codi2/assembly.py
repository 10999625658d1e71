"""The one assembly path: a model name -> a ready :class:`~codi2.core.model.CoDi2Model`.

::

    name ──► resolve_model ──► ModelSource ──► config read once ──► components loaded once
         ──► CoDi2Model(config, encoders, llm, decoders, registry.modalities())
         ──► trained weights restored

:func:`assemble` is the one function that puts a model together; :func:`codi2.load` (the Python
API, the CLI, the server) and the trainer call it. The core takes components and never sees
the registry; this module is where names meet plugins.

A name is resolved once, in this order:

1. a saved model directory (``config.json`` + ``model.safetensors``), or a model config file
   (JSON/YAML: components from the registry, untrained core);
2. a preset registered through the ``codi2_register_presets`` hook: a packaged model (its
   ``load`` returns a directory, like ``toy``) or a configuration (``codi2-paper``);
3. a Hugging Face hub id (``org/codi2-model``), fetched through huggingface_hub's cache
   (``HF_HUB_OFFLINE=1`` uses the cache only).

A folder that merely shares a preset's name but holds no ``config.json`` (``./toy`` in the
working directory) does not shadow the preset.
"""

from __future__ import annotations

import copy
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codi2.errors import Codi2Error, ConfigError

if TYPE_CHECKING:
    from codi2.core.config import ModelConfig
    from codi2.core.model import CoDi2Model
    from codi2.registry import Registry

#: the model ``codi2.load()`` and every command use when none is named
DEFAULT_MODEL = "toy"
CONFIG_FILE = "config.json"
# what huggingface_hub accepts as a repo id: "name" or "namespace/name"; we require the namespace
# so that a bare word is never sent to the hub
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


@dataclass(frozen=True)
class ModelSource:
    """What a model name points at. ``path``: the model directory (saved, packaged or a hub
    snapshot), whose ``config.json`` and trained weights load; ``config``: a configuration
    (preset, config file or mapping) whose core starts untrained."""

    name: str
    kind: str  # "directory" | "packaged" | "preset" | "hub" | "file" | "config"
    path: Path | None = None
    config: Any = None

    @property
    def display_name(self) -> str:
        """How front ends name the model (``/v1/models``, ``--json``): a folder by its name."""
        return self.path.resolve().name if self.kind == "directory" and self.path else self.name

    def read_config(self) -> ModelConfig:
        """The model configuration (read here, once per assembly)."""
        from codi2.core.config import ModelConfig

        # a copy: a model owns its config (a preset's or a caller's object stays untouched)
        if isinstance(self.config, ModelConfig):
            return self.config.model_copy(deep=True)
        if self.config is not None:
            return ModelConfig.from_dict(copy.deepcopy(self.config), source=f"{self.kind} {self.name!r}")
        assert self.path is not None
        return ModelConfig.from_file(self.path / CONFIG_FILE)


def _registry(registry: Registry | None) -> Registry:
    if registry is None:
        from codi2.registry import default_registry

        return default_registry()
    return registry


def model_names(registry: Registry | None = None) -> list[str]:
    """The presets and packaged models the registry knows (``codi2_register_presets``)."""
    return _registry(registry).names("preset")


def preset_source(name: str, registry: Registry | None = None) -> ModelSource:
    """The registered preset ``name``: a packaged model directory or a configuration."""
    from codi2.core.config import ModelConfig

    spec = _registry(registry).get("preset", name)
    try:
        found = spec.load()
    except Codi2Error:
        raise
    except Exception as exc:  # a plugin's bug: one line naming it
        raise ConfigError(f"preset {name!r} (plugin {spec.plugin!r}) failed to load: {type(exc).__name__}: {exc}") from exc
    if isinstance(found, (str, Path)):
        path = Path(found)
        if not (path / CONFIG_FILE).is_file():
            raise ConfigError(f"preset {name!r}: {path} is not a saved codi2 model (no {CONFIG_FILE})")
        return ModelSource(name, "packaged", path=path)
    if isinstance(found, (ModelConfig, Mapping)):
        return ModelSource(name, "preset", config=found)
    raise ConfigError(f"preset {name!r} (plugin {spec.plugin!r}): load() returned {type(found).__name__}; "
                      "expected a model directory or a model configuration")


def preset_config(name: str, registry: Registry | None = None) -> dict[str, Any]:
    """The model configuration of the configuration preset ``name`` (``codi2-paper``)."""
    from codi2.core.config import ModelConfig

    source = preset_source(name, registry)
    if source.config is None:
        raise ConfigError(f"preset {name!r} is a packaged model directory ({source.path}), not a configuration")
    config = source.config
    return config.model_dump(mode="json") if isinstance(config, ModelConfig) else dict(config)


def resolve_model(name_or_dir: Any = DEFAULT_MODEL, registry: Registry | None = None) -> ModelSource:
    """Find what ``name_or_dir`` names, without loading any weights (no torch import).

    Also takes a ModelConfig or a config mapping (``kind="config"``) and a :class:`ModelSource`
    (returned as is). Raises :class:`~codi2.errors.ConfigError` listing the known names."""
    from codi2.core.config import ModelConfig

    if isinstance(name_or_dir, ModelSource):
        return name_or_dir
    if isinstance(name_or_dir, (ModelConfig, Mapping)):
        return ModelSource("config", "config", config=name_or_dir)
    text = str(name_or_dir)
    path = Path(text).expanduser()
    looks_like_path = text.startswith((".", "/", "~")) or "\\" in text or path.is_absolute()
    if path.is_dir() and (path / CONFIG_FILE).is_file():
        return ModelSource(text, "directory", path=path)
    if path.is_file():
        return ModelSource(text, "file", config=_read_config_file(path))
    registry = _registry(registry)
    if not looks_like_path and text in registry.names("preset"):
        try:
            return preset_source(text, registry)
        except Codi2Error as exc:
            if text == DEFAULT_MODEL:
                raise ConfigError(f"the default model {DEFAULT_MODEL!r} is not installed in this copy of codi2 ({exc}); "
                                  "name a saved model directory (--model DIR on the command line)") from None
            raise
    if path.is_dir():  # a folder, but not a model, and no preset of that name
        raise ConfigError(f"model directory {text}: no {CONFIG_FILE} (not a saved codi2 model)")
    if not looks_like_path and looks_like_hub_id(text):
        return _hub_source(text)
    known = ", ".join(registry.names("preset")) or "none"
    if text == DEFAULT_MODEL:
        raise ConfigError(f"the default model {DEFAULT_MODEL!r} is not installed in this copy of codi2; "
                          f"name a saved model directory or one of: {known} (--model DIR on the command line)")
    what = "no such model directory" if looks_like_path else "unknown model"
    raise ConfigError(f"{what} {text!r}: not a saved model directory, preset or hub id (org/name); known presets: {known}")


def _read_config_file(path: Path) -> Any:
    from codi2.core.config import read_config_file

    return read_config_file(path)


def _hub_source(repo_id: str) -> ModelSource:
    """A codi2 model on the Hugging Face hub, through huggingface_hub's cache (``HF_HUB_OFFLINE=1``:
    the cache only). A missing model is one line naming the id and why."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        raise ConfigError(f"model {repo_id!r} looks like a hub id, but huggingface_hub is not installed "
                          "(pip install huggingface_hub); or name a saved model directory") from None
    from codi2 import __version__

    try:
        folder = Path(snapshot_download(repo_id, library_name="codi2", library_version=__version__))
    except LocalEntryNotFoundError:
        raise ConfigError(f"model {repo_id!r}: no such model directory, and the hub model of that id is not in "
                          "the local Hugging Face cache (offline: HF_HUB_OFFLINE=1 or no network)") from None
    except Exception as exc:  # RepositoryNotFoundError, GatedRepoError, HTTP and OS errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(f"model {repo_id!r}: no such model directory, and the hub could not provide it: "
                          f"{type(exc).__name__}: {first}") from None
    if not (folder / CONFIG_FILE).is_file():
        raise ConfigError(f"hub model {repo_id!r} has no {CONFIG_FILE}: not a codi2 model")
    return ModelSource(repo_id, "hub", path=folder)


def looks_like_hub_id(text: str) -> bool:
    """``namespace/name`` in the characters the hub allows (whether it exists is another matter)."""
    return bool(_HUB_ID.match(text))


def check_components(config: ModelConfig, registry: Registry) -> None:
    """Fail fast (before any weights load) when a configured plugin is not installed."""
    for enc in config.encoders:
        registry.get("encoder", enc.plugin)
    registry.get("llm", config.llm.plugin)
    for dec in config.decoders.values():
        registry.get("decoder", dec.plugin)


def assemble(model: Any = DEFAULT_MODEL, *, registry: Registry | None = None, progress: bool = False) -> CoDi2Model:
    """Put a model together: resolve ``model`` (a name, directory, hub id, config file, config or
    :class:`ModelSource`), read its config once, load each component once through the registry,
    compose them in the core, and restore the trained weights of a saved model. The model is
    left where the components put it (see :func:`codi2.load` for device, dtype and eval)."""
    from tqdm.auto import tqdm

    from codi2.core.model import CoDi2Model

    registry = _registry(registry)
    source = resolve_model(model, registry)
    config = source.read_config()
    check_components(config, registry)
    steps = [("encoder", None, c) for c in config.encoders] + [("llm", None, config.llm)]
    steps += [("decoder", m, c) for m, c in config.decoders.items()]
    encoders, llm, decoders = [], None, {}
    with tqdm(total=len(steps) + 1, desc=f"loading {source.name}", unit="part", file=sys.stderr,
              disable=not progress, leave=False) as bar:  # fmt: skip
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
        built = CoDi2Model(config, encoders, llm, decoders, registry.modalities())
        if source.path is not None:
            built.load_pretrained_weights(source.path)
        bar.update()
    built.source_name = source.display_name
    built.source = source
    return built


__all__ = ["DEFAULT_MODEL", "ModelSource", "assemble", "check_components", "looks_like_hub_id", "model_names",
           "preset_config", "preset_source", "resolve_model"]  # fmt: skip
