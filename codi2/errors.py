"""Every error codi2 raises on purpose.

Errors are raised where bad input enters and say *what* is wrong and *where*
("media 'b' (photo.png): truncated PNG file"). All derive from :class:`Codi2Error`, so a
front end can catch one type and print one line.
"""

from __future__ import annotations


class Codi2Error(Exception):
    """Base class of every error codi2 raises deliberately."""


# --- input: messages, placeholders, media -------------------------------------------------


class MessageError(Codi2Error, ValueError):
    """A conversation or prompt is malformed (bad role, bad part, bad placeholder)."""


class PathNotAllowedError(MessageError):
    """A request tried to name a file or URL instead of sending the media's bytes (server)."""


class PlaceholderError(MessageError):
    """A placeholder has no attachment, or an attachment is never referenced."""


class UnknownModalityError(Codi2Error, ValueError):
    """A modality name that codi2 (or the chosen component) does not handle."""


class MediaError(Codi2Error, ValueError):
    """A media item could not be used. ``item`` names it (placeholder name, path or index)."""

    def __init__(self, message: str, *, item: str | None = None):
        self.item = item
        super().__init__(f"media {item}: {message}" if item else message)


class MediaNotFoundError(MediaError, FileNotFoundError):
    """A media path does not exist."""


class MediaDecodeError(MediaError):
    """A media file is unreadable, truncated or of an unsupported format."""


class MediaLimitError(MediaError):
    """A media item is empty, too small, too large, too long or too short."""


class MediaTimeoutError(MediaLimitError):
    """Decoding a media item ran out of time (``max_decode_seconds``, or a caller's deadline
    when ``external``) or was cancelled; its decoder process was stopped."""

    def __init__(self, message: str, *, item: str | None = None, external: bool = False):
        self.external = external
        super().__init__(message, item=item)


# --- configuration, registry, checkpoints -------------------------------------------------


class ConfigError(Codi2Error, ValueError):
    """A configuration file or object is invalid; the message names the field."""


class PluginError(Codi2Error):
    """A plugin failed to import or register."""


class DuplicateComponentError(PluginError):
    """Two plugins registered a component of the same kind under the same name."""


class UnknownComponentError(Codi2Error, KeyError):
    """A component name that no loaded plugin provides; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ComponentLoadError(Codi2Error):
    """A component's weights or files could not be loaded (missing file, unknown hub id offline)."""


class CheckpointError(Codi2Error):
    """A codi2 checkpoint is missing, malformed, or does not match the model (names the tensor)."""


class DatasetError(Codi2Error, ValueError):
    """A dataset file is malformed; the message names the file, line and field."""


class TemplateError(Codi2Error):
    """A chat template cannot be used to split a conversation into turns."""


# --- helpers for the messages above -------------------------------------------------------


def pickle_refused(what: str) -> str:
    """One line for a pickled file that ``torch.load(weights_only=True)`` refused (or could
    not read): codi2 never unpickles code, so the fix is converting it to safetensors."""
    return (
        f"{what} is a pickle holding objects other than tensors (or is not a readable pickle); "
        "codi2 never unpickles code: convert it to safetensors in a trusted environment "
        "(safetensors.torch.save_file(state_dict, 'model.safetensors'))"
    )


def pickled_weights(directory: str) -> str:
    """The pickled weights files (``*.bin``, ``*.pt``, ``*.pth``, ``*.ckpt``) in a model
    directory, for naming them in an error; the directory itself when none is found."""
    from pathlib import Path

    path = Path(directory).expanduser()
    found = sorted(
        str(p) for p in (path.iterdir() if path.is_dir() else ())
        if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")
    )
    return ", ".join(found[:3]) or str(directory)
