"""The ``codi2`` command line (also ``python -m codi2``).

Start-up stays fast: this module imports only the standard library and codi2's light modules;
each subcommand imports what it needs when it runs. ``codi2 --help`` never imports torch.

Adding a subcommand: write ``_NAME_arguments(parser)`` and ``_run_NAME(args) -> int`` and add
one :class:`Command` row to :data:`COMMANDS`.

Global options (``--debug``, ``--quiet``, ``--device``, ``--dtype``, ``--threads``) may stand
before or after the subcommand. Errors: a :class:`~codi2.errors.Codi2Error` (or a usage error,
or an OS error such as a port in use) prints one line ``error: ...`` to stderr and exits with
status 2; anything unexpected prints one line and exits with 1. ``codi2 --debug ...`` shows
the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from codi2 import __version__
from codi2.api import DEFAULT_MODEL
from codi2.errors import Codi2Error
from codi2.evaluation import commands as evaluation_commands
from codi2.progress import GenerationBar
from codi2.toy import commands as toy_commands
from codi2.training import commands as training_commands

EXIT_ERROR = 2
EXIT_BUG = 1


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, one-line help, argument setup and the function that runs it."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (plus a pointer to --help)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_ERROR, f"error: {self.prog}: {message} (see `{self.prog} --help`)\n")


# --- shared pieces ---------------------------------------------------------------------------


def _model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", "-m", default=DEFAULT_MODEL, metavar="NAME_OR_DIR",
        help=f"a saved model directory, packaged model, preset or hub id org/name (default: {DEFAULT_MODEL})",
    )  # fmt: skip


def _generation_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("generation")
    group.add_argument("--seed", type=_seed, help="random seed, 0 to 2**63-1 (same seed, same answer)")
    group.add_argument("--steps", type=int, help="diffusion steps per media item (default: the decoder's)")
    group.add_argument("--guidance", type=float, help="classifier-free guidance scale of the decoders")
    group.add_argument("--max-new-tokens", type=int, metavar="N", help="longest answer, in tokens")
    group.add_argument("--temperature", type=float, help="0 = greedy (the model's default)")


def _seed(text: str) -> int:
    """argparse type for --seed: the one range the API and the server take too."""
    from codi2.core.config import check_seed

    try:
        return check_seed(int(text))  # type: ignore[return-value]
    except (ValueError, Codi2Error) as exc:
        raise argparse.ArgumentTypeError(str(exc) if isinstance(exc, Codi2Error) else f"not an integer: {text!r}") from None


def _generation_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "seed": args.seed, "steps": args.steps, "guidance": args.guidance,
        "max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
    }  # fmt: skip


def _load_model(args: argparse.Namespace) -> Any:
    """Load ``--model`` with the global ``--device/--dtype/--threads`` and a progress bar."""
    import codi2

    source = codi2.api.resolve_model(args.model)  # resolved once; an unknown name fails before torch loads
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return codi2.load(source, device=args.device, dtype=args.dtype, progress=_progress_on(args))


def _stdin_text(what: str) -> str:
    """Standard input as UTF-8 text; undecodable bytes are a one-line error, not a traceback."""
    from codi2.errors import MessageError

    data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MessageError(f"{what} is not valid UTF-8 (byte {e.start + 1})") from None


def _progress_on(args: argparse.Namespace) -> bool:
    return not args.quiet and sys.stderr.isatty()


def _max_tokens(model: Any, options: dict[str, Any]) -> int:
    return options.get("max_new_tokens") or model.config.generation.max_new_tokens


# --- codi2 plugins ---------------------------------------------------------------------------


def _plugins_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object (options included)")
    parser.add_argument("--options", action="store_true", help="list each component's options (name, type, default)")
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
                spec.name: {"plugin": spec.plugin, "description": spec.description, "options": spec.options_schema()}
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
            if args.options:
                for name in names:
                    rows = registry.get(kind, name).options_table()
                    print(f"      {name}:" + ("" if rows else " (no options)"))
                    for option, kind_, default, about in rows:
                        print(f"        {option}: {kind_} = {default}" + (f"  {about}" if about else ""))
    failed = sum(1 for info in infos if info.error)
    count = sum(len(names) for info in infos for names in info.components.values())
    print(f"\n{len(infos)} plugin(s), {count} component(s), {failed} failed")
    if not registry.entry_points_enabled:
        print("entry-point plugins are disabled (CODI2_NO_PLUGINS)")
    if failed and not args.debug:
        print("run `codi2 --debug plugins` for tracebacks, `codi2 plugins --strict` to fail on them")
    return 0


# --- codi2 generate --------------------------------------------------------------------------


def _generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", metavar="PROMPT", nargs="?",
                        help="the prompt; {NAME} places the media attached as NAME ({{ and }} are literal braces); "
                             "'-' reads it from standard input")  # fmt: skip
    parser.add_argument("--prompts", metavar="FILE.jsonl",
                        help="many prompts, one JSON object a line ({\"prompt\", \"media\", \"seed\", \"id\"}); "
                             "answers are generated in batches and printed one JSON line each")  # fmt: skip
    parser.add_argument("--batch", type=int, default=8, metavar="N",
                        help="with --prompts: prompts generated together (default 8; same answers as 1)")  # fmt: skip
    parser.add_argument("--media", action="append", default=[], metavar="NAME=PATH",
                        help="attach a media file (image, audio, video or a plugin's modality) as {NAME} "
                             "(repeatable); NAME=MODALITY:PATH says which modality a shared suffix is")  # fmt: skip
    _model_argument(parser)
    parser.add_argument("--out", "-o", default="out", metavar="DIR",
                        help="where generated media go: DIR/output0.png, output1.wav, ... (default: out)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    _generation_arguments(parser)


def _run_generate(args: argparse.Namespace) -> int:
    from codi2.answers import answer_to_dict
    from codi2.attachments import load_attachment, parse_media_option
    from codi2.core.messages import normalize_messages
    from codi2.errors import MessageError

    if (args.prompt is None) == (args.prompts is None):
        raise MessageError("codi2 generate: give a PROMPT or --prompts FILE (one of them)")
    if args.prompts is not None:
        return _run_generate_many(args)
    prompt = _stdin_text("the prompt on standard input").rstrip("\r\n") if args.prompt == "-" else args.prompt
    media: dict[str, Any] = {}
    for option in args.media:
        name, path, modality = parse_media_option(option)
        if name in media:
            raise MessageError(f"--media {option!r}: the name {name!r} is attached twice")
        media[name] = load_attachment(path, name=name, modality=modality)
    messages = normalize_messages(prompt, media)  # placeholder mistakes fail before the model loads
    model = _load_model(args)
    options = _generation_options(args)
    bar = GenerationBar(_max_tokens(model, options), _progress_on(args))
    try:
        answer = model.generate(messages, progress=bar, **options)
    finally:
        bar.close()
    result = answer_to_dict(answer, args.out, modalities=model.modalities)
    if args.json:
        print(json.dumps({"model": model.source_name, **result}))
        return 0
    if answer.text.strip():
        print(answer.text.strip())
    for item in result["media"]:
        print(f"wrote {item['path']} ({item['type']})")
    if not result["media"] and not args.quiet:
        print("(no media generated)", file=sys.stderr)
    return 0


def _run_generate_many(args: argparse.Namespace) -> int:
    """``codi2 generate --prompts FILE``: one JSON line per prompt, media under ``--out/ID/``."""
    from pathlib import Path

    from tqdm.auto import tqdm

    from codi2.answers import answer_to_dict
    from codi2.attachments import load_attachment
    from codi2.errors import ConfigError, MessageError
    from codi2.prompt_files import read_prompt_file

    if args.media:
        raise MessageError("codi2 generate: --media goes with a PROMPT; in --prompts files each line has its own media")
    if args.batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {args.batch}")
    items = read_prompt_file(args.prompts, load_media=load_attachment)  # every line checked before the model loads
    model = _load_model(args)
    options = _generation_options(args)
    default_seed = options.pop("seed")
    with tqdm(total=len(items), desc="generating", unit="item", file=sys.stderr, disable=not _progress_on(args)) as bar:
        for first in range(0, len(items), args.batch):
            chunk = items[first : first + args.batch]
            seeds = [item.seed if item.seed is not None else default_seed for item in chunk]
            answers = model.generate_batch([i.prompt for i in chunk], [i.media for i in chunk], seeds=seeds, max_batch=args.batch, **options)
            for item, answer in zip(chunk, answers):
                print(json.dumps({"id": item.id, **answer_to_dict(answer, Path(args.out) / item.id)}), flush=True)
            bar.update(len(chunk))
    return 0


# --- codi2 chat ------------------------------------------------------------------------------


def _chat_arguments(parser: argparse.ArgumentParser) -> None:
    _model_argument(parser)
    parser.add_argument("--out", "-o", default="codi2-chat", metavar="DIR",
                        help="where generated media go: DIR/turn1-output0.png, ... (default: codi2-chat)")  # fmt: skip
    parser.add_argument("--system", metavar="TEXT", help="a system message that opens the conversation")
    _generation_arguments(parser)


def _run_chat(args: argparse.Namespace) -> int:
    from codi2.repl import ChatREPL

    model = _load_model(args)
    repl = ChatREPL(model, out_dir=args.out, system=args.system, options=_generation_options(args),
                    progress=_progress_on(args))  # fmt: skip
    return repl.run()


# --- codi2 serve -----------------------------------------------------------------------------


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    _model_argument(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it to the network)")  # fmt: skip
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    parser.add_argument("--public-url", default=None, metavar="URL",
                        help="the URL clients reach the server at, for media links in answers "
                             "(default: each request's own, e.g. http://127.0.0.1:8000)")  # fmt: skip
    limits = parser.add_argument_group("limits")
    limits.add_argument("--max-queue", type=int, default=16, metavar="N",
                        help="requests admitted at once (running + waiting); more get 429 (default 16)")  # fmt: skip
    limits.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                        help="per-request limit, queueing included; past it: 504 (default 300)")  # fmt: skip
    limits.add_argument("--max-upload-mb", type=float, default=25.0, metavar="MB",
                        help="largest request body (default 25)")  # fmt: skip
    limits.add_argument("--body-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="time a request body may take to arrive; past it: 408 (default 30)")  # fmt: skip
    limits.add_argument("--shutdown-grace", type=float, default=30.0, metavar="SECONDS",
                        help="on SIGTERM/Ctrl-C, time in-flight requests get to finish before they "
                             "are answered 503 (default 30)")  # fmt: skip
    limits.add_argument("--max-batch", type=int, default=8, metavar="N",
                        help="concurrent requests generated together in one batch; 1 = one at a time (default 8)")  # fmt: skip
    limits.add_argument("--batch-window-ms", type=float, default=5.0, metavar="MS",
                        help="how long the first waiting request waits for others to join its batch (default 5)")  # fmt: skip
    limits.add_argument("--max-sessions", type=int, default=256, metavar="N", help="conversations kept (default 256)")
    limits.add_argument("--session-ttl", type=float, default=3600.0, metavar="SECONDS",
                        help="idle conversations are forgotten after this (default 3600)")  # fmt: skip


def _run_serve(args: argparse.Namespace) -> int:
    from codi2.server import ServerSettings, require_server_dependencies, run_server

    require_server_dependencies()
    settings = ServerSettings(
        host=args.host, port=args.port, max_queue=args.max_queue, request_timeout=args.timeout,
        max_body_bytes=int(args.max_upload_mb * 2**20), max_sessions=args.max_sessions,
        session_ttl=args.session_ttl, body_timeout=args.body_timeout, shutdown_grace=args.shutdown_grace,
        public_url=args.public_url, max_batch=args.max_batch, batch_window=args.batch_window_ms / 1000,
    )  # fmt: skip
    settings.validate()
    if not settings.is_loopback() and not args.quiet:
        print(f"warning: binding {args.host}: anyone who can reach this machine can use the model "
              "(there is no authentication)", file=sys.stderr)  # fmt: skip
    model = _load_model(args)
    return run_server(model, settings, quiet=args.quiet)


# --- codi2 push ------------------------------------------------------------------------------


def _push_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", metavar="DIR", help="a saved codi2 model directory")
    parser.add_argument("repo_id", metavar="ORG/NAME", help="the hub repository (created if needed)")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--no-card", action="store_true", help="do not add a README.md model card")


def _run_push(args: argparse.Namespace) -> int:
    from codi2.hub import push_to_hub

    url = push_to_hub(args.model_dir, args.repo_id, private=args.private or None, card=not args.no_card)
    print(f"pushed {args.model_dir} to {args.repo_id}: {url}")
    return 0


COMMANDS: tuple[Command, ...] = (
    Command("plugins", "list installed plugins, their components and load errors",
            _plugins_arguments, _run_plugins),
    Command("generate", "answer one prompt (text + attached media) and write the generated media",
            _generate_arguments, _run_generate),
    Command("chat", "a multi-round conversation in the terminal (/help inside lists commands)",
            _chat_arguments, _run_chat),
    Command("serve", "an HTTP API (OpenAI-style chat) and a web chat page on this machine",
            _serve_arguments, _run_serve),
    Command("demo", toy_commands.DEMO_HELP, toy_commands.demo_arguments, toy_commands.run_demo_command),
    Command("bench", toy_commands.BENCH_HELP, toy_commands.bench_arguments, toy_commands.run_bench_command),
    Command("train", training_commands.TRAIN_HELP, training_commands.train_arguments, training_commands.run_train),
    Command("data", training_commands.DATA_HELP, training_commands.data_arguments, training_commands.run_data),
    Command("eval", evaluation_commands.EVAL_HELP, evaluation_commands.eval_arguments, evaluation_commands.run_eval),
    Command("push", "upload a saved model directory to the Hugging Face hub, with a model card",
            _push_arguments, _run_push),
)  # fmt: skip


# --- entry point -----------------------------------------------------------------------------


def _global_arguments(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """The options every command takes. On subcommands their defaults are SUPPRESSed, so a
    value given before the subcommand is not overwritten by the subcommand's default."""

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    group = parser.add_argument_group("global options")
    group.add_argument("--debug", action="store_true", default=default(False), help="show tracebacks on errors")
    group.add_argument("--quiet", "-q", action="store_true", default=default(False),
                       help="no progress bars or notes on stderr")  # fmt: skip
    group.add_argument("--device", default=default(None), metavar="DEVICE",
                       help="cpu, cuda, cuda:N, mps or auto (default: auto)")  # fmt: skip
    group.add_argument("--dtype", default=default(None), choices=("float32", "bfloat16", "float16"),
                       help="weights' precision (default: as each component loads)")  # fmt: skip
    group.add_argument("--threads", type=int, default=default(None), metavar="N", help="CPU threads for torch")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="codi2",
        description="CoDi-2: in-context, interleaved and interactive any-to-any generation.",
    )
    parser.add_argument("--version", action="version", version=f"codi2 {__version__}")
    _global_arguments(parser, top=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        command.arguments(sub)
        _global_arguments(sub, top=False)
        sub.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.quiet:
        os.environ.setdefault("TQDM_DISABLE", "1")  # also silences the bars of diffusers/transformers
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        return args.run(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 — every failure becomes one line unless --debug
        if args.debug:
            traceback.print_exc()
        elif isinstance(exc, Codi2Error):
            print(f"error: {exc}", file=sys.stderr)
        elif isinstance(exc, OSError):  # a file we could not write, a port in use, ...
            print(f"error: {exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}", file=sys.stderr)
        else:
            print(f"error: unexpected {type(exc).__name__}: {exc} (run `codi2 --debug ...` for the traceback)",
                  file=sys.stderr)  # fmt: skip
            return EXIT_BUG
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
