"""The feature cache at scale: append-only shards (not a file per item), round trips of every
dtype, corruption detected and recomputed, shard roll-over, and several writing processes."""

import multiprocessing

import pytest
import torch

from codi2.training import cache as cache_module
from codi2.training.cache import FeatureCache


def test_many_items_live_in_a_few_files_and_read_back_exactly(tmp_path):
    cache = FeatureCache(tmp_path)
    for i in range(3000):
        cache.put(f"enc/image/{i}", torch.full((1, 4), float(i)))
    cache.close()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) <= 4, f"index (+ WAL files) and one shard, not one file per item: {files}"
    again = FeatureCache(tmp_path)
    assert len(again) == 3000
    assert all(again.get(f"enc/image/{i}")[0, 0].item() == i for i in range(0, 3000, 97))
    assert again.get("enc/image/missing") is None and again.stats.misses == 1


@pytest.mark.parametrize("tensor", [torch.randn(2, 3).to(torch.bfloat16), torch.arange(6).reshape(3, 2), torch.tensor(1.5),
                                    torch.zeros(0, 8), torch.tensor([True, False])])
def test_every_dtype_and_shape_round_trips(tmp_path, tensor):
    cache = FeatureCache(tmp_path)
    cache.put("k", tensor)
    back = cache.get("k")
    assert back.dtype == tensor.dtype and back.shape == tensor.shape and torch.equal(back, tensor)


def test_corrupt_entries_are_misses_and_get_rewritten(tmp_path):
    cache = FeatureCache(tmp_path)
    for i in range(3):
        cache.put(f"k{i}", torch.ones(4) * i)
    cache.flush()
    (shard,) = (tmp_path / "shards").iterdir()
    size = shard.stat().st_size
    with open(shard, "r+b") as handle:  # cut the last record short
        handle.truncate(size - 5)
    assert cache.get("k2") is None and cache.stats.corrupt == 1
    assert cache.get("k2") is None and cache.stats.corrupt == 1, "a corrupt entry leaves the index: a plain miss next time"
    assert torch.equal(cache.get("k1"), torch.ones(4)), "the other records are intact"
    cache.put("k2", torch.full((4,), 7.0))
    assert torch.equal(cache.get("k2"), torch.full((4,), 7.0))
    cache.close()
    shard.unlink()  # every shard gone: each entry is a corrupt miss, nothing raises
    again = FeatureCache(tmp_path)
    assert again.get("k0") is None and again.stats.corrupt == 1


def test_a_writer_rolls_over_to_a_new_shard(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "SHARD_BYTES", 600)
    cache = FeatureCache(tmp_path)
    for i in range(20):
        cache.put(f"k{i}", torch.full((8,), float(i)))
    assert len(list((tmp_path / "shards").iterdir())) >= 4
    assert all(cache.get(f"k{i}")[0].item() == i for i in range(20))


def _writer(root, seed, done):
    cache = FeatureCache(root)
    ok = True
    for i in range(300):
        key = f"enc/image/{(i * 7 + seed) % 500}"
        cache.put(key, torch.full((3,), float((i * 7 + seed) % 500)))
        found = cache.get(key)
        ok &= found is not None and bool((found == (i * 7 + seed) % 500).all())
    done.put(ok)  # no flush(): the exit hook publishes the last rows


def test_processes_writing_at_once_lose_nothing(tmp_path):
    context = multiprocessing.get_context("fork")
    done = context.Queue()
    FeatureCache(tmp_path).put("parent", torch.ones(1))  # a connection exists before the fork
    workers = [context.Process(target=_writer, args=(tmp_path, seed, done)) for seed in range(4)]
    for w in workers:
        w.start()
    assert all(done.get(timeout=120) for _ in workers)
    for w in workers:
        w.join(timeout=60)
    assert all(w.exitcode == 0 for w in workers)
    cache = FeatureCache(tmp_path)
    keys = {f"enc/image/{(i * 7 + s) % 500}" for s in range(4) for i in range(300)}
    assert len(cache) == len(keys) + 1
    assert all(cache.get(k)[0].item() == float(k.rsplit("/", 1)[1]) for k in keys) and cache.stats.corrupt == 0
    assert len(list((tmp_path / "shards").iterdir())) == 5, "one shard per writing process (4 children, the parent)"
