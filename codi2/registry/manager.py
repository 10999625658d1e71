"""The plugin registry: loads plugins, collects their components, hands them out by name.

A :class:`Registry` wraps one ``pluggy.PluginManager("codi2")``. Plugins come from three places,
all going through the same hooks:

1. the built-in modules listed in :data:`codi2.registry.builtin.BUILTIN_PLUGINS`;
2. installed distributions that declare an entry point in the group ``codi2``;
3. :meth:`Registry.register_plugin` (tests, integrators, plugins that are not packages).

One broken plugin never takes the registry down: its import error, a registration hook that
raises, a misspelled hook name or a component name another plugin already took is recorded
against that plugin (see :meth:`Registry.plugins`, ``codi2 plugins``) and the plugin contributes
nothing. In strict mode (``CODI2_STRICT_PLUGINS=1``) the same problems raise
:class:`~codi2.errors.PluginError` instead.

Components are collected lazily, on the first lookup, by calling each plugin's hook
implementations one at a time, so every component is attributed to the plugin that registered it.
Library code takes a registry as a parameter; :func:`default_registry` is the cached one the
command line uses.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import os
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy
from pydantic import BaseModel

from codi2.errors import (
    Codi2Error,
    ComponentLoadError,
    ConfigError,
    DuplicateComponentError,
    PluginError,
    UnknownComponentError,
)
from codi2.registry import hookspecs
from codi2.registry.builtin import BUILTIN_PLUGINS
from codi2.registry.components import HOOK_NAMES, KINDS, ComponentSpec, NoOptions

if TYPE_CHECKING:
    from importlib.metadata import Distribution

    from codi2.core.config import ComponentConfig
    from codi2.core.modality import Modalities

ENTRY_POINT_GROUP = "codi2"
#: set to 1 to skip entry-point plugins (built-ins still load)
ENV_NO_PLUGINS = "CODI2_NO_PLUGINS"
#: set to 1 to raise PluginError on the first broken plugin instead of recording it
ENV_STRICT = "CODI2_STRICT_PLUGINS"


def _hook_name(kind: str) -> str:
    return HOOK_NAMES[kind]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _describe(exc: BaseException) -> str:
    """``Type: first line of the message`` — short enough for a table, precise enough to act on."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _did_you_mean(name: str, candidates: Iterable[str], n: int = 3) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.6)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


@dataclass
class PluginInfo:
    """What ``codi2 plugins`` shows about one plugin."""

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    #: component names by kind, only kinds the plugin registered
    components: dict[str, list[str]] = field(default_factory=dict)
    #: why the plugin contributes nothing (``None`` when it loaded fine)
    error: str | None = None
    #: the original exception, for ``--debug`` tracebacks
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    @property
    def source(self) -> str:
        """``distribution version`` (or the module when the plugin is not a distribution)."""
        if self.distribution:
            return f"{self.distribution} {self.version}" if self.version else self.distribution
        return self.module

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "components": {k: list(v) for k, v in self.components.items()},
            "error": self.error,
        }


@dataclass
class _Record:
    """A plugin as the registry tracks it; ``obj`` is ``None`` when it never registered."""

    name: str
    module: str
    distribution: str | None
    version: str | None
    obj: Any = None
    error: str | None = None
    exception: BaseException | None = None

    @property
    def where(self) -> str:
        """How error messages name the plugin: ``plugin 'x' (dist 1.0)``."""
        if not self.distribution:
            return f"plugin {self.name!r}"
        source = f"{self.distribution} {self.version}" if self.version else self.distribution
        return f"plugin {self.name!r} ({source})"


class Registry:
    """Plugins and the components they register. See the module docstring.

    ``Registry()`` is empty (handy in tests: add plugins with :meth:`register_plugin`);
    :meth:`Registry.create` loads the built-ins and the installed entry points.
    """

    def __init__(self, *, strict: bool = False):
        self.strict = strict
        self.entry_points_enabled = False
        self._pm = pluggy.PluginManager("codi2")
        self._pm.add_hookspecs(hookspecs)
        self._records: list[_Record] = []
        # filled by _collect(); None means "stale, collect on next lookup"
        self._components: dict[str, dict[str, ComponentSpec]] | None = None
        self._collect_errors: dict[str, tuple[str, BaseException]] = {}
        self._modalities: Modalities | None = None

    # --- construction ---------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        *,
        builtins: bool = True,
        entry_points: bool | None = None,
        strict: bool | None = None,
    ) -> Registry:
        """A registry with the built-in plugins and the installed ones.

        ``entry_points=None`` loads entry points unless ``CODI2_NO_PLUGINS=1``;
        ``strict=None`` raises on broken plugins only if ``CODI2_STRICT_PLUGINS=1``.
        """
        if strict is None:
            strict = _env_flag(ENV_STRICT)
        if entry_points is None:
            entry_points = not _env_flag(ENV_NO_PLUGINS)
        registry = cls(strict=strict)
        if builtins:
            registry._load_builtins()
        if entry_points:
            registry.entry_points_enabled = True
            registry._load_entry_points()
        return registry

    def _load_builtins(self) -> None:
        from codi2 import __version__

        for module in BUILTIN_PLUGINS:
            try:
                obj = importlib.import_module(module)
            except Exception as exc:  # any import failure is this plugin's problem only
                self._fail(_Record(module, module, "codi2", __version__), _describe(exc), exc)
                continue
            self._add(obj, _Record(module, module, "codi2", __version__))

    def _load_entry_points(self) -> None:
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(ep, "dist", None)
            record = _Record(
                ep.name,
                ep.value,
                dist.metadata["Name"] if dist is not None else None,
                dist.version if dist is not None else None,
            )
            try:
                obj = ep.load()
            except Exception as exc:  # a broken third-party package must not stop the others
                self._fail(record, _describe(exc), exc)
                continue
            self._add(obj, record)

    def register_plugin(
        self, obj: Any, name: str | None = None, *, dist: Distribution | str | None = None
    ) -> str:
        """Add a module or object carrying ``@hookimpl`` functions; returns the plugin's name.

        ``dist`` is the distribution it came from (an ``importlib.metadata.Distribution`` or just
        a name), shown by ``codi2 plugins``. Problems are recorded (or raised when strict).
        """
        if isinstance(obj, types.ModuleType):
            module = obj.__name__
        else:
            module = f"{type(obj).__module__}.{type(obj).__qualname__}"
        name = name or self._pm.get_canonical_name(obj)
        if dist is None or isinstance(dist, str):
            dist_name, version = dist, None
        else:
            dist_name, version = dist.metadata["Name"], dist.version
        self._add(obj, _Record(name, module, dist_name, version))
        return name

    def _add(self, obj: Any, record: _Record) -> None:
        """Register with pluggy and verify every hookimpl names a known hook."""
        taken = next((r for r in self._records if r.name == record.name), None)
        if taken is not None:
            self._fail(record, f"a plugin named {record.name!r} is already registered "
                               f"(from {taken.distribution or taken.module})")
            return
        try:
            self._pm.register(obj, name=record.name)
        except (ValueError, pluggy.PluginValidationError) as exc:
            # ValueError: the same object is already registered under another name;
            # PluginValidationError: a hookimpl's arguments do not match its hookspec (its
            # message spans lines that all matter: hook, definition, offending arguments).
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            self._fail(record, f"{type(exc).__name__}: {'; '.join(lines)}", exc)
            return
        unknown = [
            caller.name for caller in (self._pm.get_hookcallers(obj) or []) if not caller.has_spec()
        ]
        try:
            self._pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self._pm.unregister(obj)
            hooks = unknown or ["?"]
            known = [_hook_name(k) for k in KINDS]
            detail = "; ".join(f"unknown hook {h!r}{_did_you_mean(h, known, n=1)}" for h in hooks)
            self._fail(record, detail, exc)
            return
        record.obj = obj
        self._records.append(record)
        self._components = None  # a new plugin may add components
        self._modalities = None

    def _fail(self, record: _Record, error: str, exc: BaseException | None = None) -> None:
        """Record (or, when strict, raise) a plugin that failed before it could register."""
        if self.strict:
            raise PluginError(f"{record.where}: {error}") from exc
        record.error, record.exception = error, exc
        self._records.append(record)

    # --- collection -----------------------------------------------------------------------

    def _collect(self) -> dict[str, dict[str, ComponentSpec]]:
        if self._components is not None:
            return self._components
        impls: dict[str, dict[str, Any]] = {}
        for kind in KINDS:
            for impl in getattr(self._pm.hook, _hook_name(kind)).get_hookimpls():
                impls.setdefault(impl.plugin_name, {})[kind] = impl
        table: dict[str, dict[str, ComponentSpec]] = {kind: {} for kind in KINDS}
        errors: dict[str, tuple[str, BaseException]] = {}
        for record in self._records:  # registration order: built-ins first, so they win clashes
            if record.error is not None or record.name not in impls:
                continue
            try:
                specs = self._collect_plugin(record, impls[record.name])
                for spec in specs:
                    other = table[spec.kind].get(spec.name)
                    if other is not None:
                        owner = next(r for r in self._records if r.name == other.plugin)
                        raise DuplicateComponentError(
                            f"{spec.kind} {spec.name!r} is registered by both {owner.where} "
                            f"and {record.where}"
                        )
            except PluginError as exc:
                if self.strict:
                    raise
                errors[record.name] = (str(exc), exc)
                continue
            for spec in specs:
                table[spec.kind][spec.name] = spec
        self._collect_errors = errors
        self._components = table
        self._modalities = None
        return table

    def _collect_plugin(self, record: _Record, impls: Mapping[str, Any]) -> list[ComponentSpec]:
        """Call one plugin's registration hooks; raise PluginError naming plugin and hook."""
        specs: list[ComponentSpec] = []
        for kind, impl in impls.items():
            hook = _hook_name(kind)
            if impl.hookwrapper or impl.wrapper:
                raise PluginError(f"{record.where}: {hook} must not be a hook wrapper")
            problems: list[PluginError] = []
            register = self._make_register(record, kind, hook, specs, problems)
            kwargs = {"register": register}
            try:
                impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
            except PluginError:
                raise
            except Exception as exc:  # the plugin's own bug: isolate it
                raise PluginError(f"{record.where}: {hook} raised {_describe(exc)}") from exc
            if problems:  # raised inside register() but swallowed by the plugin
                raise problems[0]
        return specs

    def _make_register(
        self,
        record: _Record,
        kind: str,
        hook: str,
        specs: list[ComponentSpec],
        problems: list[PluginError],
    ) -> Callable[..., None]:
        def register(
            name: str,
            *,
            load: Callable[[Any], Any],
            options: type[BaseModel] = NoOptions,
            description: str = "",
            **extra: Any,
        ) -> None:
            problem = None
            if not isinstance(name, str) or not name.strip():
                problem = f"component name must be a non-empty string, got {name!r}"
            elif not callable(load):
                problem = f"{kind} {name!r}: load must be callable, got {type(load).__name__}"
            elif not (isinstance(options, type) and issubclass(options, BaseModel)):
                problem = f"{kind} {name!r}: options must be a pydantic model class, got {options!r}"
            elif any(s.kind == kind and s.name == name for s in specs):
                problem = f"{kind} {name!r} registered twice"
            if problem is not None:
                problems.append(PluginError(f"{record.where}: {hook}: {problem}"))
                raise problems[-1]
            specs.append(
                ComponentSpec(
                    name=name,
                    kind=kind,
                    load_fn=load,
                    options=options,
                    description=description,
                    plugin=record.name,
                    extra=dict(extra),
                )
            )

        return register

    # --- lookup ---------------------------------------------------------------------------

    def _table(self, kind: str) -> dict[str, ComponentSpec]:
        if kind not in KINDS:
            raise UnknownComponentError(
                f"unknown component kind {kind!r}; known: {', '.join(KINDS)}{_did_you_mean(kind, KINDS)}"
            )
        return self._collect()[kind]

    def names(self, kind: str) -> list[str]:
        """Sorted names of the registered components of ``kind``."""
        return sorted(self._table(kind))

    def specs(self, kind: str) -> list[ComponentSpec]:
        """The registered components of ``kind``, sorted by name."""
        table = self._table(kind)
        return [table[name] for name in sorted(table)]

    def get(self, kind: str, name: str) -> ComponentSpec:
        """The component ``name`` of ``kind``; UnknownComponentError lists the known names."""
        table = self._table(kind)
        if name in table:
            return table[name]
        message = f"unknown {kind} {name!r}; known: {', '.join(sorted(table)) or '(none)'}"
        message += _did_you_mean(name, table)
        failed = [p.name for p in self.plugins() if p.error]
        if failed:
            message += f" ({len(failed)} plugin(s) failed to load: {', '.join(failed)}; see `codi2 plugins`)"
        raise UnknownComponentError(message)

    def load(self, kind: str, config: ComponentConfig | Mapping[str, Any] | str) -> Any:
        """Build a component from ``{"plugin": name, "options": {...}}`` (or a ComponentConfig,
        or a bare name). Options are validated by the plugin's own model (ConfigError names the
        field and the component); other failures of the factory become ComponentLoadError."""
        from codi2.core.config import ComponentConfig

        if isinstance(config, str):
            name, options = config, {}
        elif isinstance(config, ComponentConfig):
            name, options = config.plugin, config.options
        elif isinstance(config, Mapping):
            unknown = sorted(set(config) - {"plugin", "options"})
            if "plugin" not in config or unknown:
                raise ConfigError(
                    f"{kind} config needs keys 'plugin' and optionally 'options'; "
                    f"got {sorted(config)}"
                )
            name, options = config["plugin"], config.get("options") or {}
        else:
            raise ConfigError(f"{kind} config must be a mapping or ComponentConfig, got {type(config).__name__}")
        spec = self.get(kind, name)
        validated = spec.validate_options(options)
        try:
            return spec.load_fn(validated)
        except Codi2Error:
            raise  # already says what and where
        except Exception as exc:
            raise ComponentLoadError(
                f"{kind} {name!r} (plugin {spec.plugin!r}) failed to load: {_describe(exc)}"
            ) from exc

    def modalities(self) -> Modalities:
        """Every registered modality as a :class:`~codi2.core.modality.Modalities` collection,
        in registration order (built-ins first). Cheap: specs import no torch. A modality whose
        ``load`` fails or returns something else is left out and reported like a broken plugin
        (raised when strict)."""
        from codi2.core.modality import Modalities, ModalitySpec

        table = self._collect()
        if self._modalities is not None:
            return self._modalities
        specs = []
        for spec in table["modality"].values():
            try:
                value = spec.load()
                if not isinstance(value, ModalitySpec):
                    raise PluginError(f"load returned {type(value).__name__}, not a codi2.core.modality.ModalitySpec")
                if value.name != spec.name:
                    raise PluginError(f"registered as {spec.name!r} but its spec is named {value.name!r}")
            except Exception as exc:
                record = next(r for r in self._records if r.name == spec.plugin)
                error = PluginError(f"{record.where}: modality {spec.name!r}: {_describe(exc)}")
                if self.strict:
                    raise error from exc
                self._collect_errors[record.name] = (str(error), exc)
                continue
            specs.append(value)
        self._modalities = Modalities(specs)
        return self._modalities

    # --- introspection --------------------------------------------------------------------

    def plugins(self) -> list[PluginInfo]:
        """Every plugin seen, in load order, with its components or its error."""
        table = self._collect()
        self.modalities()  # a modality whose spec fails to load is reported like a broken plugin
        infos = []
        for record in self._records:
            error, exc = record.error, record.exception
            if record.name in self._collect_errors:
                error, exc = self._collect_errors[record.name]
            components: dict[str, list[str]] = {}
            if error is None:
                for kind in KINDS:
                    names = sorted(n for n, s in table[kind].items() if s.plugin == record.name)
                    if names:
                        components[kind] = names
            infos.append(
                PluginInfo(
                    name=record.name,
                    module=record.module,
                    distribution=record.distribution,
                    version=record.version,
                    components=components,
                    error=error,
                    exception=exc,
                )
            )
        return infos

    @property
    def failures(self) -> list[PluginInfo]:
        """The plugins that failed to import or register (empty when all is well)."""
        return [p for p in self.plugins() if p.error is not None]

    def __repr__(self) -> str:
        return f"<Registry {len(self._records)} plugins, strict={self.strict}>"


@functools.lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The process-wide registry the command line uses (built-ins + entry points, env vars
    honoured). Library code should take a registry argument instead."""
    return Registry.create()
