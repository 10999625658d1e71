"""The feature cache at a million items: files on disk, lookup time and peak RSS, against the
cache before issue 18 (one safetensors file per item).

Each cache runs in a fresh child process (``--child sharded|per-file``) that writes ``N`` tiny
items (``--dim`` float32 values each, keys shaped like the model's:
``encoder/image/<sha256>``), then times ``--lookups`` random hits, one ``get`` at a time, and
reports the files and bytes on disk, and its peak RSS (``ru_maxrss``) above its RSS before the
first write, also at ``N / 10`` items (so flat memory shows as the same figure at both).

The per-file cache writes a file (plus a temporary file and a rename) per item: at a million
items that is a million files and, on a loaded machine, a long time. It runs ``--old-items``
(default 50,000); its figures at ``N`` are extrapolated (files and bytes linearly, which is
what one file per item means; the lookup time is measured at ``--old-items`` only, which
flatters it: a directory of a million entries is slower to search). The report says which
figures are measured and which extrapolated.

Figures: ``files_ratio`` (per-file / sharded files at N), ``lookup_ratio`` (per-file / sharded
median lookup), and each side's write rate, lookup time, disk use and peak RSS growth.

    python benchmarks/feature_cache_scale.py [--json] [--items 1000000] [--old-items 50000] [--lookups 10000]
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # first: it sets the offline environment before any model library loads


class PerFileCache:
    """The cache as it was before issue 18 (codi2.training.cache until then), for comparison:
    one safetensors file per key, named by the key's SHA-256, written to a temporary file and
    renamed into place; the key is checked from the file's metadata on read."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path_for(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        return self.root / digest[:2] / f"{digest}.safetensors"

    def get(self, key: str):
        from safetensors import safe_open

        path = self.path_for(key)
        if not path.is_file():
            return None
        with safe_open(str(path), framework="pt") as handle:
            if (handle.metadata() or {}).get("key") != key:
                return None
            return handle.get_tensor("features")

    def put(self, key: str, tensor) -> None:
        from safetensors.torch import save_file

        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem[:16]}.", suffix=".tmp")
        os.close(fd)
        save_file({"features": tensor.contiguous()}, tmp, metadata={"key": key})
        os.replace(tmp, path)

    def close(self) -> None:
        pass


def main(argv: list[str] | None = None) -> dict:
    parser = _common.base_parser(__doc__.splitlines()[0], repeats=1, warmup=0)
    parser.add_argument("--items", type=int, default=1_000_000, help="items in the sharded cache (default 1,000,000)")
    parser.add_argument("--old-items", type=int, default=50_000, help="items in the per-file cache (default 50,000; extrapolated to --items)")
    parser.add_argument("--lookups", type=int, default=10_000, help="timed random hits per cache (default 10,000)")
    parser.add_argument("--dim", type=int, default=8, help="float32 values per item (default 8)")
    parser.add_argument("--child", choices=("sharded", "per-file"), default=None, help=_hidden())
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return {}

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        sides = {"sharded": _spawn("sharded", args.items, args, Path(tmp) / "sharded"),
                 "per-file": _spawn("per-file", args.old_items, args, Path(tmp) / "per-file")}
    new, old = sides["sharded"], sides["per-file"]
    scale = args.items / args.old_items
    report = _common.Report("feature_cache_scale")
    report.add("files_ratio", old["files"] * scale / new["files"], "x", note=f"files on disk at {args.items:,} items, per-file / sharded (per-file extrapolated)")
    report.add("lookup_ratio", old["lookup_us"] / new["lookup_us"], "x", note=f"median lookup, per-file at {args.old_items:,} items / sharded at {args.items:,}")
    report.add("sharded_files", new["files"], "", note=f"measured at {args.items:,} items")
    report.add("sharded_disk", new["disk_bytes"] / 2**20, "MiB", note="measured")
    report.add("sharded_lookup", new["lookup_us"], "us", note="median of one get(), measured")
    report.add("sharded_lookup_p99", new["lookup_p99_us"], "us")
    report.add("sharded_write_rate", new["writes_per_s"], "items/s")
    report.add("sharded_rss_growth", new["rss_growth"] / 2**20, "MiB", note="peak RSS above the RSS before writing, at N")
    report.add("sharded_rss_growth_at_tenth", new["rss_growth_at_tenth"] / 2**20, "MiB", note="the same at N / 10 (flat memory: about equal)")
    report.add("per_file_files", old["files"] * scale, "", note=f"extrapolated from {old['files']:,} files at {args.old_items:,} items")
    report.add("per_file_disk", old["disk_bytes"] * scale / 2**20, "MiB", note="extrapolated (allocated blocks)")
    report.add("per_file_lookup", old["lookup_us"], "us", note=f"measured at {args.old_items:,} items")
    report.add("per_file_write_rate", old["writes_per_s"], "items/s", note="measured")
    report.add("per_file_hours_to_write_n", args.items / old["writes_per_s"] / 3600, "h", note="extrapolated")
    report.add("per_file_rss_growth", old["rss_growth"] / 2**20, "MiB", note=f"measured at {args.old_items:,} items")
    report.details.update({"items": args.items, "old_items": args.old_items, "lookups": args.lookups, "dim": args.dim,
                           "sharded": new, "per_file": old})
    return report.emit(args.json)


def _hidden() -> str:
    import argparse

    return argparse.SUPPRESS


def _spawn(side: str, items: int, args, root: Path) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", side, "--items", str(items), "--old-items", str(items),
               "--lookups", str(args.lookups), "--dim", str(args.dim), "--workdir", str(root)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{side} child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def child(args) -> dict:
    import torch

    torch.set_num_threads(1)
    root = Path(args.workdir)
    root.mkdir(parents=True, exist_ok=True)
    if args.child == "sharded":
        from codi2.training.cache import FeatureCache

        cache = FeatureCache(root)
    else:
        cache = PerFileCache(root)

    def key(i: int) -> str:  # made on the fly: a list of a million keys would be the RSS measured
        return f"imagebind-huge/image/{hashlib.sha256(str(i).encode()).hexdigest()}"

    value = torch.arange(args.dim, dtype=torch.float32)
    cache.put("warm-up", value)  # imports and the first connection before the baseline
    before = _rss()
    started, tenth = time.perf_counter(), None
    for i in range(args.items):
        cache.put(key(i), value + i)
        if i + 1 == max(1, args.items // 10):
            tenth = _peak() - before
    cache.close()
    write_s = time.perf_counter() - started
    picks = random.Random(0).sample(range(args.items), min(args.lookups, args.items))
    times = []
    for i in picks:
        t = time.perf_counter()
        found = cache.get(key(i))
        times.append(time.perf_counter() - t)
        if found is None or float(found[0]) != float(i):
            raise AssertionError(f"{args.child}: item {i} read back wrong")
    times.sort()
    files = disk = 0
    for path in root.rglob("*"):
        if path.is_file():
            files += 1
            disk += path.stat().st_blocks * 512
    return {"items": args.items, "files": files, "disk_bytes": disk, "writes_per_s": args.items / write_s,
            "lookup_us": 1e6 * times[len(times) // 2], "lookup_p99_us": 1e6 * times[int(len(times) * 0.99)],
            "rss_growth": _peak() - before, "rss_growth_at_tenth": tenth}


if __name__ == "__main__":
    main()
