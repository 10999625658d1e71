"""Time and peak memory of loading crafted hostile media (issue 13's attacks), each in a fresh
process: WAV headers claiming 3 MHz and 40 MHz, the largest sample rate allowed, a direct
call of the resampler at 40 MHz, a 3,000-frame 640x480 GIF and a 720p MP4 at 240 fps.

Each case prints its wall time, the process's peak RSS and what loading answered (a Media, or
the one-line error). Before codi2 bounded decoding (measured on the same machine): 3 MHz WAV
6.1 s / 1.46 GB peak; 40 MHz WAV a MemoryError past 3.7 GB (about 19 GB unbounded); GIF 6.5 s;
MP4 (110 s at 240 fps, 16 frames asked) 128 s.

    python benchmarks/hostile_inputs.py [--json] [--skip-mp4]
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import numpy as np
from codi2.core.media import MediaLimits, load_media
from codi2.server.settings import _server_limits
kind, path, extra = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
limits = _server_limits() if extra.pop("server", False) else None
start = time.monotonic()
try:
    if kind == "resample":
        from codi2.core.audio import resample
        x = np.random.default_rng(0).standard_normal(extra["samples"]).astype(np.float32)
        out = f"{resample(x, extra['rate'], 16000).shape[0]} samples"
    else:
        media = load_media(path, kind, limits=limits, **extra)
        out = f"Media {media.modality} {tuple(media.data.shape)}"
except Exception as exc:
    out = f"{type(exc).__name__}: {exc}"
print(json.dumps({"seconds": round(time.monotonic() - start, 2),
                  "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "result": out[:160]}))
"""


def _wav(path: Path, rate: int, payload: int) -> Path:
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate & 0xFFFFFFFF, 1, 8)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", payload)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body) + payload) + body + bytes((i * 37) & 0xFF for i in range(payload)))
    return path


def _gif(path: Path) -> Path:
    import numpy as np
    from PIL import Image

    base = Image.fromarray(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)).quantize(64)
    rest = [Image.fromarray(np.full((2, 2), i % 64, np.uint8), mode="P") for i in range(2999)]
    for frame in rest:
        frame.putpalette(base.getpalette())
    base.save(path, format="GIF", save_all=True, append_images=rest, duration=20, loop=0, disposal=1)
    return path


def _mp4(path: Path, seconds: int) -> Path:
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    "color=c=black:s=1280x720:r=240", "-t", str(seconds), "-c:v", "libx264",
                    "-preset", "ultrafast", "-crf", "51", str(path)], check=True)  # fmt: skip
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--skip-mp4", action="store_true", help="skip the MP4 (encoding it takes a while)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cases = [
            ("WAV header 3,000,001 Hz (180 KB)", "audio", _wav(root / "3mhz.wav", 3_000_001, 180_000), {}),
            ("WAV header 40,000,001 Hz (3 MB)", "audio", _wav(root / "40mhz.wav", 40_000_001, 3_000_000), {}),
            ("WAV 383,987 Hz, the largest allowed (49 MB)", "audio", _wav(root / "max.wav", 383_987, 49_000_000), {}),
            ("resample() called directly, 40,000,001 Hz", "resample", root, {"rate": 40_000_001, "samples": 400_000}),
            ("GIF 3,000 frames 640x480, 16 kept", "video", _gif(root / "bomb.gif"), {"video_frames": 16}),
            ("same GIF, server limits", "video", root / "bomb.gif", {"video_frames": 16, "server": True}),
        ]
        if not args.skip_mp4:
            cases.append(("MP4 720p 240 fps, 20 s, 16 kept", "video", _mp4(root / "bomb.mp4", 20), {"video_frames": 16}))
        results = []
        for name, kind, path, extra in cases:
            out = subprocess.run([sys.executable, "-c", CHILD, kind, str(path), json.dumps(extra)],
                                 capture_output=True, text=True, check=True)  # fmt: skip
            results.append({"case": name, **json.loads(out.stdout.strip().splitlines()[-1])})
            if not args.json:
                r = results[-1]
                print(f"{name:46s} {r['seconds']:7.2f} s {r['peak_mb']:6d} MB  {r['result']}")
        if args.json:
            print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
