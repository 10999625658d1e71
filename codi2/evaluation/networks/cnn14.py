"""PANNs CNN14 (Kong et al. 2020), the AudioSet classifier behind AudioLDM's KL and FD.

The module tree and parameter names follow the released PANNs model, so its checkpoints —
``Cnn14_16k_mAP=0.438.pth`` (16 kHz, what AudioLDM's evaluation uses at 16 kHz) and
``Cnn14_mAP=0.431.pth`` (32 kHz) — load with ``strict=True``. The checkpoint is never
downloaded: pass its local path (or convert it once to safetensors with
:func:`convert_checkpoint`). ``.pth`` files are read with ``torch.load(weights_only=True)``;
numpy arrays stored beside the weights (training-state leftovers) are allowed through
numpy's array reconstruction, nothing else.

Outputs, as AudioLDM's evaluation reads them: ``logits`` (``fc_audioset``, before the
sigmoid, 527 AudioSet classes) and the 2048-d ``embedding`` (``relu(fc1(.))``) used for FD.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from codi2.core.types import Media
from codi2.errors import ComponentLoadError, MediaError, pickle_refused
from codi2.evaluation.networks import cached, resolve_device
from codi2.evaluation.networks.frontend import LogMel, Spectrogram

#: where the default checkpoint is looked for (override with CODI2_CNN14_CHECKPOINT or an option)
DEFAULT_CHECKPOINT = Path("~/.cache/codi2/eval/Cnn14_16k_mAP=0.438.pth")
CHECKPOINT_URL_16K = "https://zenodo.org/record/3987831/files/Cnn14_16k_mAP%3D0.438.pth"
CHECKPOINT_URL_32K = "https://zenodo.org/record/3576403/files/Cnn14_mAP%3D0.431.pth"

#: front-end settings of the two released variants, keyed by their window (n_fft)
_FRONT_ENDS = {
    512: {"sample_rate": 16000, "hop_length": 160, "fmin": 50.0, "fmax": 8000.0},
    1024: {"sample_rate": 32000, "hop_length": 320, "fmin": 50.0, "fmax": 14000.0},
}


@dataclass(frozen=True)
class Cnn14Config:
    """Architecture and front end. The defaults are the 16 kHz released model."""

    sample_rate: int = 16000
    n_fft: int = 512
    hop_length: int = 160
    mel_bins: int = 64
    fmin: float = 50.0
    fmax: float = 8000.0
    channels: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    embedding_dim: int = 2048
    classes: int = 527

    def __post_init__(self) -> None:
        if len(self.channels) != 6:
            raise ValueError(f"CNN14 has 6 conv blocks, got channels={self.channels}")


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor, pool: tuple[int, int]) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, kernel_size=pool)


class Cnn14(nn.Module):
    """``forward(waveform [B, samples]) -> (logits [B, classes], embedding [B, embedding_dim])``.

    Inference only: PANNs' SpecAugment, mixup and dropout act in training and hold no weights.
    """

    def __init__(self, config: Cnn14Config = Cnn14Config()):
        super().__init__()
        self.config = c = config
        self.spectrogram_extractor = Spectrogram(c.n_fft, c.hop_length)
        self.logmel_extractor = LogMel(c.sample_rate, c.n_fft, c.mel_bins, c.fmin, c.fmax)
        self.bn0 = nn.BatchNorm2d(c.mel_bins)
        widths = (1, *c.channels)
        for i in range(6):
            self.add_module(f"conv_block{i + 1}", ConvBlock(widths[i], widths[i + 1]))
        self.fc1 = nn.Linear(c.channels[-1], c.embedding_dim)
        self.fc_audioset = nn.Linear(c.embedding_dim, c.classes)

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.logmel_extractor(self.spectrogram_extractor(waveform))  # [B, 1, T, mels]
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # batch norm over mel bins
        for i in range(6):
            x = getattr(self, f"conv_block{i + 1}")(x, (2, 2) if i < 5 else (1, 1))
        x = x.mean(dim=3)  # over frequency -> [B, C, T]
        x = x.max(dim=2).values + x.mean(dim=2)  # max + mean over time
        embedding = F.relu(self.fc1(x))
        return self.fc_audioset(embedding), embedding


# --- checkpoints --------------------------------------------------------------------------


def _numpy_safe_globals() -> list[Any]:
    """numpy's array/scalar reconstruction, under the names old and new pickles use."""
    # numpy 2 moved numpy.core to numpy._core; pickles name whichever wrote them
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    names: list[Any] = [np.ndarray, np.dtype]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        names += [(multiarray._reconstruct, f"{module}._reconstruct"), (multiarray.scalar, f"{module}.scalar")]
    names += [type(np.dtype(t)) for t in ("float16", "float32", "float64", "int8", "int16", "int32",
                                           "int64", "uint8", "bool")]
    return names


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights in ``path`` (safetensors, or a ``.pth`` read with ``weights_only=True``).

    A PANNs checkpoint is ``{"model": state_dict, ...}``; the ``model`` entry is returned.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ComponentLoadError(
            f"CNN14 checkpoint {str(path)!r} does not exist. Download the 16 kHz PANNs model once "
            f"({CHECKPOINT_URL_16K}) and pass its path (option 'checkpoint', --cnn14, or "
            f"CODI2_CNN14_CHECKPOINT); see docs/evaluation.md"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            try:
                with torch.serialization.safe_globals(_numpy_safe_globals()):
                    state = torch.load(path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError:
                raise ComponentLoadError(f"CNN14 checkpoint: {pickle_refused(str(path))}") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ComponentLoadError(f"CNN14 checkpoint {str(path)!r} is not a state dict of tensors")
    return state


def config_from_state_dict(state: dict[str, torch.Tensor], **front_end: Any) -> Cnn14Config:
    """Read the architecture off the tensor shapes; the front end (rates, band) from the window
    size of the released variants unless given (``sample_rate``, ``hop_length``, ``fmin``, ``fmax``)."""
    try:
        n_fft = int(state["spectrogram_extractor.stft.conv_real.weight"].shape[-1])
        channels = tuple(int(state[f"conv_block{i}.conv1.weight"].shape[0]) for i in range(1, 7))
        config = Cnn14Config(
            n_fft=n_fft,
            mel_bins=int(state["bn0.weight"].shape[0]),
            channels=channels,
            embedding_dim=int(state["fc1.weight"].shape[0]),
            classes=int(state["fc_audioset.weight"].shape[0]),
        )
    except KeyError as exc:
        raise ComponentLoadError(f"not a CNN14 state dict: tensor {exc.args[0]!r} is missing") from None
    known = dict(_FRONT_ENDS.get(n_fft, {}))
    known.update({k: v for k, v in front_end.items() if v is not None})
    missing = {"sample_rate", "hop_length", "fmin", "fmax"} - set(known)
    if missing:
        raise ComponentLoadError(
            f"CNN14 with window {n_fft} is not a released variant: give {', '.join(sorted(missing))}"
        )
    return replace(config, **known)


def load_cnn14(path: str | Path, **front_end: Any) -> Cnn14:
    """A :class:`Cnn14` with the weights of ``path`` (``strict=True``), in eval mode."""
    state = read_state_dict(path)
    model = Cnn14(config_from_state_dict(state, **front_end))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ComponentLoadError(f"CNN14 checkpoint {str(path)!r} does not match the model: {exc}") from None
    return model.eval()


def save_cnn14(model: Cnn14, path: str | Path) -> Path:
    """Write the weights: safetensors for a ``.safetensors`` suffix, else PANNs' ``{"model": ...}``."""
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"model": state}, path)
    return path


def convert_checkpoint(pth: str | Path, out: str | Path) -> Path:
    """Convert a PANNs ``.pth`` to a ``.safetensors`` file holding only the model weights."""
    from safetensors.torch import save_file

    out = Path(out)
    save_file({k: v.contiguous() for k, v in read_state_dict(pth).items()}, str(out))
    return out


# --- the classifier the audio metrics use ----------------------------------------------------


class Cnn14Classifier:
    """CNN14 as an :class:`~codi2.evaluation.audio.AudioClassifier`.

    Each clip is prepared as AudioLDM's evaluation does (``audioldm_eval`` ``WaveDataset``): its
    mean removed, resampled to the model's rate, zero-padded to at least ``min_seconds`` (2 s),
    and classified on its own (batch of one: CNN14 pools over time, so padding clips to one
    length would change them). ``remove_mean=False, min_seconds=0`` is how
    ``frechet_audio_distance`` feeds it (the clip as read, resampled).
    """

    name = "panns-cnn14"

    def __init__(self, model: Cnn14, device: str = "cpu", min_seconds: float = 2.0, source: str = "",
                 remove_mean: bool = True):
        self.model = model.eval().to(device)
        self.device = device
        self.sample_rate = model.config.sample_rate
        self.min_samples = round(min_seconds * self.sample_rate)
        self.remove_mean = remove_mean
        self.source = source
        c = model.config
        #: the feature network, as an evaluation report names it
        self.network = (f"PANNs CNN14 {c.sample_rate // 1000} kHz ({c.embedding_dim}-d embedding, "
                        f"{c.classes} classes) from {source or 'memory'}")
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _prepare(self, item: Media) -> torch.Tensor:
        from codi2.core.audio import resample

        if item.modality != "audio" or not item.sample_rate:
            raise MediaError("the audio classifier needs an audio item with a sample rate", item=item.label)
        wave = np.asarray(item.data, np.float32)
        if self.remove_mean:
            wave = wave - wave.mean()
        wave = resample(wave, item.sample_rate, self.sample_rate)
        if wave.size < self.min_samples:
            wave = np.pad(wave, (0, self.min_samples - wave.size))
        return torch.from_numpy(np.ascontiguousarray(wave, np.float32))[None]

    @torch.inference_mode()
    def classify(self, items: list[Media]) -> tuple[np.ndarray, np.ndarray]:
        """``(logits [N, classes], embeddings [N, D])`` as float64 arrays."""
        for item in items:
            key = item.content_hash()
            if key not in self._cache:
                logits, emb = self.model(self._prepare(item).to(self.device))
                self._cache[key] = (logits[0].double().cpu().numpy(), emb[0].double().cpu().numpy())
        rows = [self._cache[item.content_hash()] for item in items]
        return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])


def default_checkpoint() -> Path:
    return Path(os.environ.get("CODI2_CNN14_CHECKPOINT") or DEFAULT_CHECKPOINT).expanduser()


def load_cnn14_classifier(checkpoint: str | Path | None = None, *, device: str | None = None,
                          min_seconds: float = 2.0, remove_mean: bool = True,
                          **front_end: Any) -> Cnn14Classifier:
    """The cached :class:`Cnn14Classifier` for ``checkpoint`` (default: :func:`default_checkpoint`)."""
    path = Path(checkpoint).expanduser() if checkpoint else default_checkpoint()
    device = resolve_device(device)
    # one network per checkpoint and device, shared by classifiers that prepare clips differently
    key = ("cnn14", str(path.resolve()), device, tuple(sorted(front_end.items())))
    model = cached(key, lambda: load_cnn14(path, **front_end))
    return cached((*key, min_seconds, remove_mean),
                  lambda: Cnn14Classifier(model, device, min_seconds=min_seconds, source=str(path),
                                          remove_mean=remove_mean))
