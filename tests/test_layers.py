"""No import runs back up the layers (every import, module-level or inside a function):

core  <  registry  <  plugins  <  assembly / api  <  training, evaluation, server  <  toy  <  cli

The core takes components and never sees the registry or a plugin; the trainer knows no toy
world (the toy registers its training recipe with its preset); nothing but ``__main__`` imports
the command line."""

import ast
from pathlib import Path

import codi2

PACKAGE = Path(codi2.__file__).parent
UPPER = ("codi2.cli", "codi2.repl", "codi2.server", "codi2.toy", "codi2.training", "codi2.evaluation")
#: folder or module -> (only these may be imported) or (these may not)
ONLY = {
    "core": ("codi2.core", "codi2.errors"),
    "registry": ("codi2", "codi2.registry", "codi2.core", "codi2.errors"),
}
NOT = {
    "plugins": (*UPPER, "codi2.api", "codi2.assembly", "codi2.hub"),
    "assembly.py": UPPER,
    "api.py": UPPER,
    "hub.py": UPPER,
    "training": ("codi2.cli", "codi2.repl", "codi2.server", "codi2.toy"),
    "evaluation": ("codi2.cli", "codi2.repl", "codi2.server", "codi2.toy", "codi2.training"),
    "server": ("codi2.cli", "codi2.repl", "codi2.toy", "codi2.training"),
    "repl.py": ("codi2.cli",),
}


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {m for m in found if m == "codi2" or m.startswith("codi2.")}


def under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def violations(path: Path, root: Path = PACKAGE) -> list[str]:
    where = path.relative_to(root).parts[0]
    found = imports(path)
    bad = [m for m in found if where in ONLY and not under(m, ONLY[where])]
    bad += [m for m in found if where in NOT and under(m, NOT[where])]
    bad += ["codi2.cli"] if "codi2.cli" in found and path.name != "__main__.py" else []
    return [f"{path.relative_to(root)} imports {m}" for m in sorted(set(bad))]


def test_no_import_runs_back_up_the_layers():
    found = [v for path in sorted(PACKAGE.rglob("*.py")) for v in violations(path)]
    assert not found, "\n".join(found)


def test_the_rules_can_fail(tmp_path):
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "model.py").write_text("def f():\n    from codi2.registry import default_registry\n")
    (tmp_path / "repl.py").write_text("from codi2.cli import GenerationBar\n")
    assert violations(tmp_path / "core" / "model.py", tmp_path) == ["core/model.py imports codi2.registry"]
    assert violations(tmp_path / "repl.py", tmp_path) == ["repl.py imports codi2.cli"]
