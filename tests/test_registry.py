"""The plugin registry, ``codi2 plugins`` and the example third-party plugin package.

Each test builds its own Registry (no shared plugin manager). Installed plugins are simulated
the way an installer leaves them: a package on ``sys.path`` next to a ``*.dist-info`` folder
with ``entry_points.txt`` — which is all ``importlib.metadata`` reads, and works offline.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pluggy
import pytest
from pydantic import BaseModel, ConfigDict, Field

from codi2.core.config import ComponentConfig
from codi2.errors import (
    ComponentLoadError,
    ConfigError,
    DuplicateComponentError,
    MediaNotFoundError,
    PluginError,
    UnknownComponentError,
)
from codi2.registry import BUILTIN_PLUGINS, Registry, hookimpl
from codi2.registry import manager as manager_module

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "codi2-example-plugin"
HEAVY = ("torch", "transformers", "diffusers", "open_clip")

# --- plugins used in-process ---------------------------------------------------------------


class SizeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = Field(8, ge=1)


class DecoderPlugin:
    """Registers decoders with the given names; counts how often its hook runs."""

    def __init__(self, *names: str, load=None, options=SizeOptions):
        self.names, self.options, self.calls = names, options, 0
        self.load = load or (lambda options: ("built", options))

    @hookimpl
    def codi2_register_decoders(self, register):
        self.calls += 1
        for name in self.names:
            register(name, load=self.load, options=self.options, description=f"decoder {name}")


class RaisingPlugin:
    @hookimpl
    def codi2_register_decoders(self, register):
        register("half-done", load=lambda options: None)  # must not leak out of a failed plugin
        raise RuntimeError("boom")


class MisspelledPlugin:
    @hookimpl
    def codi2_register_decoder(self, register):  # missing "s"
        register("never", load=lambda options: None)


class WrongArgumentsPlugin:
    @hookimpl
    def codi2_register_encoders(self, registry):  # the argument is called "register"
        pass


class SwallowingPlugin:
    """Catches the error its own bad register() call raises; it must still count as failed."""

    @hookimpl
    def codi2_register_encoders(self, register):
        try:
            register("bad", load="not callable")
        except Exception:
            pass


# --- simulated installed distributions -----------------------------------------------------

GOOD_SOURCE = """
from codi2.registry import hookimpl

@hookimpl
def codi2_register_decoders(register):
    register("{component}", load=lambda options: "a good decoder", description="test decoder")
"""

BROKEN_SOURCE = """
raise ImportError("needs libfoo\\nsecond line that is not shown")
"""


def fake_distribution(root: Path, dist: str, version: str, entry_points: dict[str, str], modules: dict[str, str]) -> Path:
    """Lay out what ``pip install`` would: modules plus ``<dist>-<version>.dist-info``."""
    root.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(
        "[codi2]\n" + "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    )
    return root


def install_example(target: Path, example: Path = EXAMPLE, package: str = "codi2_example_plugin") -> Path:
    """Install an example package into ``target`` using the entry points of its pyproject."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    project = tomllib.loads((example / "pyproject.toml").read_text())["project"]
    shutil.copytree(example / "src" / package, target / package)
    return fake_distribution(target, project["name"], project["version"], project["entry-points"]["codi2"], {})


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """A 'good-plugin' and a 'broken-plugin' distribution on sys.path (unique module names)."""
    uid = uuid.uuid4().hex[:8]
    good, broken = f"codi2_test_good_{uid}", f"codi2_test_broken_{uid}"
    fake_distribution(tmp_path / "site", "good-plugin", "0.3.0", {"good": good}, {good: GOOD_SOURCE.format(component=f"good-{uid}")})
    fake_distribution(tmp_path / "site", "broken-plugin", "1.2.3", {"broken": broken}, {broken: BROKEN_SOURCE})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delenv("CODI2_NO_PLUGINS", raising=False)
    monkeypatch.delenv("CODI2_STRICT_PLUGINS", raising=False)
    yield {"good_component": f"good-{uid}", "good_module": good, "broken_module": broken, "site": tmp_path / "site"}
    for module in (good, broken):
        sys.modules.pop(module, None)


def run_python(args: list[str], pythonpath: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CODI2_")}
    environ.update(env, HF_HUB_OFFLINE="1")
    if pythonpath is not None:
        environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=environ, timeout=120, cwd=REPO)


# --- built-ins -----------------------------------------------------------------------------


def test_builtins_are_listed_in_order_and_load_or_report():
    registry = Registry.create(entry_points=False)
    infos = registry.plugins()
    assert [i.name for i in infos] == list(BUILTIN_PLUGINS)
    for info in infos:
        assert (info.distribution, info.module) == ("codi2", info.name)
        if importlib.util.find_spec(info.name) is None:  # not written yet: a recorded failure
            assert info.error == f"ModuleNotFoundError: No module named '{info.name}'"
            assert info.components == {}
        else:  # a built-in that exists must register cleanly
            assert info.error is None, f"{info.name}: {info.error}"
            assert info.components, f"built-in plugin {info.name} registers nothing"


def test_missing_builtin_is_recorded_and_raised_when_strict(monkeypatch):
    monkeypatch.setattr(manager_module, "BUILTIN_PLUGINS", ("codi2.plugins.no_such_plugin",))
    registry = Registry.create(entry_points=False, strict=False)
    (failure,) = registry.failures
    assert failure.name == "codi2.plugins.no_such_plugin"
    assert failure.error == "ModuleNotFoundError: No module named 'codi2.plugins.no_such_plugin'"
    assert isinstance(failure.exception, ModuleNotFoundError)
    with pytest.raises(PluginError, match=r"plugin 'codi2.plugins.no_such_plugin' \(codi2 0\.1\.0\): ModuleNotFoundError"):
        Registry.create(entry_points=False, strict=True)


# --- entry points --------------------------------------------------------------------------


def test_entry_point_import_error_is_isolated(installed):
    registry = Registry.create(builtins=False)
    assert installed["good_component"] in registry.names("decoder")
    (broken,) = [p for p in registry.plugins() if p.name == "broken"]
    assert (broken.module, broken.distribution, broken.version) == (installed["broken_module"], "broken-plugin", "1.2.3")
    assert broken.error == "ImportError: needs libfoo"  # type and first line only
    (good,) = [p for p in registry.plugins() if p.name == "good"]
    assert (good.distribution, good.version, good.error) == ("good-plugin", "0.3.0", None)
    assert good.components == {"decoder": [installed["good_component"]]}


def test_entry_point_import_error_raises_when_strict(installed):
    with pytest.raises(PluginError, match=r"plugin 'broken' \(broken-plugin 1\.2\.3\): ImportError: needs libfoo") as info:
        Registry.create(builtins=False, strict=True)
    assert isinstance(info.value.__cause__, ImportError)


def test_environment_variables(installed, monkeypatch):
    monkeypatch.setenv("CODI2_NO_PLUGINS", "1")
    registry = Registry.create(builtins=False)
    assert registry.plugins() == [] and not registry.entry_points_enabled
    assert Registry.create(builtins=False, entry_points=True).names("decoder")  # explicit wins
    monkeypatch.delenv("CODI2_NO_PLUGINS")
    monkeypatch.setenv("CODI2_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="needs libfoo"):
        Registry.create(builtins=False)
    assert Registry.create(builtins=False, strict=False).failures  # explicit wins


# --- register_plugin: broken plugins are isolated -------------------------------------------


def test_registration_error_is_isolated():
    registry = Registry()
    registry.register_plugin(DecoderPlugin("alpha"), name="good")
    registry.register_plugin(RaisingPlugin(), name="bad", dist="bad-dist")
    assert registry.names("decoder") == ["alpha"]
    (failure,) = registry.failures
    assert failure.name == "bad"
    assert failure.error == "plugin 'bad' (bad-dist): codi2_register_decoders raised RuntimeError: boom"
    assert failure.components == {}


def test_registration_error_raises_when_strict():
    registry = Registry(strict=True)
    registry.register_plugin(RaisingPlugin(), name="bad")
    with pytest.raises(PluginError, match="codi2_register_decoders raised RuntimeError: boom") as info:
        registry.names("decoder")
    assert isinstance(info.value.__cause__, RuntimeError)


def test_misspelled_hook_is_reported_with_suggestion():
    registry = Registry()
    registry.register_plugin(MisspelledPlugin(), name="typo")
    registry.register_plugin(DecoderPlugin("alpha"), name="good")  # check_pending must not trip on "typo"
    assert registry.names("decoder") == ["alpha"]
    (failure,) = registry.failures
    assert failure.error == "unknown hook 'codi2_register_decoder' (did you mean 'codi2_register_decoders'?)"
    with pytest.raises(PluginError, match=r"plugin 'typo': unknown hook 'codi2_register_decoder'"):
        Registry(strict=True).register_plugin(MisspelledPlugin(), name="typo")


def test_hook_with_wrong_arguments_is_reported():
    registry = Registry()
    registry.register_plugin(WrongArgumentsPlugin(), name="args")
    (failure,) = registry.failures
    assert failure.error.startswith("PluginValidationError:") and "registry" in failure.error
    assert isinstance(failure.exception, pluggy.PluginValidationError)


def test_bad_register_call_fails_the_plugin_even_if_swallowed():
    registry = Registry()
    registry.register_plugin(SwallowingPlugin(), name="swallow")
    assert registry.names("encoder") == []
    assert "encoder 'bad': load must be callable" in registry.failures[0].error


def test_two_plugins_with_one_name():
    registry = Registry()
    registry.register_plugin(DecoderPlugin("alpha"), name="same", dist="first-dist")
    registry.register_plugin(DecoderPlugin("beta"), name="same")
    assert registry.names("decoder") == ["alpha"]
    assert registry.failures[0].error == "a plugin named 'same' is already registered (from first-dist)"


# --- duplicates, unknown names, options -----------------------------------------------------


def test_duplicate_component_names_both_plugins():
    registry = Registry()
    registry.register_plugin(DecoderPlugin("alpha"), name="first", dist="pkg-one")
    registry.register_plugin(DecoderPlugin("gamma", "alpha"), name="second", dist="pkg-two")
    assert registry.get("decoder", "alpha").plugin == "first"  # the earlier plugin keeps it
    assert registry.names("decoder") == ["alpha"]  # a failed plugin contributes nothing
    (failure,) = registry.failures
    assert failure.name == "second"
    assert failure.error == (
        "decoder 'alpha' is registered by both plugin 'first' (pkg-one) and plugin 'second' (pkg-two)"
    )

    strict = Registry(strict=True)
    strict.register_plugin(DecoderPlugin("alpha"), name="first")
    strict.register_plugin(DecoderPlugin("alpha"), name="second")
    with pytest.raises(DuplicateComponentError, match="'first'.*'second'"):
        strict.get("decoder", "alpha")


def test_unknown_name_lists_known_names():
    registry = Registry()
    registry.register_plugin(DecoderPlugin("alpha", "beta"), name="p")
    with pytest.raises(UnknownComponentError) as info:
        registry.get("decoder", "alpah")
    assert str(info.value) == "unknown decoder 'alpah'; known: alpha, beta (did you mean 'alpha'?)"
    assert isinstance(info.value, KeyError)
    with pytest.raises(UnknownComponentError, match=r"unknown encoder 'x'; known: \(none\)$"):
        registry.get("encoder", "x")
    with pytest.raises(UnknownComponentError, match=r"unknown component kind 'decodr'.*did you mean 'decoder'"):
        registry.names("decodr")
    registry.register_plugin(RaisingPlugin(), name="bad")
    with pytest.raises(UnknownComponentError, match=r"1 plugin\(s\) failed to load: bad; see `codi2 plugins`"):
        registry.get("decoder", "gamma")


def test_load_validates_options_and_names_the_component():
    registry = Registry()
    registry.register_plugin(DecoderPlugin("alpha"), name="p")
    built, options = registry.load("decoder", {"plugin": "alpha", "options": {"size": "3"}})
    assert built == "built" and isinstance(options, SizeOptions) and options.size == 3
    assert registry.load("decoder", ComponentConfig(plugin="alpha"))[1].size == 8
    assert registry.load("decoder", "alpha")[1].size == 8
    with pytest.raises(ConfigError, match=r"decoder 'alpha': invalid options: size: .*greater than or equal to 1"):
        registry.load("decoder", {"plugin": "alpha", "options": {"size": 0}})
    with pytest.raises(ConfigError, match=r"decoder 'alpha': invalid options: colour: Extra inputs"):
        registry.load("decoder", {"plugin": "alpha", "options": {"colour": "red"}})
    with pytest.raises(ConfigError, match="decoder config needs keys 'plugin'"):
        registry.load("decoder", {"name": "alpha"})
    with pytest.raises(UnknownComponentError, match="unknown decoder 'omega'"):
        registry.load("decoder", {"plugin": "omega"})


def test_load_wraps_unexpected_factory_errors():
    def on_fire(options):
        raise RuntimeError("disk on fire\ntraceback noise")

    def missing(options):
        raise MediaNotFoundError("no such file", item="weights.bin")

    registry = Registry()
    registry.register_plugin(DecoderPlugin("fire", load=on_fire), name="p1")
    registry.register_plugin(DecoderPlugin("gone", load=missing), name="p2")
    with pytest.raises(ComponentLoadError, match=r"^decoder 'fire' \(plugin 'p1'\) failed to load: RuntimeError: disk on fire$") as info:
        registry.load("decoder", {"plugin": "fire"})
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(MediaNotFoundError, match="weights.bin"):  # codi2's own errors pass through
        registry.load("decoder", "gone")


def test_collection_is_lazy_cached_and_refreshed():
    first, second = DecoderPlugin("alpha"), DecoderPlugin("beta")
    registry = Registry()
    registry.register_plugin(first, name="first")
    assert first.calls == 0  # nothing runs until a lookup
    registry.names("decoder")
    registry.get("decoder", "alpha")
    registry.plugins()
    assert first.calls == 1
    registry.register_plugin(second, name="second")
    assert registry.names("decoder") == ["alpha", "beta"]
    assert (first.calls, second.calls) == (2, 1)


def test_plugin_info_metadata_and_json():
    registry = Registry()
    registry.register_plugin(DecoderPlugin("alpha"), name="p", dist=importlib.metadata.distribution("pluggy"))
    (info,) = registry.plugins()
    assert (info.distribution, info.version) == ("pluggy", pluggy.__version__)
    assert info.module == f"{__name__}.DecoderPlugin"
    assert json.loads(json.dumps(info.to_dict()))["components"] == {"decoder": ["alpha"]}
    spec = registry.get("decoder", "alpha")
    assert (spec.kind, spec.description, spec.options) == ("decoder", "decoder alpha", SizeOptions)


# --- the example package, the command line, import cost (subprocesses) ----------------------


def test_example_plugin_loads_through_entry_points(tmp_path):
    pytest.importorskip("codi2.core.media", reason="the example encoder reads media with codi2.core.media")
    install_example(tmp_path)
    script = textwrap.dedent(
        """
        from codi2.registry import Registry
        from codi2.testing import check_decoder, check_encoder, test_media

        registry = Registry.create(builtins=False, strict=True)
        (info,) = [p for p in registry.plugins() if p.name == "example"]
        assert (info.distribution, info.version, info.module) == ("codi2-example-plugin", "0.1.0", "codi2_example_plugin")
        assert info.components == {"encoder": ["example-encoder"], "decoder": ["example-decoder"]}, info
        encoder = registry.load("encoder", {"plugin": "example-encoder", "options": {"embed_dim": 8}})
        check_encoder(encoder, {"image": test_media("image"), "audio": test_media("audio")})
        decoder = registry.load("decoder", {"plugin": "example-decoder", "options": {"image_size": 8}})
        check_decoder(decoder, [test_media("image", 0), test_media("image", 1)])
        print("contract ok")
        """
    )
    result = run_python(["-c", script], pythonpath=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "contract ok" in result.stdout


def test_default_registry_and_plugin_listing_import_no_heavy_libraries(tmp_path):
    install_example(tmp_path)
    script = textwrap.dedent(
        f"""
        import sys, time
        start = time.perf_counter()
        from codi2.registry import KINDS, default_registry
        registry = default_registry()
        infos = registry.plugins()
        for kind in KINDS:
            registry.names(kind)
        assert default_registry() is registry
        assert "example" in [p.name for p in infos], infos
        heavy = [m for m in {HEAVY!r} if m in sys.modules]
        assert not heavy, f"importing plugins pulled in {{heavy}}"
        print(f"{{time.perf_counter() - start:.3f}}")
        """
    )
    result = run_python(["-c", script], pythonpath=tmp_path)
    assert result.returncode == 0, result.stderr


def test_cli_help_and_version_are_light():
    script = textwrap.dedent(
        f"""
        import sys
        from codi2.cli import main
        try:
            main(["--help"])
        except SystemExit as exc:
            assert exc.code == 0
        heavy = [m for m in {HEAVY!r} if m in sys.modules]
        assert not heavy, heavy
        """
    )
    light = run_python(["-c", script])
    assert light.returncode == 0, light.stderr
    assert "plugins" in light.stdout and "--debug" in light.stdout
    version = run_python(["-m", "codi2", "--version"])
    assert (version.returncode, version.stdout.strip()) == (0, "codi2 0.1.0")


def test_cli_plugins_json(tmp_path):
    install_example(tmp_path)
    result = run_python(["-m", "codi2", "plugins", "--json"], pythonpath=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["entry_points"] is True and data["version"] == "0.1.0"
    names = [p["name"] for p in data["plugins"]]
    assert names[: len(BUILTIN_PLUGINS)] == list(BUILTIN_PLUGINS) and "example" in names
    assert data["components"]["decoder"]["example-decoder"]["plugin"] == "example"
    assert data["failures"] == sum(1 for p in data["plugins"] if p["error"])


def test_cli_plugins_table_strict_debug_and_disabled(installed):
    site = installed["site"]
    table = run_python(["-m", "codi2", "plugins"], pythonpath=site)
    assert table.returncode == 0, table.stderr
    assert "broken  (broken-plugin 1.2.3)\n    FAILED: ImportError: needs libfoo\n" in table.stdout
    assert f"good  (good-plugin 0.3.0)\n    decoder: {installed['good_component']}\n" in table.stdout

    strict = run_python(["-m", "codi2", "plugins", "--strict"], pythonpath=site)
    assert strict.returncode == 2 and strict.stdout == ""
    lines = strict.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: plugin ") and "Traceback" not in strict.stderr

    debug = run_python(["-m", "codi2", "--debug", "plugins", "--strict"], pythonpath=site, CODI2_NO_PLUGINS="0")
    assert debug.returncode == 2 and "Traceback" in debug.stderr and "PluginError" in debug.stderr

    disabled = run_python(["-m", "codi2", "plugins"], pythonpath=site, CODI2_NO_PLUGINS="1")
    assert disabled.returncode == 0 and "broken" not in disabled.stdout
    assert "entry-point plugins are disabled (CODI2_NO_PLUGINS)" in disabled.stdout
