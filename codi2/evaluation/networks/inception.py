"""FID's InceptionV3 — the network of FID and KID for image sets.

The network is torchmetrics' ``NoTrainInceptionV3`` (torch-fidelity's port of the TensorFlow
FID graph, ``inception-2015-12-05``), so features — and with them FID and KID — are those of
``torchmetrics.image.FrechetInceptionDistance`` / ``KernelInceptionDistance``: each image goes
in as uint8 RGB, is resized to 299 x 299 by the network (bilinear, antialiased), scaled to
[-1, 1]; the features are the average-pooled activations of one layer: ``64``, ``192``,
``768`` or ``2048`` (pool3, the standard FID feature).

The weights (torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``) are never
downloaded: pass a local file. It is read with ``torch.load(weights_only=True)`` (or as
safetensors); the network's constructor only ever sees a copy that codi2 wrote itself.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from codi2.core.types import Media
from codi2.errors import ComponentLoadError
from codi2.evaluation.networks import cached, resolve_device
from codi2.evaluation.networks.vit import embed_cached

DEFAULT_WEIGHTS = Path("~/.cache/codi2/eval/weights-inception-2015-12-05-6726825d.pth")
WEIGHTS_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
               "weights-inception-2015-12-05-6726825d.pth")
FEATURES = (64, 192, 768, 2048)


def default_weights() -> Path:
    return Path(os.environ.get("CODI2_INCEPTION_WEIGHTS") or DEFAULT_WEIGHTS).expanduser()


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ComponentLoadError(
            f"InceptionV3 weights {str(path)!r} do not exist. Download FID's InceptionV3 once "
            f"({WEIGHTS_URL}) and pass its path (option 'weights', or CODI2_INCEPTION_WEIGHTS); "
            f"see docs/evaluation.md")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear error
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ComponentLoadError(f"InceptionV3 weights {str(path)!r} cannot be read: {first}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ComponentLoadError(f"InceptionV3 weights {str(path)!r} are not a state dict of tensors")
    return state


def build_inception(state: dict[str, torch.Tensor], feature: int) -> torch.nn.Module:
    """torchmetrics' ``NoTrainInceptionV3`` with ``state`` (it loads weights only from a path,
    unpickling it: it gets a temporary file holding the tensors just read)."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "inception.pth"
        torch.save(state, copy)
        try:
            return NoTrainInceptionV3(name="inception-v3-compat", features_list=[str(feature)],
                                      feature_extractor_weights_path=str(copy))
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ComponentLoadError(f"InceptionV3 weights do not match the network: {first}") from None


class InceptionEmbedder:
    """``embed_images(items) -> [N, feature]`` InceptionV3 features (float64)."""

    name = "inception"

    def __init__(self, model: torch.nn.Module, feature: int, device: str, batch_size: int = 32,
                 source: str = ""):
        self.model = model.eval().to(device)
        self.feature, self.device, self.batch_size, self.source = feature, device, batch_size, source
        self.network = f"InceptionV3 (FID, torchmetrics NoTrainInceptionV3) pool {feature}-d from {source}"
        self._cache: dict[str, np.ndarray] = {}

    @torch.inference_mode()
    def _run(self, items: list[Media]) -> np.ndarray:
        out = []
        for item in items:  # images of any size: the network resizes each to 299 x 299
            pixels = np.ascontiguousarray(np.asarray(item.data, dtype=np.uint8)[..., :3])
            batch = torch.from_numpy(pixels).permute(2, 0, 1)[None].to(self.device)
            out.append(self.model(batch).reshape(1, -1).double().cpu().numpy())
        return np.concatenate(out)

    def embed_images(self, items: list[Media]) -> np.ndarray:
        return embed_cached(self._cache, items, self._run, self.batch_size)


def load_inception(weights: str | Path | None = None, *, feature: int = 2048, device: str | None = None,
                   batch_size: int = 32) -> InceptionEmbedder:
    """The cached :class:`InceptionEmbedder` for a local weights file (default :func:`default_weights`)."""
    if feature not in FEATURES:
        raise ComponentLoadError(f"InceptionV3 feature must be one of {FEATURES}, got {feature}")
    path = Path(weights).expanduser() if weights else default_weights()
    device = resolve_device(device)

    def build() -> InceptionEmbedder:
        return InceptionEmbedder(build_inception(read_weights(path), feature), feature, device,
                                 batch_size, source=str(path))

    return cached(("inception", str(path.resolve()), feature, device, batch_size), build)
