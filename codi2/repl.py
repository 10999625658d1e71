"""``codi2 chat``: a multi-round conversation in the terminal.

Type a message and press Enter. Attach media to your next message with ``/image PATH``,
``/audio PATH``, ``/video PATH`` or ``/MODALITY PATH`` for any media modality the model reads (several are fine; they come before your text, in the order
attached). Generated media are written to the output folder and their paths printed.
``/reset`` starts over, ``/save DIR`` writes the conversation (``conversation.json`` and its
media), ``/quit`` or Ctrl-D leaves. Line editing and history come from readline when the input
is a terminal; piped input works too (one message or command per line).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

from codi2.errors import Codi2Error

HELP = """\
commands:
  /image PATH   attach an image to your next message (also /audio PATH, /video PATH, /MODALITY PATH)
  /reset        forget the conversation and start a new one
  /save DIR     write the conversation to DIR (conversation.json + media files)
  /help         show this help
  /quit         leave (Ctrl-D works too)
anything else is a message to the model."""

class ChatREPL:
    """The read-eval-print loop over a :class:`~codi2.core.conversation.Conversation`."""

    def __init__(
        self,
        model: Any,
        *,
        out_dir: str | Path = "codi2-chat",
        system: str | None = None,
        options: dict[str, Any] | None = None,
        progress: bool = False,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
    ):
        self.model = model
        self.chat = model.chat(system=system)
        self.out_dir = Path(out_dir)
        self.options = {k: v for k, v in (options or {}).items() if v is not None}
        self.progress = progress
        self.stdin, self.stdout, self.stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
        self.attachments: list[dict[str, Any]] = []
        self.turn = 0  # answered turns since start (file names keep counting across /reset)

    # --- output --------------------------------------------------------------------------

    def say(self, text: str) -> None:
        print(text, file=self.stdout, flush=True)

    def error(self, text: str) -> None:
        print(f"error: {text}", file=self.stderr, flush=True)

    # --- the loop -------------------------------------------------------------------------

    def _interactive(self) -> bool:
        return self.stdin is sys.stdin and sys.stdin.isatty()

    def _read(self) -> str | None:
        """One line, or None at end of input."""
        if self._interactive():
            try:
                import readline  # noqa: F401  (line editing and history for input())
            except ImportError:
                pass
            prompt = f"you [{len(self.attachments)} attached]> " if self.attachments else "you> "
            try:
                return input(prompt)
            except EOFError:
                print(file=self.stdout)
                return None
        line = self.stdin.readline()
        return None if line == "" else line.rstrip("\r\n")

    def run(self) -> int:
        """Run until /quit or end of input; returns the exit status (0)."""
        if self._interactive():
            self.say(f"codi2 chat with {getattr(self.model, 'source_name', 'the model')} — /help for commands, /quit to leave")
        while True:
            try:
                line = self._read()
            except KeyboardInterrupt:
                print(file=self.stdout)
                continue
            if line is None:
                return 0
            line = line.strip()
            if not line:
                continue
            try:
                if line.startswith("/"):
                    if self.command(line) == "quit":
                        return 0
                else:
                    self.send(line)
            except Codi2Error as exc:
                self.error(str(exc))
            except KeyboardInterrupt:
                self.error("interrupted; the conversation is as it was before that message")

    def command(self, line: str) -> str | None:
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        if name in ("/quit", "/exit"):
            return "quit"
        if name == "/help":
            self.say(HELP)
        elif name == "/reset":
            self.chat.reset()
            self.attachments.clear()
            self.say("(new conversation)")
        elif name == "/save":
            if not arg:
                raise Codi2Error("/save needs a folder: /save DIR")
            path = self.chat.save(arg)
            self.say(f"saved {path}")
        elif name[1:] in self.model.modalities.media:
            self.attach(name[1:], arg)
        else:
            raise Codi2Error(f"unknown command {name}; /help lists the commands")
        return None

    def attach(self, modality: str, path: str) -> None:
        from codi2.attachments import load_attachment

        if not path:
            raise Codi2Error(f"/{modality} needs a file: /{modality} PATH")
        if modality not in self.model.encoder_for:
            reads = ", ".join(m for m in sorted(self.model.encoder_for) if m != "text")
            raise Codi2Error(f"this model does not read {modality}; it reads {reads}")
        media = load_attachment(path, name=Path(path).name, modality=modality, modalities=self.model.modalities)
        self.attachments.append({"type": modality, "data": media, "name": media.name})
        self.say(f"(attached {modality} {path}; it goes with your next message)")

    def send(self, text: str) -> None:
        from codi2.progress import GenerationBar

        parts = [*self.attachments, {"type": "text", "text": text}]
        self.attachments = []  # used once, whether the turn succeeds or not
        max_tokens = self.options.get("max_new_tokens") or self.model.config.generation.max_new_tokens
        bar = GenerationBar(max_tokens, self.progress)
        try:
            answer = self.chat.ask(parts, progress=bar, **self.options)
        finally:
            bar.close()
        self.turn += 1
        self.say(f"codi2: {answer.text.strip()}" if answer.text.strip() else "codi2:")
        for path, item in zip(answer.save(self.out_dir, stem=f"turn{self.turn}-output"), answer.media):
            self.say(f"  [{item.modality}] {path}")


__all__ = ["HELP", "ChatREPL"]
