"""Parity of codi2's image metrics with ``torchmetrics`` and ``clean-fid`` on the same images and
the same (tiny random) networks.

- CLIP score: ``torchmetrics.multimodal.CLIPScore`` given the very CLIP checkpoint codi2 loads
  (a tiny random ``CLIPModel`` saved with ``save_pretrained``); codi2's ``clip-score`` equals
  it, and CLIP-T / CLIPSIM (raw cosines, the paper's numbers) equal it divided by 100.
- FID / KID: ``torchmetrics`` ``FrechetInceptionDistance`` / ``KernelInceptionDistance`` on a
  weights file of FID's InceptionV3 with random weights (the file format torch-fidelity's
  weights come in), and ``clean-fid``'s own folder pipeline (PIL reading, its resize, its
  ``fid_from_feats`` / ``kernel_distance``) with that network as its custom feature extractor.
  The images are 299 x 299, so no toolkit resizes them and all three see the same pixels.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from _toolkits import require
from PIL import Image

from codi2.core.media import load_media
from codi2.evaluation import plugin
from codi2.evaluation.tasks import score_folders
from codi2.registry import Registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")

def _image(seed: int, size: int = 299) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(2 * np.pi * (rng.uniform(0.5, 3) * x + rng.uniform(0.5, 3) * y + rng.uniform()))
                     for _ in range(3)], axis=-1)
    image = 127.5 + 100 * base + rng.normal(0, 12, base.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("images")
    gen, ref = root / "generated", root / "references"
    gen.mkdir(), ref.mkdir()
    for i in range(4):
        Image.fromarray(_image(i)).save(ref / f"{i}.png")
        Image.fromarray(np.clip(_image(i).astype(int) + _image(50 + i) // 3 - 40, 0, 255).astype(np.uint8)).save(
            gen / f"{i}.png")
    return gen, ref


def _registry() -> Registry:
    registry = Registry()
    registry.register_plugin(plugin, "metrics")
    return registry


# --- CLIP score -------------------------------------------------------------------------------


class Transformers4Features(torch.nn.Module):
    """The same ``CLIPModel``, with ``get_*_features`` returning the projected tensor as in
    transformers 4: torchmetrics 1.9.0's CLIPScore calls ``.norm`` on it, while transformers 5
    returns an output object holding it as ``pooler_output``."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def get_image_features(self, *args, **kwargs):
        out = self.model.get_image_features(*args, **kwargs)
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def get_text_features(self, *args, **kwargs):
        out = self.model.get_text_features(*args, **kwargs)
        return out if isinstance(out, torch.Tensor) else out.pooler_output


TEXTS = {"0": "a red bus", "1": "waves on a beach at night", "2": "a cat", "3": "stripes"}


def test_clip_score_equals_torchmetrics_and_clip_t_is_its_cosine(folders, tmp_path):
    require("torchmetrics")
    from torchmetrics.multimodal.clip_score import CLIPScore
    from transformers import CLIPModel, CLIPProcessor

    from codi2.evaluation.testing import save_tiny_clip

    clip_dir = save_tiny_clip(tmp_path / "clip")
    names = sorted(TEXTS)
    model = CLIPModel.from_pretrained(clip_dir).eval()
    metric = CLIPScore(model_name_or_path=lambda: (Transformers4Features(model),
                                                    CLIPProcessor.from_pretrained(clip_dir)))
    images = [torch.from_numpy(np.array(Image.open(folders[0] / f"{n}.png"))).permute(2, 0, 1) for n in names]
    metric.update(images, [TEXTS[n] for n in names])
    theirs = float(metric.compute())
    per_item = []  # one pair at a time: max(100 * cos, 0)
    for image, name in zip(images, names):
        metric.reset()
        metric.update([image], [TEXTS[name]])
        per_item.append(float(metric.compute()))

    options = {"model": str(clip_dir), "device": "cpu"}
    result = score_folders(*folders, registry=_registry(), metrics=["clip-score", "clip-t"],
                           metric_options={"clip-score": options, "clip-t": options}, texts=TEXTS)
    ours = result.scores["all"]
    assert ours["clip-score"] == pytest.approx(theirs, rel=1e-4, abs=1e-4)
    scores = [row["value"] for row in result.items if row["metric"] == "clip-score"]
    np.testing.assert_allclose(np.maximum(scores, 0), per_item, rtol=1e-4, atol=1e-4)
    assert any(v > 1 for v in per_item)  # not all clamped to 0: the comparison has teeth
    cosines = [row["value"] for row in result.items if row["metric"] == "clip-t"]
    np.testing.assert_allclose(scores, 100 * np.asarray(cosines), rtol=1e-9)
    assert ours["clip-t"] == pytest.approx(np.mean(cosines))
    assert "torchmetrics 1.9.0" in result.sources["clip-score"]["matches"]
    assert "CLIP" in result.sources["clip-t"]["network"]


# --- FID / KID ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory) -> Path:
    """FID's InceptionV3 with random weights, saved as a state dict (torch-fidelity's format)."""
    require("torchmetrics")
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

    torch.manual_seed(0)
    # the constructor always loads weights (downloading when given no path): build it empty
    with mock.patch.object(tf_inception, "load_state_dict_from_url", return_value={}), \
            mock.patch.object(tf_inception.FeatureExtractorInceptionV3, "load_state_dict"):
        net = tf_inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("inception") / "weights-inception-random.pth"
    torch.save(net.state_dict(), path)
    return path


FEATURE = 192  # a pooled layer torchmetrics offers; 2048 runs the same code, only longer


def test_fid_and_kid_equal_torchmetrics_and_clean_fid(folders, inception_weights):
    require("clean-fid")
    from cleanfid import fid as cleanfid
    from torchmetrics.image.fid import FrechetInceptionDistance, NoTrainInceptionV3
    from torchmetrics.image.kid import KernelInceptionDistance

    options = {"weights": str(inception_weights), "feature": FEATURE, "device": "cpu"}
    result = score_folders(*folders, registry=_registry(), metrics=["fid", "kid"],
                           metric_options={"fid": options, "kid": options})
    ours = result.scores["all"]

    def batch(folder):
        return torch.stack([torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1)
                            for p in sorted(folder.iterdir())])

    network = NoTrainInceptionV3("inception-v3-compat", [str(FEATURE)], str(inception_weights))
    fid = FrechetInceptionDistance(feature=FEATURE, feature_extractor_weights_path=str(inception_weights))
    kid = KernelInceptionDistance(feature=network, subsets=3, subset_size=4)  # it takes no weights path
    for metric in (fid, kid):
        metric.update(batch(folders[1]), real=True)
        metric.update(batch(folders[0]), real=False)
    assert ours["fid"] == pytest.approx(float(fid.compute()), rel=1e-4)
    assert ours["kid"] == pytest.approx(float(kid.compute()[0]), rel=1e-3, abs=1e-6)

    features = {}
    for side, folder in zip(("gen", "ref"), folders):  # clean-fid feeds float 0..255: same pixels
        features[side] = cleanfid.get_folder_features(
            str(folder), model=lambda x: network(x.round().clamp(0, 255).to(torch.uint8)), num_workers=0,
            batch_size=4, device=torch.device("cpu"), mode="clean", verbose=False)
    assert ours["fid"] == pytest.approx(cleanfid.fid_from_feats(features["gen"], features["ref"]), rel=1e-4)
    np.random.seed(0)  # clean-fid draws its subsets with numpy's global generator
    assert ours["kid"] == pytest.approx(cleanfid.kernel_distance(features["gen"], features["ref"]),
                                        rel=1e-3, abs=1e-6)
    assert ours["fid"] > 0.05 and ours["kid"] > 0.0  # the sets do differ
    assert "clean-fid 0.1.35" in result.sources["fid"]["matches"]
    assert "InceptionV3" in result.sources["kid"]["network"]


def test_fid_kid_need_two_images_a_side_and_name_missing_weights(folders, tmp_path):
    from codi2.errors import ComponentLoadError, MediaError

    registry = _registry()
    with pytest.raises(ComponentLoadError, match="nowhere.pth.*Download"):
        plugin.build_metric(registry, "fid", {"weights": str(tmp_path / "nowhere.pth")})
    torch.save({"model": "not tensors"}, tmp_path / "odd.pth")
    with pytest.raises(ComponentLoadError, match="odd.pth"):
        plugin.build_metric(registry, "kid", {"weights": str(tmp_path / "odd.pth")})
    image = load_media(folders[0] / "0.png", "image")
    from codi2.evaluation.distribution import FIDMetric

    class Embedder:
        name = "fake"

        def embed_images(self, items):
            return np.zeros((len(items), 3))

    with pytest.raises(MediaError, match="at least 2 reference"):
        FIDMetric(Embedder()).score([image, image], [image])
