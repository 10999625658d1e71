"""A modality codi2 has never heard of, from a third-party package: examples/codi2-pointcloud-plugin.

The package is installed the way an installer leaves it (the module plus a ``*.dist-info``
with the entry points of its pyproject) into a temporary folder, and used through public API
only: codi2's registry finds it, a tiny model that reads and writes point clouds trains a few
steps on a JSONL dataset, generates through ``model.generate``, ``codi2 generate`` and the
HTTP server, is saved and loaded back, and bad PLY files fail with one clear line.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_registry import install_example

import codi2
from codi2.core.types import Media
from codi2.errors import MediaDecodeError, MediaLimitError, UnknownModalityError
from codi2.registry import Registry

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "examples" / "codi2-pointcloud-plugin"
POINTS = 16


def ply(points: np.ndarray, *, extra: str = "") -> bytes:
    """An ASCII PLY file, written here from the format's description (not by the plugin)."""
    head = f"ply\nformat ascii 1.0\nelement vertex {len(points)}\nproperty float x\nproperty float y\nproperty float z\n{extra}end_header\n"
    return (head + "".join(f"{x} {y} {z}\n" for x, y, z in points)).encode()


def ring(n: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    angle = np.sort(rng.uniform(0, 2 * np.pi, n))
    return np.stack([np.cos(angle), np.sin(angle), 0.1 * rng.standard_normal(n)], 1).round(4)


def run_cli(args: list[str], site: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODI2_")}
    env.update(PYTHONPATH=os.pathsep.join([str(site), str(REPO)]), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "codi2", *args], capture_output=True, text=True, env=env, timeout=300, cwd=REPO)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    # what `pip install --target` leaves: the package and a dist-info with its entry points
    root = install_example(tmp_path_factory.mktemp("site"), PLUGIN, "codi2_pointcloud")
    sys.path.insert(0, str(root))
    old = os.environ.pop("CODI2_NO_PLUGINS", None)
    yield root
    sys.path.remove(str(root))
    for name in [m for m in sys.modules if m.startswith("codi2_pointcloud")]:
        del sys.modules[name]
    if old is not None:
        os.environ["CODI2_NO_PLUGINS"] = old


@pytest.fixture(scope="module")
def registry(site) -> Registry:
    return Registry.create(entry_points=True, strict=True)


@pytest.fixture(scope="module")
def trained(site, registry, tmp_path_factory):
    """A tiny pointcloud-in, pointcloud-out model trained with codi2's trainer on a JSONL set."""
    import torch

    from codi2.training import train

    root = tmp_path_factory.mktemp("pc")
    (root / "media").mkdir()
    lines = []
    for k in range(12):
        (root / "media" / f"in{k}.ply").write_bytes(ply(ring(seed=k)))
        (root / "media" / f"out{k}.ply").write_bytes(ply(ring(seed=100 + k) * [1.5, 1.5, 1]))
        lines.append({"messages": [
            {"role": "user", "content": [{"type": "text", "text": "grow "}, {"type": "pointcloud", "path": f"media/in{k}.ply"}]},
            {"role": "assistant", "content": [{"type": "pointcloud", "path": f"media/out{k}.ply"}, {"type": "text", "text": " done"}]}]})  # fmt: skip
    (root / "train.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    model = {
        "encoders": [{"plugin": "pointcloud-encoder"}],
        "llm": {"plugin": "tiny-llm", "options": {"hidden_size": 32}},
        "decoders": {"pointcloud": {"plugin": "pointcloud-decoder", "options": {"points": POINTS}}},
        "generation": {"max_new_tokens": 12},
        "max_input_tokens": 400,
    }
    config = {"model": model, "data": {"train": str(root / "train.jsonl")}, "stage": "custom",
              "trainable": {"llm": "full", "decoders": "full"}, "optimizer": {"lr": 1e-2}, "batch_size": 4,
              "max_steps": 60, "log_every": 10, "output_dir": str(root / "run"), "progress": False, "seed": 0}  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(config, registry)
    finally:
        torch.set_num_threads(threads)
    return {"root": root, "result": result, "dir": result.final_dir}


def test_the_plugin_adds_a_modality_with_an_encoder_and_a_decoder(registry):
    info = next(p for p in registry.plugins() if p.name == "pointcloud")
    assert (info.distribution, info.error) == ("codi2-pointcloud", None)
    assert info.components == {"modality": ["pointcloud"], "encoder": ["pointcloud-encoder"], "decoder": ["pointcloud-decoder"]}
    spec = registry.modalities()["pointcloud"]
    assert (spec.suffix, spec.mime_type, spec.display) == (".ply", "application/x-ply", "download")


def test_its_components_pass_the_contract_kit(registry):
    from codi2.testing import check_decoder, check_encoder

    clouds = [registry.modalities().load(ring(seed=s).astype(np.float32), "pointcloud", name=f"c{s}") for s in (1, 2)]
    check_encoder(registry.load("encoder", "pointcloud-encoder"), {"pointcloud": clouds[0]})
    check_decoder(registry.load("decoder", {"plugin": "pointcloud-decoder", "options": {"points": 8}}), clouds)


def test_listed_by_codi2_plugins(site):
    out = run_cli(["plugins", "--json"], site)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["components"]["modality"]["pointcloud"]["plugin"] == "pointcloud"
    assert data["components"]["decoder"]["pointcloud-decoder"]["options"]["properties"]["points"]["default"] == 32


@pytest.mark.parametrize("content, error, message", [
    (b"ply\nformat ascii 1.0\nelement vertex 10\nproperty float x\nproperty float y\nproperty float z\nend_header\n0 0 0\n",
     MediaDecodeError, "declares 10 vertices but holds 1"),
    (b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\nproperty float y\nproperty float z\nend_header\n",
     MediaDecodeError, "only ASCII PLY is read"),
    (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nend_header\n1 2\n",
     MediaDecodeError, "lack property z"),
    (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nproperty float z\nend_header\n1 nan 2\n",
     MediaDecodeError, "must be finite"),
    (b"ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\nproperty float z\nend_header\n",
     MediaLimitError, "empty point cloud"),
    (b"\x00\x01 not a ply at all", MediaDecodeError, "not a PLY file"),
])  # fmt: skip
def test_bad_files_fail_clearly(registry, tmp_path, content, error, message):
    path = tmp_path / "bad.ply"
    path.write_bytes(content)
    with pytest.raises(error, match=message) as caught:
        registry.modalities().load(path)
    assert str(caught.value).startswith("media 'bad.ply': ") and "\n" not in str(caught.value)


def test_trains_generates_saves_and_reloads(trained, registry, tmp_path):
    history = trained["result"].history
    assert np.mean([h["total"] for h in history[-5:]]) < 0.5 * np.mean([h["total"] for h in history[:5]])
    model = codi2.load(trained["dir"], registry=registry)
    cloud = tmp_path / "cloud.ply"
    cloud.write_bytes(ply(ring(seed=7)))
    answer = model.generate("grow {p}", media={"p": cloud}, seed=0)
    assert [m.modality for m in answer.media] == ["pointcloud"], answer.text
    assert answer.media[0].data.shape == (POINTS, 3) and np.isfinite(answer.media[0].data).all()
    as_media = model.generate("grow {p}", media={"p": Media("pointcloud", ring(seed=7).astype(np.float32))}, seed=0)
    np.testing.assert_array_equal(as_media.media[0].data, answer.media[0].data)  # a Media in hand reads the same
    (path,) = answer.save(tmp_path / "out")
    assert path.name == "output0.ply"
    again = registry.modalities().load(path)
    np.testing.assert_allclose(again.data, answer.media[0].data, atol=1e-4)

    chat = model.chat()
    chat.ask("grow {p}", {"p": cloud}, seed=0)
    saved = json.loads(chat.save(tmp_path / "chat").read_text())["messages"]
    assert [p["path"] for m in saved for p in m["content"] if p["type"] == "pointcloud"] == ["media0.ply", "media1.ply"]

    model.save_pretrained(tmp_path / "saved")
    reloaded = codi2.load(tmp_path / "saved", registry=registry)
    assert reloaded.config.marker_modalities()[-1] == "pointcloud"
    twin = reloaded.generate("grow {p}", media={"p": cloud}, seed=0)
    np.testing.assert_array_equal(twin.media[0].data, answer.media[0].data)

    with pytest.raises(MediaDecodeError, match=r"'p' \(bad.ply\)|'p'.*not a PLY file"):
        (tmp_path / "bad.ply").write_bytes(b"nope")
        model.generate("grow {p}", media={"p": tmp_path / "bad.ply"})
    with pytest.raises(UnknownModalityError, match="unknown part type .mesh.; known: text, image, audio, video, depth, thermal, imu, pointcloud"):
        model.generate([{"role": "user", "content": [{"type": "mesh", "data": b"x"}]}])


def test_codi2_generate(trained, site, tmp_path):
    cloud = tmp_path / "scan.dat"  # a suffix no modality claims: say which with MODALITY:PATH
    cloud.write_bytes(ply(ring(seed=3)))
    out = run_cli(["generate", "grow {p}", "--media", f"p=pointcloud:{cloud}", "--model", str(trained["dir"]),
                   "--out", str(tmp_path / "out"), "--seed", "0", "--json"], site)  # fmt: skip
    assert out.returncode == 0, out.stderr
    media = json.loads(out.stdout)["media"]
    assert [(m["type"], m["mime_type"], m["points"]) for m in media] == [("pointcloud", "application/x-ply", POINTS)]
    assert Path(media[0]["path"]).read_bytes().startswith(b"ply\n")

    (tmp_path / "bad.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nend_header\n")
    bad = run_cli(["generate", "grow {p}", "--media", f"p={tmp_path / 'bad.ply'}", "--model", str(trained["dir"])], site)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: media 'p' (bad.ply): PLY vertices lack properties y, z"


def test_codi2_data_validate(trained, site, tmp_path):
    data = trained["root"] / "train.jsonl"
    good = run_cli(["data", "validate", str(data), "--decode", "--json"], site)
    assert good.returncode == 0, good.stdout + good.stderr
    assert json.loads(good.stdout)["media"] == {"pointcloud in": 12, "pointcloud out": 12}
    (tmp_path / "bad.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\nend_header\n1 2 3\n")
    record = {"messages": [{"role": "user", "content": [{"type": "pointcloud", "path": "bad.ply"}]},
                           {"role": "assistant", "content": "ok"}]}  # fmt: skip
    (tmp_path / "bad.jsonl").write_text(json.dumps(record) + "\n")
    bad = run_cli(["data", "validate", str(tmp_path / "bad.jsonl"), "--decode", "--json"], site)
    (problem,) = json.loads(bad.stdout)["problems"]
    assert bad.returncode == 1 and problem["line"] == 1 and "declares 2 vertices but holds 1" in problem["message"]


def test_http_server(trained, registry):
    from fastapi.testclient import TestClient

    from codi2.server import create_app

    model = codi2.load(trained["dir"], registry=registry)
    data = base64.b64encode(ply(ring(seed=5))).decode()
    with TestClient(create_app(model, registry=registry)) as client:
        info = client.get("/v1/models").json()["data"][0]
        assert info["modalities"]["pointcloud"] == {"display": "download", "mime_types": ["application/x-ply", "model/ply"], "suffixes": [".ply"]}
        body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "grow "}, {"type": "pointcloud", "data": data}]}],
                "seed": 0, "media_format": "base64"}  # fmt: skip
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        message = response.json()["choices"][0]["message"]
        (part,) = message["media"]
        assert (part["modality"], part["mime_type"], part["display"], part["points"]) == ("pointcloud", "application/x-ply", "download", POINTS)
        assert base64.b64decode(part["data"]).startswith(b"ply\n") and part["preview"].startswith("data:image/png;base64,")
        assert f"[{part['name']}.ply](data:application/x-ply;base64,{part['data']})" in message["content"]  # a download link

        form = client.post("/v1/chat/completions/multipart", data={"prompt": "grow {p}", "seed": "0"},
                           files={"p": ("cloud.ply", base64.b64decode(data), "application/octet-stream")})  # fmt: skip
        assert form.status_code == 200, form.text
        (part,) = form.json()["choices"][0]["message"]["media"]
        session = client.get(f"/v1/sessions/{form.json()['session_id']}").json()
        assert [p["type"] for m in session["messages"] for p in m["content"] if p["type"] != "text"] == ["pointcloud", "pointcloud"]
        fetched = client.get(part["url"])
        assert fetched.headers["content-type"].startswith("application/x-ply") and fetched.content.startswith(b"ply\n")

        bad = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": [
            {"type": "pointcloud", "data": base64.b64encode(b"ply\nformat ascii 1.0\nend_header\n").decode()}]}]})  # fmt: skip
        assert bad.status_code == 400 and "no 'element vertex N' line" in bad.json()["error"]["message"]
