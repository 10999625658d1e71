"""The ``codi2`` command line (also ``python -m codi2``).

Start-up stays fast: this module imports only the standard library and codi2's light modules;
each subcommand imports what it needs when it runs. ``codi2 --help`` never imports torch.

Adding a subcommand: write ``_NAME_arguments(parser)`` and ``_run_NAME(args) -> int`` and add
one :class:`Command` row to :data:`COMMANDS`.

Errors: a :class:`~codi2.errors.Codi2Error` prints one line ``error: ...`` to stderr and exits
with status 2; ``codi2 --debug ...`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from codi2 import __version__
from codi2.errors import Codi2Error

EXIT_ERROR = 2


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, one-line help, argument setup and the function that runs it."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# --- codi2 plugins ---------------------------------------------------------------------------


def _plugins_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="fail on the first broken plugin (like CODI2_STRICT_PLUGINS=1)",
    )


def _run_plugins(args: argparse.Namespace) -> int:
    from codi2.registry import KINDS, Registry, default_registry

    registry = Registry.create(strict=True) if args.strict else default_registry()
    infos = registry.plugins()
    if args.json:
        components = {
            kind: {
                spec.name: {"plugin": spec.plugin, "description": spec.description}
                for spec in registry.specs(kind)
            }
            for kind in KINDS
        }
        out = {
            "version": __version__,
            "entry_points": registry.entry_points_enabled,
            "plugins": [info.to_dict() for info in infos],
            "components": components,
            "failures": sum(1 for info in infos if info.error),
        }
        print(json.dumps(out, indent=2))
        return 0

    for info in infos:
        print(f"{info.name}  ({info.source})")
        if info.error:
            print(f"    FAILED: {info.error}")
            if args.debug and info.exception is not None:
                trace = "".join(traceback.format_exception(info.exception)).rstrip()
                print(textwrap.indent(trace, "      "))
        elif not info.components:
            print("    (no components)")
        for kind, names in info.components.items():
            print(f"    {kind}: {', '.join(names)}")
    failed = sum(1 for info in infos if info.error)
    count = sum(len(names) for info in infos for names in info.components.values())
    print(f"\n{len(infos)} plugin(s), {count} component(s), {failed} failed")
    if not registry.entry_points_enabled:
        print("entry-point plugins are disabled (CODI2_NO_PLUGINS)")
    if failed and not args.debug:
        print("run `codi2 --debug plugins` for tracebacks, `codi2 plugins --strict` to fail on them")
    return 0


COMMANDS: tuple[Command, ...] = (
    Command("plugins", "list installed plugins, their components and load errors",
            _plugins_arguments, _run_plugins),
)


# --- entry point -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="codi2",
        description="CoDi-2: in-context, interleaved and interactive any-to-any generation.",
    )
    parser.add_argument("--version", action="version", version=f"codi2 {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        command.arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.run(args) or 0
    except Codi2Error as exc:
        if args.debug:
            traceback.print_exc()
        else:
            print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
