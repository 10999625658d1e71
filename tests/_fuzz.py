"""Shared pieces of the fuzz suite: seed files, byte mutations and the bound every target
runs under (a codi2 error or a result, within a time and memory budget)."""

from __future__ import annotations

import functools
import io
import resource
import struct
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st

from codi2.errors import Codi2Error

#: per example: wall seconds, and how far the process's resident memory peaks above where it
#: stood when the example started
SECONDS = 10.0
PEAK_GROWTH = 1536 * 2**20


def scaled(n: int) -> int:
    """``n`` examples under the "ci" profile (200), proportionally more under "long"."""
    return max(1, n * settings.default.max_examples // 200)


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> bool:
    """Lower the kernel's peak-RSS mark to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_growth(call: Callable[[], Any]) -> tuple[Any, int]:
    """``call()``'s outcome (result or codi2 error) and how far RSS peaked above its start.
    Measured per example, so memory that other tests used before does not count (a run-wide
    baseline made the bound depend on test order). Without a resettable mark the growth of
    the process's peak is used: a lower bound."""
    if _reset_peak():
        start, peak = _status_bytes("VmRSS"), functools.partial(_status_bytes, "VmHWM")
    else:
        start, peak = _process_peak(), _process_peak
    try:
        result = call()
    except Codi2Error as exc:
        result = exc
    return result, peak() - start


def _process_peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def bounded(call: Callable[[], Any]) -> Any:
    """Run one example: it returns, or raises a codi2 error; anything else fails the test
    (hypothesis then shrinks it), as does taking over SECONDS or making the resident memory
    peak more than PEAK_GROWTH above where it stood before the example."""
    start = time.monotonic()
    result, growth = _peak_growth(call)
    elapsed = time.monotonic() - start
    if isinstance(result, Codi2Error):
        assert str(result).strip(), "a codi2 error must say what went wrong"
    assert elapsed < SECONDS, f"took {elapsed:.1f} s"
    assert growth < PEAK_GROWTH, f"resident memory peaked {growth / 2**20:.0f} MiB above its start"
    return result


@st.composite
def mutated(draw: Any, seed: bytes, keep_head: int = 0) -> bytes:
    """``seed`` with a few random edits: overwritten bytes and 32-bit fields, inserts, cuts and
    a truncation. ``keep_head`` leading bytes (a magic number) are left alone more often."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["byte", "word", "insert", "delete", "truncate"]))
        lo = keep_head if draw(st.booleans()) else 0
        if len(data) <= lo + 4:
            break
        at = draw(st.integers(lo, len(data) - 4))
        if op == "byte":
            data[at] = draw(st.integers(0, 255))
        elif op == "word":  # headers are full of sizes and counts: try extreme ones
            value = draw(st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x10000, 3_000_001]) | st.integers(0, 2**32 - 1))
            data[at : at + 4] = struct.pack("<I", value)
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        else:
            del data[at:]
    return bytes(data)


def png_seed() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def wav_seed() -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(np.arange(1600) / 5)).astype(np.float32), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def gif_seed() -> bytes:
    from PIL import Image

    rng = np.random.default_rng(1)
    frames = [Image.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)).quantize(8) for _ in range(4)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def mp4_seed() -> bytes:
    from codi2.core.media import media_to_bytes
    from codi2.core.types import Media

    rng = np.random.default_rng(2)
    return media_to_bytes(Media("video", rng.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8), fps=8.0), "mp4")


def wav_header(rate: int, channels: int, bits: int, data_size: int, payload: bytes, fmt_tag: int = 1) -> bytes:
    """A RIFF/WAVE file whose fmt chunk says whatever it is told."""
    block = max(1, channels * bits // 8) & 0xFFFF
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, (rate * block) & 0xFFFFFFFF, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", data_size) + payload
    return b"RIFF" + struct.pack("<I", len(body) & 0xFFFFFFFF) + body
