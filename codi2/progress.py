"""Progress display shared by the command line and the chat REPL (tqdm, on stderr)."""

from __future__ import annotations

import sys
from typing import Any


class GenerationBar:
    """A tqdm bar over generated tokens, naming the media item being rendered; pass the
    instance as ``progress=`` to ``generate``/``ask``."""

    def __init__(self, total: int, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="generating", unit="tok", file=sys.stderr, leave=False, disable=not enabled)

    def __call__(self, event: str, answer: Any) -> None:
        if event == "token":
            self.bar.update(1)
        elif event.startswith("render:"):
            self.bar.set_postfix_str(f"rendering {event.split(':', 1)[1]}")
        elif event == "media":
            self.bar.set_postfix_str(f"{len(answer.media)} media")

    def close(self) -> None:
        self.bar.close()


__all__ = ["GenerationBar"]
