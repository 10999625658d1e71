"""Multi-round chat: generated media enter the history like user media, so a follow-up such as
"now make it blue" works on the last output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codi2.core.messages import MediaPart, Message, TextPart, normalize_messages
from codi2.core.types import Media

if TYPE_CHECKING:
    from codi2.core.model import Answer, CoDi2Model


class Conversation:
    """A conversation with a model. ``ask`` adds a user turn and the model's answer.

    >>> chat = model.chat()
    >>> first = chat.ask("Draw a large green square.")
    >>> second = chat.ask("Make it purple.")     # edits first.media[0]
    """

    def __init__(self, model: CoDi2Model, system: str | None = None):
        self.model = model
        self.system = system
        self.messages: list[Message] = []
        self.reset()

    def reset(self) -> None:
        self.messages = [Message("system", [TextPart(self.system)])] if self.system else []

    def ask(self, prompt: Any, media: dict[str, Any] | None = None, **options: Any) -> Answer:
        """One round. ``prompt`` is a placeholder string (with ``media``) or a list of content
        parts. If generation fails the history is left as it was."""
        modalities = self.model.modalities
        if isinstance(prompt, str):
            user = normalize_messages(prompt, media, modalities)[0]
        else:
            user = normalize_messages([{"role": "user", "content": prompt}], media, modalities)[0]
        history = [*self.messages, user]
        answer = self.model.generate(history, **options)
        parts = [TextPart(p) if isinstance(p, str) else MediaPart(p.modality, p, name=p.name, target=False) for p in answer.parts]
        self.messages = [*history, Message("assistant", parts or [TextPart("")])]
        return answer

    @property
    def last_media(self) -> list[Media]:
        """Media of the most recent assistant turn."""
        for msg in reversed(self.messages):
            if msg.role == "assistant":
                return [p.source for p in msg.media if isinstance(p.source, Media)]
        return []

    def save(self, directory: str | Path) -> Path:
        """Write ``conversation.json`` (content-part form) with every media item as a file beside it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        out, k = [], 0
        for msg in self.messages:
            content: list[dict[str, Any]] = []
            for part in msg.parts:
                if isinstance(part, TextPart):
                    content.append({"type": "text", "text": part.text})
                    continue
                media = part.source if isinstance(part.source, Media) else self.model.load_part(part)
                path = self.model.modalities.save(media, directory / f"media{k}")
                k += 1
                content.append({"type": part.modality, "path": path.name, **({"target": False} if not part.target else {})})
            out.append({"role": msg.role, "content": content})
        path = directory / "conversation.json"
        path.write_text(json.dumps({"messages": out}, indent=2) + "\n")
        return path
