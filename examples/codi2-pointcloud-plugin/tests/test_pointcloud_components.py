"""The plugin's own tests: codi2's contract kit on its encoder and decoder, and its file format."""

from __future__ import annotations

import codi2_pointcloud
import numpy as np
import pytest
from codi2_pointcloud.modality import encode_ply, load_pointcloud

from codi2.core.types import Media
from codi2.errors import MediaDecodeError
from codi2.registry import Registry
from codi2.testing import check_decoder, check_encoder


@pytest.fixture
def registry() -> Registry:
    reg = Registry(strict=True)
    reg.register_plugin(codi2_pointcloud, name="pointcloud")
    return reg


def cloud(seed: int = 0, n: int = 50) -> Media:
    return Media("pointcloud", np.random.default_rng(seed).normal(size=(n, 3)).astype(np.float32), name=f"cloud{seed}")


def test_contract_kit(registry):
    check_encoder(registry.load("encoder", "pointcloud-encoder"), {"pointcloud": cloud()})
    check_decoder(registry.load("decoder", {"plugin": "pointcloud-decoder", "options": {"points": 8}}), [cloud(1), cloud(2)])


def test_ply_round_trip_and_errors(tmp_path):
    item = cloud(3)
    path = tmp_path / "c.ply"
    path.write_bytes(encode_ply(item))
    np.testing.assert_allclose(load_pointcloud(path).data, item.data, rtol=1e-5, atol=1e-6)
    with pytest.raises(MediaDecodeError, match=r"media 'c.ply': a point cloud is an \[N, 3\] array"):
        load_pointcloud(np.zeros((4, 2)), name="c.ply")


def test_encoder_ignores_point_order(registry):
    encoder = registry.load("encoder", "pointcloud-encoder")
    item = cloud(4)
    shuffled = Media("pointcloud", item.data[np.random.default_rng(0).permutation(len(item.data))])
    a, b = encoder.encode([item, shuffled], "pointcloud")
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
