"""Component descriptors: what a plugin registers. Cheap to create, heavy only in ``load``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

KINDS = ("encoder", "llm", "decoder", "metric", "dataset", "preset", "modality")
#: the hook each kind registers through (``codi2_register_<kind>s`` unless listed)
HOOK_NAMES = {kind: f"codi2_register_{kind}s" for kind in KINDS} | {"modality": "codi2_register_modalities"}


class NoOptions(BaseModel):
    """Options model for components that take none."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class ComponentSpec:
    """A registered component: its name, kind, options model and factory."""

    name: str
    kind: str
    load_fn: Callable[[Any], Any]
    options: type[BaseModel] = NoOptions
    description: str = ""
    plugin: str = ""  # the plugin (module or distribution) that registered it
    extra: dict[str, Any] = field(default_factory=dict)

    def validate_options(self, options: dict[str, Any] | BaseModel | None) -> BaseModel:
        """Validate raw options against the plugin's own model; errors name the component."""
        from pydantic import ValidationError

        from codi2.errors import ConfigError

        if isinstance(options, self.options):
            return options
        if isinstance(options, BaseModel):
            options = options.model_dump()
        try:
            return self.options.model_validate(options or {})
        except ValidationError as exc:
            from codi2.core.config import format_validation_error

            problems = format_validation_error(exc)
            raise ConfigError(f"{self.kind} {self.name!r}: invalid options: {problems}") from None

    def load(self, options: dict[str, Any] | BaseModel | None = None) -> Any:
        """Validate ``options`` and build the component."""
        return self.load_fn(self.validate_options(options))

    def options_schema(self) -> dict[str, Any]:
        """The JSON schema of the options model (what ``codi2 plugins --options`` shows)."""
        return self.options.model_json_schema()

    def options_table(self) -> list[tuple[str, str, str, str]]:
        """``(name, type, default, description)`` for each option, for people."""
        rows = []
        for name, info in self.options.model_fields.items():
            annotation = info.annotation.__name__ if isinstance(info.annotation, type) else str(info.annotation).replace("typing.", "")
            default = "required" if info.is_required() else repr(info.get_default(call_default_factory=True))
            rows.append((name, annotation, default, info.description or ""))
        return rows


class RegisterCallback(Protocol):
    def __call__(
        self,
        name: str,
        *,
        load: Callable[[Any], Any],
        options: type[BaseModel] = NoOptions,
        description: str = "",
        **extra: Any,
    ) -> None: ...
