"""Model configuration: pydantic models that forbid unknown keys.

A component is named by plugin and configured by that plugin's own options model, so a
third-party plugin extends the configuration without touching core::

    {"encoders": [{"plugin": "imagebind", "options": {"checkpoint": "..."}}],
     "llm": {"plugin": "hf-causal-lm", "options": {"model": "meta-llama/Llama-2-7b-chat-hf"}},
     "decoders": {"image": {"plugin": "sd-unclip", "options": {}}}}
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from codi2.errors import ConfigError

#: generation seeds are 0..SEED_MAX everywhere (API, CLI, server): what torch's generators take,
#: with room for the per-media seeds derived from it (seed + 1 + item index)
SEED_MAX = 2**63 - 1


def check_seed(seed: Any, where: str = "seed") -> int | None:
    """``seed`` as an int in 0..SEED_MAX (``None`` passes), else a ConfigError."""
    import numbers

    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"{where} must be an integer in 0..{SEED_MAX}, got {seed!r}")
    return int(seed)


#: the marker-row layout of a config that names no ``modalities`` (every checkpoint written
#: before modalities became plugins); a model using other modalities names them all
DEFAULT_MODALITIES: tuple[str, ...] = ("image", "audio", "video", "text")


def _modality_names(names: Any, what: str) -> Any:
    """Modality names must be words; whether they are registered is checked when a model is
    built (the config cannot know which plugins are installed)."""
    for m in names or []:
        if not isinstance(m, str) or not re.fullmatch(r"[a-z][a-z0-9_\-]*", m):
            raise ValueError(f"{what} {m!r} is not a modality name (lower-case letters, digits, _ or -)")
    return names


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ComponentConfig(_Strict):
    """One component: a registered plugin name and that plugin's options."""

    plugin: str
    options: dict[str, Any] = Field(default_factory=dict)


class EncoderConfig(ComponentConfig):
    """An encoder; ``modalities`` restricts which of its modalities this model uses it for."""

    modalities: list[str] | None = None

    @field_validator("modalities")
    @classmethod
    def _known(cls, value: list[str] | None) -> list[str] | None:
        return _modality_names(value, "modality")


class LossConfig(_Strict):
    """The CoDi-2 objective ``alpha * feature + diffusion + text``; each term can be switched off."""

    alpha: float = Field(1.0, ge=0)
    text: bool = True
    feature: bool = True
    diffusion: bool = True


class GenerationConfig(_Strict):
    max_new_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.0, ge=0)  # 0 = greedy
    top_p: float = Field(1.0, gt=0, le=1)
    steps: int | None = Field(None, ge=1)  # diffusion steps; None = decoder default
    guidance: float | None = None
    max_media: int = Field(8, ge=0)  # media items one answer may hold


class ModelConfig(_Strict):
    """A whole CoDi-2 model: encoders, LLM, decoders and the core's own sizes."""

    encoders: list[EncoderConfig] = Field(min_length=1)
    llm: ComponentConfig
    decoders: dict[str, ComponentConfig] = Field(default_factory=dict)
    projector_hidden: int | None = Field(None, ge=1)  # None = the LLM's hidden size
    fidelity: bool = False  # pass the input media of the same modality as ``reference``
    loss: LossConfig = Field(default_factory=LossConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    max_input_tokens: int = Field(4096, ge=16)
    #: the modalities with marker rows, in row order; None: DEFAULT_MODALITIES plus the others
    #: the encoder ``modalities`` lists and the decoders name
    modalities: list[str] | None = None

    @field_validator("decoders")
    @classmethod
    def _media_keys(cls, value: dict[str, ComponentConfig]) -> dict[str, ComponentConfig]:
        return _modality_names(value, "output modality")

    @field_validator("modalities")
    @classmethod
    def _names(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"modalities named twice: {value}")
        return _modality_names(value, "modality")

    def marker_modalities(self) -> tuple[str, ...]:
        """The modalities with marker rows, in row order (see ``modalities``)."""
        if self.modalities is not None:
            return tuple(self.modalities)
        named = [m for e in self.encoders for m in e.modalities or []] + list(self.decoders)
        return (*DEFAULT_MODALITIES, *dict.fromkeys(m for m in named if m not in DEFAULT_MODALITIES))

    # --- files ----------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "config") -> ModelConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{source}: {format_validation_error(exc)}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> ModelConfig:
        """Read a JSON or YAML file; errors name the file and the field."""
        return cls.from_dict(read_config_file(path), source=str(path))

    def to_file(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")


def read_config_file(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start + 1}: {exc.reason})") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text)
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:  # a 5000-digit number, nesting too deep
        raise ConfigError(f"{path}: invalid JSON: {str(exc).splitlines()[0] if str(exc) else 'nested too deeply'}") from None
    except Exception as exc:  # yaml.YAMLError and friends
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``field.path: message``."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
    )
