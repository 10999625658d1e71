"""A client's input never becomes a 500, an "unexpected" error or unbounded work: sampling
numerics, text that is not UTF-8, seeds, oversized texts, slow bodies, ambiguous lengths,
ids with a trailing newline and malformed JSON each get a documented 4xx / one-line exit 2."""

from __future__ import annotations

import asyncio
import io
import json
import time

import pytest
import torch

pytest.importorskip("fastapi")
from _tiny_chat_model import chat_model_dir, slowed, torch_threads
from fastapi.testclient import TestClient

import codi2
from codi2.cli import main
from codi2.core.generation import _sample
from codi2.core.messages import normalize_messages
from codi2.errors import ConfigError, MessageError
from codi2.server import ServerSettings, create_app


@pytest.fixture(scope="module")
def model_dir():
    return chat_model_dir()


@pytest.fixture(scope="module")
def model(model_dir):
    return codi2.load(model_dir)


@pytest.fixture(scope="module")
def client(model):
    settings = ServerSettings(max_new_tokens=8, max_text_chars=10_000)
    with torch_threads(1), TestClient(create_app(model, settings=settings)) as c:
        yield c


def post_raw(client, body: bytes):
    return client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})


def assert_error(response, status: int, kind: str, *words: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == kind, error
    assert all(w in error["message"] for w in words), error


# --- sampling and seeds ------------------------------------------------------------------


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1e-300), (1e-300, 1.0), (1e-300, 1e-300), (10.0, 1e-45)])
def test_sampling_is_safe_for_any_valid_temperature_and_top_p(temperature, top_p):
    logits = torch.tensor([1.0, 3.0, 2.0, float("-inf")])
    token = _sample(logits, temperature, top_p, torch.Generator().manual_seed(0))
    assert token == 1  # the likeliest token always survives top_p; overflowing logits go greedy


def test_seed_range_is_one_for_api_cli_and_server(model, client, capsys):
    for bad in (-1, 2**64, 1.5, True):
        with pytest.raises(ConfigError, match=r"seed must be an integer in 0\.\.9223372036854775807"):
            model.generate("draw a square", seed=bad, max_new_tokens=1)
    assert model.generate("draw a square", seed=2**63 - 1, max_new_tokens=2).tokens >= 1
    for bad in ("-1", "18446744073709551616", "x"):
        with pytest.raises(SystemExit) as info:
            main(["generate", "hi", "--seed", bad])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--seed" in err
    for bad in (-1, 2**63):
        response = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "seed": bad})
        assert_error(response, 400, "invalid_request", "seed")
    body = {"messages": [{"role": "user", "content": "draw a square"}], "seed": 2**63 - 1, "top_p": 1e-300, "temperature": 1}
    assert client.post("/v1/chat/completions", json=body).status_code == 200


# --- text that is not UTF-8 ----------------------------------------------------------------


def test_lone_surrogates_are_refused_at_every_door(client, capsys, monkeypatch):
    with pytest.raises(MessageError, match="prompt: the text is not valid UTF-8 .*lone surrogate"):
        normalize_messages("hi \ud800")
    with pytest.raises(MessageError, match="message 0, part 1"):
        normalize_messages([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "\udcff"}]}])
    assert_error(post_raw(client, b'{"messages":[{"role":"user","content":"hi \\ud800"}]}'), 400, "invalid_request", "lone surrogate")
    # an undecodable byte in a command-line argument arrives as a surrogate (surrogateescape)
    assert main(["generate", "caf\udce9"]) == 2
    assert capsys.readouterr().err == "error: prompt: the text is not valid UTF-8 (character 4 is a lone surrogate)\n"

    class Stdin:
        buffer = io.BytesIO(b"caf\xe9 {a}")

    monkeypatch.setattr("sys.stdin", Stdin())
    assert main(["generate", "-"]) == 2
    assert capsys.readouterr().err == "error: the prompt on standard input is not valid UTF-8 (byte 4)\n"


# --- bodies -------------------------------------------------------------------------------


def test_malformed_bodies_get_the_documented_types(client):
    assert_error(post_raw(client, b'{"messages":[{"role":"user","content":"hi \xff"}]}'), 400, "invalid_json", "UTF-8 at byte 42")
    assert_error(post_raw(client, b"[" * 100_000 + b"]" * 100_000), 400, "invalid_json", "nested too deeply")
    assert_error(post_raw(client, b'{"messages": [' * 3000), 400, "invalid_json")
    big = {"messages": [{"role": "user", "content": "draw a square " * 1000}]}
    assert_error(client.post("/v1/chat/completions", json=big), 400, "invalid_request", "14000 characters", "10000")
    response = client.post("/v1/chat/completions/multipart", data={"prompt": "x" * 10_001},
                           files={"a": ("a.png", b"x", "image/png")})
    assert_error(response, 400, "invalid_request", "10001 characters")


def test_ids_are_matched_whole(client):
    first = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "draw a square"}]}).json()
    sid = first["session_id"]
    assert client.get(f"/v1/sessions/{sid}").status_code == 200
    assert client.get(f"/v1/sessions/{sid}%0A").status_code == 404
    body = {"session_id": sid + "\n", "messages": [{"role": "user", "content": "hi"}]}
    assert_error(client.post("/v1/chat/completions", json=body), 400, "invalid_request", "session_id")


def _call(app, headers: list[tuple[bytes, bytes]], chunks: list[bytes], delay: float = 0.0) -> tuple[int, dict]:
    """Drive the ASGI app directly, the body arriving in ``chunks`` ``delay`` seconds apart."""
    sent: list[dict] = []
    queue = list(chunks)

    async def receive() -> dict:
        if not queue:
            await asyncio.sleep(3600)  # a client that never finishes
        await asyncio.sleep(delay)
        chunk = queue.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(queue) or delay > 0}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": headers,
             "query_string": b"", "http_version": "1.1", "scheme": "http", "server": ("t", 80), "client": ("c", 1)}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body)


def test_ambiguous_lengths_and_trickled_bodies_are_refused(model):
    app = create_app(model, settings=ServerSettings(body_timeout=0.3, request_timeout=300))
    json_type = (b"content-type", b"application/json")
    status, body = _call(app, [json_type, (b"content-length", b"2"), (b"transfer-encoding", b"chunked")], [b"{}"])
    assert status == 400 and "both Content-Length and Transfer-Encoding" in body["error"]["message"]
    # a byte every 0.1 s: refused after the 0.3 s body timeout, not the 300 s generation timeout
    status, body = _call(app, [json_type], [b"{"] * 100, delay=0.1)
    assert status == 408 and body["error"]["type"] == "request_timeout"
    assert app.state.engine.admitted == 0  # its queue place is free again


def _disconnecting_call(app, body: bytes, after: float) -> float:
    """POST ``body`` to the app, the client going away ``after`` seconds later; the seconds the
    app took to let go of the request."""
    import time

    events: list[dict] = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict:
        if events:
            return events.pop(0)
        await asyncio.sleep(after)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        pass

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "query_string": b"",
             "headers": [(b"content-type", b"application/json")], "http_version": "1.1", "scheme": "http",
             "server": ("t", 80), "client": ("c", 1)}  # fmt: skip
    start = time.monotonic()
    asyncio.run(app(scope, receive, send))
    return time.monotonic() - start


def test_a_client_that_goes_away_stops_its_video_decoding(model, tmp_path):
    import base64
    import subprocess

    import imageio_ffmpeg
    from test_media_bounds import _ffmpeg_children

    video = tmp_path / "noise.mp4"  # noise decodes slowly: 5 s of 640x360 at 30 fps
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    "nullsrc=s=640x360:r=30:d=5,geq=random(1)*255:128:128", "-c:v", "libx264", "-preset",
                    "ultrafast", "-threads", "1", "-pix_fmt", "yuv420p", str(video)], check=True)  # fmt: skip
    app = create_app(model, settings=ServerSettings())
    part = {"type": "video", "data": base64.b64encode(video.read_bytes()).decode()}
    body = json.dumps({"messages": [{"role": "user", "content": [part, {"type": "text", "text": "hi"}]}]}).encode()
    assert _disconnecting_call(app, body, after=0.3) < 5
    time.sleep(0.2)  # the decoding thread notices within one watchdog tick (50 ms)
    assert not _ffmpeg_children(), "ffmpeg must not outlive the request"
    assert app.state.engine.admitted == 0 and not app.state.decoding


def test_a_client_that_goes_away_stops_its_generation(model_dir):
    slow = codi2.load(model_dir)
    calls = slowed(slow, 0.05, endless=True)  # never done early: 200 tokens take 10 s unless stopped
    app = create_app(slow, settings=ServerSettings())
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 200,
                       "temperature": 1.0, "seed": 1}).encode()  # fmt: skip
    with torch_threads(1):
        assert _disconnecting_call(app, body, after=0.3) < 3
        time.sleep(0.3)
        stopped_at = calls["n"]
        time.sleep(0.3)
    assert calls["n"] == stopped_at, "the generation must stop when its client is gone"
    assert stopped_at < 40, "stopped at the disconnect, not at max_tokens"
