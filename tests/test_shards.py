"""Sharded streaming data: WebDataset tar and datasets Arrow shards, per-rank and per-worker
streams, exact mid-epoch resume, bad samples named by shard and key, and the convert command."""

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from test_training import make_registry, run_config, totals, write_dataset

from codi2.errors import ConfigError, DatasetError
from codi2.training.shards import INDEX_FILE, convert, find_shards, read_shard, to_sample
from codi2.training.stream import StreamPlan, replay
from codi2.training.trainer import train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def jsonl(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("jsonl"), n=10)


@pytest.mark.parametrize(("kind", "workers"), [("webdataset", 2), ("arrow", 0), ("parquet", 1)])
def test_sharded_training_resumes_mid_epoch_on_the_same_loss_curve(tmp_path, jsonl, kind, workers):
    report = convert(jsonl, tmp_path / "shards", kind=kind, shard_size=3)
    assert report.samples == 10 and report.shards == 4
    settings = {"num_workers": workers, "max_steps": 12, "save_every": 4}
    straight = train(run_config(tmp_path / "a", tmp_path / "shards", **settings), make_registry())
    first = train(run_config(tmp_path / "b", tmp_path / "shards", **settings), make_registry(), stop_after=7)
    resumed = train(run_config(tmp_path / "b", tmp_path / "shards", **settings), make_registry(), resume="auto")
    assert [h["step"] for h in resumed.history] == list(range(8, 13))
    assert straight.history[7]["epoch"] == 1 and straight.history[6]["epoch"] == 1, "the resume is mid-epoch"
    np.testing.assert_allclose(totals(first.history + resumed.history), totals(straight.history), rtol=1e-6, atol=1e-7)
    assert np.mean(totals(straight.history)[-3:, 3]) < np.mean(totals(straight.history)[:3, 3]), "it learns"


def test_shards_hold_the_jsonl_samples_with_their_media_inside(tmp_path, jsonl):
    convert(jsonl, tmp_path / "wds", shard_size=4)
    convert(jsonl, tmp_path / "arrow", kind="arrow", shard_size=4)
    convert(jsonl, tmp_path / "parquet", kind="parquet", shard_size=4)
    index = json.loads((tmp_path / "wds" / INDEX_FILE).read_text())
    assert [s["samples"] for s in index["shards"]] == [4, 4, 2]
    for folder in ("wds", "arrow", "parquet"):
        shards = find_shards([tmp_path / folder])
        assert sum(s.samples for s in shards) == 10
        samples = [to_sample(shard, *raw) for shard in shards for raw in read_shard(shard)]
        assert [s.id for s in samples] == list(range(10))
        image = samples[3].messages[0]["content"][1]
        assert image["type"] == "image" and image["data"] == (jsonl.parent / "media" / "in3.png").read_bytes()
    for folder in ("wds", "arrow", "parquet"):
        skipped_from = list(read_shard(find_shards([tmp_path / folder])[1], skip=2))
        assert [i for i, *_ in skipped_from] == list(range(2, find_shards([tmp_path / folder])[1].samples)), folder
        assert json.loads(skipped_from[0][2])["id"] == json.loads(next(read_shard(find_shards([tmp_path / folder])[1]))[2])["id"] + 2


def test_each_rank_and_worker_reads_its_own_shards_and_every_rank_runs_the_same_number_of_batches():
    from codi2.training.shards import Shard

    shards = tuple(Shard(f"s{i}", f"s{i}.tar", 3 + i % 4, "webdataset") for i in range(12))
    plan = StreamPlan(shards, seed=1, shuffle=True, world_size=2, workers=3, batch_size=2)
    for epoch in (0, 1):
        read = [s.name for r in range(2) for w in range(3) for s in plan.worker_shards(epoch, r, w)]
        assert sorted(read) == sorted(s.name for s in shards), "every shard once, by exactly one worker"
        assert plan.epoch_batches(epoch) <= min(sum(plan.worker_batches(epoch, r)) for r in range(2))
    assert plan.order(0) != plan.order(1), "shards are reshuffled each epoch"
    # replaying a round-robin: workers with 3, 1 and 2 batches hand out w0 w1 w2 w0 w2 w0
    assert replay([3, 1, 2], 0) == ([0, 0, 0], 0)
    assert replay([3, 1, 2], 4) == ([2, 1, 1], 1)
    assert replay([3, 1, 2], 5) == ([2, 1, 2], 0)
    with pytest.raises(ValueError):
        replay([1, 1], 3)


def _tar(path, samples):
    with tarfile.open(path, "w") as tar:
        for name, data in samples:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_bad_samples_are_named_by_shard_and_key_and_skipped_or_raised(tmp_path, jsonl):
    convert(jsonl, tmp_path / "shards", shard_size=5)
    good = json.loads(next(read_shard(find_shards([tmp_path / "shards"])[0]))[2])
    png = (jsonl.parent / "media" / "in0.png").read_bytes()
    _tar(tmp_path / "shards" / "bad.tar", [
        ("k1.json", b"{not json"),
        ("k2.json", json.dumps(good).encode()),  # its media members are missing
        ("k3.json", json.dumps(good).encode()), ("k3.m0.png", png), ("k3.m1.png", b"not a png"),
    ])
    index = json.loads((tmp_path / "shards" / INDEX_FILE).read_text())
    index["shards"].append({"url": "bad.tar", "samples": 3})
    (tmp_path / "shards" / INDEX_FILE).write_text(json.dumps(index))
    config = run_config(tmp_path, tmp_path / "shards", max_steps=8, batch_size=2)
    config["data"]["shuffle"] = False
    from codi2.training.shards import validate_shards

    report = validate_shards([tmp_path / "shards"], decode=True)
    assert report.samples == 10 and [(p.file, p.field) for p in report.problems] == [("shards/bad.tar", f"key 'k{i}'") for i in (1, 2, 3)]
    assert "not a readable image" in report.problems[2].message
    with pytest.raises(DatasetError, match=r"shards/bad.tar: key 'k1': invalid JSON"):
        train(config, make_registry())
    config["data"]["on_error"] = "skip"
    config["output_dir"] = str(tmp_path / "skip")
    result = train(config, make_registry())
    assert len(result.skipped) == 3 and result.step == 8
    assert "shards/bad.tar: key 'k2': messages[0].content[1].path: no member 'm0.png'" in result.skipped[1]
    assert result.skipped[2].startswith("shards/bad.tar: key 'k3' (id 0): media <image>: not a readable image")


def test_shard_errors_are_clear(tmp_path, jsonl):
    with pytest.raises(DatasetError, match="holds neither shards.json"):
        find_shards([tmp_path])
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / INDEX_FILE).write_text('{"format": "other"}')
    with pytest.raises(DatasetError, match="not a codi2 shard index"):
        find_shards([tmp_path / "x"])
    convert(jsonl, tmp_path / "two", shard_size=5)
    with pytest.raises(DatasetError, match="2 shard.s. for 1 process.es. x 3 worker"):
        train(run_config(tmp_path, tmp_path / "two", num_workers=3), make_registry())
    mixed = run_config(tmp_path, jsonl)
    mixed["data"]["train"] = [str(jsonl), str(tmp_path / "two")]
    with pytest.raises(ConfigError, match="mixes JSONL files and shards"):
        train(mixed, make_registry())
    bad = jsonl.parent / "with-a-bad-line.jsonl"  # beside the media the lines name
    bad.write_text(jsonl.read_text() + "{oops\n")
    with pytest.raises(DatasetError, match="cannot convert"):
        convert(bad, tmp_path / "out")
    assert convert(bad, tmp_path / "out", on_error="skip").skipped[0].startswith(str(bad))


def test_codi2_data_convert_and_build_write_shards(tmp_path, jsonl, capsys):
    from codi2.cli import main

    assert main(["data", "convert", str(jsonl), "--out", str(tmp_path / "wds"), "--shard-size", "4"]) == 0
    assert "wrote 10 sample(s) in 3 webdataset shard(s)" in capsys.readouterr().out
    assert main(["data", "validate", str(tmp_path / "wds")]) == 0
    assert "10 valid sample(s)" in capsys.readouterr().out
    assert main(["data", "convert", str(jsonl), "--out", str(tmp_path / "arrow"), "--format", "arrow"]) == 0
    assert sum(s.samples for s in find_shards([tmp_path / "arrow"])) == 10
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    from PIL import Image

    rows = []
    for i in range(3):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(pictures / f"p{i}.png")
        rows.append(json.dumps({"path": f"p{i}.png", "caption": f"a red square number {i}"}))
    (pictures / "manifest.jsonl").write_text("\n".join(rows) + "\n")
    code = main(["data", "build", "paired", "--input", str(pictures / "manifest.jsonl"), "--out", str(tmp_path / "built"),
                 "--format", "webdataset", "--shard-size", "2"])
    assert code == 0, capsys.readouterr()
    assert sum(s.samples for s in find_shards([tmp_path / "built" / "shards"])) >= 3
