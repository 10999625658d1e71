"""A tiny, really trained CoDi-2 model for the front-end tests (CLI, server, web page).

Built from the ``tiny-*`` plugins and trained for a few seconds to answer "<image> done" (a
random model seldom opens a media span), then saved with ``save_pretrained`` so that every
test loads it through the real ``--model DIR`` path. Training checks the prompts the tests
rely on (:data:`PROBES`) and trains on until each of them draws an image.

The directory is cached under the temp folder, keyed by the content of this file and of the
code it trains, so the three front-end test files (and reruns) share one build.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

CONFIG = {
    "encoders": [{"plugin": "tiny-encoder"}],
    "llm": {"plugin": "tiny-llm", "options": {"hidden_size": 32}},
    "decoders": {"image": {"plugin": "tiny-decoder", "options": {"modality": "image", "size": 16}},
                 "audio": {"plugin": "tiny-decoder", "options": {"modality": "audio", "seed": 1}}},
    "generation": {"max_new_tokens": 24},
    # the tiny LLM has 512 positions: keep prompt + answer inside them
    "max_input_tokens": 400,
}  # fmt: skip

WORDS = ("draw", "a", "square", "hello", "make", "it", "blue", "please", "what", "is", "this?", "look",
         "at", "paint", "turn", "into", "circle", "again", "now", "red", "x", "request", "0", "1", "7")  # fmt: skip

#: (prompt, PNG seed or None) pairs the tests use where they need a generated image (seed 0)
PROBES = (("draw a square", None), ("make it blue {a}", 1), ("{a} paint it red", 2), ("draw {a}", 3))


def png_bytes(seed: int = 0, size: int = 16) -> bytes:
    """A small valid PNG of random pixels."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def wav_bytes(seconds: float = 0.5, rate: int = 16000) -> bytes:
    """A short valid WAV (a sine tone)."""
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate, format="WAV")
    return buf.getvalue()


class EveryModality:
    """A model whose answers also hold an audio clip and a video after the real model's own
    parts (the tiny model only draws images): exercises audio and video output paths."""

    def __init__(self, model):
        self.model = model

    def __getattr__(self, name):
        return getattr(self.model, name)

    def generate(self, messages, **options):
        from codi2.testing import test_media

        answer = self.model.generate(messages, **options)
        answer.parts += [test_media("audio", 1), " and ", test_media("video", 2)]
        return answer


@contextlib.contextmanager
def torch_threads(n: int = 1):
    """Run torch on ``n`` threads (tiny models run far faster on a busy 2-core machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _conversations(test_media) -> list[list[dict]]:
    rng = np.random.default_rng(0)

    def user_turn(i: int) -> dict:
        words = [str(w) for w in rng.choice(WORDS, size=rng.integers(1, 12))]
        if i % 2:
            return {"role": "user", "content": " ".join(words)}
        cut = int(rng.integers(0, len(words) + 1))  # the image anywhere among the words
        before, after = " ".join(words[:cut]), " ".join(words[cut:])
        content = [{"type": "text", "text": before + " "}] if before else []
        content.append({"type": "image", "data": test_media("image", i)})
        content += [{"type": "text", "text": " " + after}] if after else []
        return {"role": "user", "content": content}

    def answer(i: int, target: bool = True) -> dict:
        return {"role": "assistant", "content": [
            {"type": "image", "data": test_media("image", 1000 + i), "target": target},
            {"type": "text", "text": " done"}]}  # fmt: skip

    out = []
    for i in range(64):  # a quarter are second rounds, with an earlier answer in the history
        history = [user_turn(i + 500), answer(i + 500, target=False)] if i % 4 == 3 else []
        out.append([*history, user_turn(i), answer(i)])
    return out


def _probes_draw(model) -> bool:
    from codi2.attachments import load_attachment

    for prompt, seed in PROBES:
        media = {"a": load_attachment(png_bytes(seed), name="a")} if seed is not None else None
        if not model.generate(prompt, media=media, seed=0).media:
            return False
    return True


def build_chat_model(directory: str | Path, steps: int = 150, max_rounds: int = 4) -> Path:
    """Train and save the tiny chat model; returns ``directory``."""
    import torch

    from codi2.assembly import assemble
    from codi2.registry import Registry
    from codi2.testing import test_media

    with torch_threads(1):
        torch.manual_seed(0)
        model = assemble(CONFIG, registry=Registry.create(entry_points=False))
        conversations = _conversations(test_media)
        batches = [model.collate(conversations[k : k + 16]) for k in range(0, len(conversations), 16)]
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        step = 0
        for _ in range(max_rounds):
            model.train()
            for _ in range(steps if step == 0 else 50):
                loss = model(batches[step % len(batches)], generator=torch.Generator().manual_seed(step))["total"]
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                step += 1
            model.eval()
            if _probes_draw(model):
                return model.save_pretrained(directory)
    raise AssertionError(f"the tiny chat model did not learn to draw for {PROBES} in {step} steps")


def chat_model_dir() -> Path:
    """The cached model directory (built on first use; safe with parallel test processes)."""
    import codi2

    package = Path(codi2.__file__).parent
    sources = [Path(__file__), package / "testing.py", package / "core" / "model.py", package / "core" / "generation.py"]
    key = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:12]
    target = Path(tempfile.gettempdir()) / "codi2-tests" / f"tiny-chat-{key}"
    if (target / "model.safetensors").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".build-"))
    try:
        build_chat_model(staging)
        try:
            os.rename(staging, target)  # atomic; another process may have won the race
        except OSError:
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def slowed(model, seconds: float, *, endless: bool = False) -> dict[str, int]:
    """Make every LLM forward of ``model`` take ``seconds`` longer (deadlines, disconnects and
    batches become observable); ``endless``: no end-of-sequence token, so each answer is exactly
    its ``max_tokens`` long. Returns a counter of the forwards run so far (``["n"]``)."""
    import time

    calls = {"n": 0}
    forward = model.llm.forward

    def slow_forward(*args, **kwargs):
        calls["n"] += 1
        time.sleep(seconds)
        return forward(*args, **kwargs)

    model.llm.forward = slow_forward
    if endless:
        model.llm.eos_token_ids = ()
    return calls
