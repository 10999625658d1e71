"""The HTTP server: chat round trips, sessions, media URLs, bad input through every door,
refusals (429/503/504), and 200 concurrent requests against a live uvicorn on loopback.

The model is the tiny trained one (tests/_tiny_chat_model.py), loaded from its directory.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

if os.environ.get("CI", "").lower() != "true":  # on CI a missing extra is a failure, not a skip
    pytest.importorskip("fastapi", reason="the server needs the serve extra: pip install 'codi2[serve]'")
import httpx
from _tiny_chat_model import (
    EveryModality,
    chat_model_dir,
    png_bytes,
    slowed,
    torch_threads,
    wav_bytes,
)
from fastapi.testclient import TestClient

import codi2
from codi2.core.media import MediaLimits
from codi2.server import ServerSettings, create_app

SETTINGS = {"max_new_tokens": 64, "max_body_bytes": 2 * 2**20,
            "limits": MediaLimits(max_bytes=256 * 1024, max_image_pixels=512 * 512, max_audio_seconds=5.0)}  # fmt: skip


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def image_message(text: str, data: str) -> dict:
    return {"role": "user", "content": [{"type": "text", "text": text}, {"type": "image", "data": data}]}


@pytest.fixture(scope="module")
def model_dir():
    return chat_model_dir()


@pytest.fixture(scope="module")
def model(model_dir):
    return codi2.load(model_dir)


@pytest.fixture(scope="module")
def client(model):
    with torch_threads(1), TestClient(create_app(model, settings=ServerSettings(**SETTINGS))) as c:
        yield c


def assert_error(response, status: int, kind: str, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, body
    assert body["error"]["type"] == kind, body
    for word in words:
        assert word in body["error"]["message"], body


def decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return np.asarray(image)


# --- round trips ------------------------------------------------------------------------------


def test_chat_with_inline_image_returns_text_and_a_media_url(client):
    request = {"messages": [image_message("make it blue ", "data:image/png;base64," + b64(png_bytes(1)))], "seed": 0}
    response = client.post("/v1/chat/completions", json=request)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["session_id"]
    message = body["choices"][0]["message"]
    images = [p for p in message["media"] if p["modality"] == "image"]
    assert images and images[0]["url"].startswith("http://testserver/v1/media/") and images[0]["mime_type"] == "image/png"
    # content is a string: the text, with each item as a Markdown image at an absolute URL
    assert isinstance(message["content"], str) and f"![{images[0]['name']}]({images[0]['url']})" in message["content"]
    assert message["content"].replace(f"![{images[0]['name']}]({images[0]['url']})", "").strip() == message["text"].strip()
    media = client.get(images[0]["url"])
    assert media.status_code == 200 and media.headers["content-type"] == "image/png"
    assert decode_png(media.content).shape == (16, 16, 3)
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] and usage["prompt_tokens"] > 10
    # same request, same seed: the same image, inline this time
    again = client.post("/v1/chat/completions", json={**request, "media_format": "base64", "store": False}).json()
    inline = next(p for p in again["choices"][0]["message"]["media"] if p["modality"] == "image")
    assert "url" not in inline and again["session_id"] is None
    assert f"(data:image/png;base64,{inline['data']})" in again["choices"][0]["message"]["content"]
    assert np.array_equal(decode_png(base64.b64decode(inline["data"])), decode_png(media.content))


def test_openai_style_parts_and_audio_input(client):
    content = [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64(png_bytes(2))}},
               {"type": "input_audio", "input_audio": {"data": b64(wav_bytes()), "format": "wav"}},
               {"type": "text", "text": "paint it red"}]  # fmt: skip
    response = client.post("/v1/chat/completions", json={"model": "anything", "messages": [{"role": "user", "content": content}]})
    assert response.status_code == 200, response.text
    session = client.get(f"/v1/sessions/{response.json()['session_id']}").json()
    assert [p["type"] for p in session["messages"][0]["content"]] == ["image", "audio", "text"]


def test_multipart_upload_round_trip(client):
    response = client.post("/v1/chat/completions/multipart", data={"prompt": "make it blue {a}", "seed": "0"},
                           files={"a": ("square.png", png_bytes(1), "image/png")})  # fmt: skip
    assert response.status_code == 200, response.text
    parts = response.json()["choices"][0]["message"]["media"]
    url = next(p["url"] for p in parts if p["modality"] == "image")
    assert decode_png(client.get(url).content).shape == (16, 16, 3)


def test_sessions_continue_and_can_be_forgotten(client):
    first = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "draw a square"}]}).json()
    sid = first["session_id"]
    second = client.post("/v1/chat/completions", json={"session_id": sid, "messages": [{"role": "user", "content": "now red"}]})
    assert second.status_code == 200 and second.json()["session_id"] == sid
    # the second prompt holds the whole first round: more tokens than that round in all
    assert second.json()["usage"]["prompt_tokens"] > first["usage"]["total_tokens"]
    history = client.get(f"/v1/sessions/{sid}").json()["messages"]
    assert [m["role"] for m in history] == ["user", "assistant"] * 2
    assert history[0]["content"] == [{"type": "text", "text": "draw a square"}]
    assert history[2]["content"] == [{"type": "text", "text": "now red"}]
    assert client.delete(f"/v1/sessions/{sid}").json() == {"id": sid, "deleted": True}
    gone = client.post("/v1/chat/completions", json={"session_id": sid, "messages": [{"role": "user", "content": "x"}]})
    assert_error(gone, 404, "session_not_found")


def test_about_endpoints(client, model_dir):
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    models = client.get("/v1/models").json()["data"]
    assert models[0]["id"] == model_dir.name and "image" in models[0]["output_modalities"]
    plugins = client.get("/v1/plugins").json()["plugins"]
    assert any("tiny-llm" in p["components"].get("llm", []) for p in plugins)
    spec = client.get("/openapi.json").json()
    assert {"/v1/chat/completions", "/v1/chat/completions/multipart", "/v1/media/{media_id}", "/health"} <= set(spec["paths"])
    page = client.get("/")
    assert page.status_code == 200 and "codi2 chat" in page.text and "Content-Security-Policy" in page.headers
    assert client.get("/static/chat.js").headers["content-type"].startswith("text/javascript")


# --- bad input through every door -------------------------------------------------------------

PNG = png_bytes(1)
BIG_PNG = png_bytes(3, size=1024)  # 3 MB of noise: over the 256 KB item limit and the 2 MB body
LARGE_PIXELS = io.BytesIO()
Image.new("RGB", (1024, 1024)).save(LARGE_PIXELS, format="PNG")  # small file, too many pixels


def image_part(**part):
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "image", **part}]}]}


JSON_CASES = {
    "path key": (image_part(path="/etc/passwd"), 400, "path_not_allowed"),
    "relative path as data": (image_part(data="../../etc/passwd"), 400, "path_not_allowed"),
    "absolute path as data": (image_part(data="/etc/passwd"), 400, "path_not_allowed"),
    "file url as data": (image_part(data="file:///etc/passwd"), 400, "path_not_allowed"),
    "windows path as data": (image_part(data="C:\\Windows\\win.ini"), 400, "path_not_allowed"),
    "url key": (image_part(url="http://127.0.0.1/x.png"), 400, "path_not_allowed"),
    "image_url file": ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]},
                       400, "path_not_allowed"),
    "image_url http": ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}]}]},
                       400, "path_not_allowed"),
    "truncated png": (image_part(data=b64(PNG[:60])), 400, "media_decode"),
    "corrupt png": (image_part(data=b64(PNG[:16] + b"\x00" * 200)), 400, "media_decode"),
    "empty media": (image_part(data=""), 400, "media_limit"),
    "not base64": (image_part(data="!!! definitely not base64 !!!"), 400, "media_decode"),
    "oversized item": (image_part(data=b64(png_bytes(3, size=300))), 400, "media_limit"),
    "too many pixels": (image_part(data=b64(LARGE_PIXELS.getvalue())), 400, "media_limit"),
    "audio too long": ({"messages": [{"role": "user", "content": [{"type": "audio", "data": b64(wav_bytes(seconds=6.0))}]}]},
                       400, "media_limit"),
    "wav sent as image": (image_part(data=b64(wav_bytes())), 400, "media_decode"),
    "data uri of the wrong type": (image_part(data="data:audio/wav;base64," + b64(wav_bytes())), 400, "media_decode"),
    "unknown modality": ({"messages": [{"role": "user", "content": [{"type": "smell", "data": b64(PNG)}]}]}, 400, "unknown_modality"),
    "bad role": ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "invalid_request"),
    "no messages": ({"messages": []}, 400, "invalid_request"),
    "unknown field": ({"messages": [{"role": "user", "content": "hi"}], "temperature_": 1}, 400, "invalid_request"),
    "media in a system message": ({"messages": [{"role": "system", "content": [{"type": "image", "data": b64(PNG)}]}]},
                                  400, "invalid_request"),
    "streaming an unknown session": ({"messages": [{"role": "user", "content": "hi"}], "stream": True, "session_id": "A" * 22},
                                     404, "session_not_found"),
    "streaming a conversation too long": ({"messages": [{"role": "user", "content": "x" * 2000}], "stream": True},
                                          400, "invalid_request"),
    "an output modality the model lacks": ({"messages": [{"role": "user", "content": "hi"}], "modalities": ["text", "smell"]},
                                           400, "invalid_request"),
    "an audio format not written": ({"messages": [{"role": "user", "content": "hi"}], "audio": {"format": "mp3", "voice": "alloy"}},
                                    400, "invalid_request"),
    "max_tokens over the limit": ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**6}, 400, "invalid_request"),
    "max_completion_tokens over the limit": ({"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 10**6},
                                             400, "invalid_request"),
    "an OpenAI option codi2 lacks": ({"messages": [{"role": "user", "content": "hi"}], "frequency_penalty": 1}, 400, "invalid_request"),
        "negative temperature": ({"messages": [{"role": "user", "content": "hi"}], "temperature": -1}, 400, "invalid_request"),
    "malformed session id": ({"messages": [{"role": "user", "content": "hi"}], "session_id": "../../etc"}, 400, "invalid_request"),
    "unknown session": ({"messages": [{"role": "user", "content": "hi"}], "session_id": "A" * 22}, 404, "session_not_found"),
    "conversation too long": ({"messages": [{"role": "user", "content": "x" * 2000}]}, 400, "invalid_request"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(JSON_CASES))
def test_bad_json_requests_get_a_clear_4xx(client, case):
    body, status, kind = JSON_CASES[case]
    assert_error(client.post("/v1/chat/completions", json=body), status, kind)


def test_path_attempts_never_read_the_disk(client, tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(PNG)
    for data in (str(secret), f"file://{secret}", os.path.relpath(secret)):
        response = client.post("/v1/chat/completions", json=image_part(data=data))
        assert_error(response, 400, "path_not_allowed", "never reads")
    for path in ("/v1/media/../../etc/passwd", "/v1/media/..%2F..%2Fetc%2Fpasswd", "/static/../../pyproject.toml",
                 "/static/%2e%2e%2fpyproject.toml", "/v1/sessions/..%2F..%2Fetc%2Fpasswd"):  # fmt: skip
        response = client.get(path)
        assert response.status_code == 404 and response.json()["error"]["type"] in ("not_found", "session_not_found"), path


def test_bad_bodies_and_content_types(client):
    post = client.post
    assert_error(post("/v1/chat/completions", content=b'{"messages": [', headers={"content-type": "application/json"}),
                 400, "invalid_json")  # fmt: skip
    assert_error(post("/v1/chat/completions", content=b"hello", headers={"content-type": "text/plain"}), 415, "unsupported_media_type")
    assert_error(post("/v1/chat/completions", content=b"{}"), 415, "unsupported_media_type")
    assert_error(post("/v1/chat/completions", content=b"[1, 2]", headers={"content-type": "application/json"}), 400, "invalid_request")
    assert_error(post("/v1/chat/completions/multipart", json={"prompt": "x"}), 415, "unsupported_media_type")
    big = json.dumps(image_part(data=b64(BIG_PNG))).encode()
    assert_error(post("/v1/chat/completions", content=big, headers={"content-type": "application/json"}), 413, "payload_too_large")
    # a body sent in chunks, without Content-Length, is cut off at the limit too
    chunks = (big[i : i + 65536] for i in range(0, len(big), 65536))
    assert_error(post("/v1/chat/completions", content=chunks, headers={"content-type": "application/json"}), 413, "payload_too_large")
    assert_error(client.get("/v1/chat/completions"), 405, "method_not_allowed")
    assert_error(client.get("/no/such/route"), 404, "not_found")


MULTIPART_CASES = {
    "placeholder without file": ({"prompt": "make {b} blue"}, {"a": ("a.png", PNG, "image/png")}, "placeholder_mismatch"),
    "file never used": ({"prompt": "make it blue"}, {"a": ("a.png", PNG, "image/png")}, "placeholder_mismatch"),
    "no prompt": ({}, {"a": ("a.png", PNG, "image/png")}, "invalid_request"),
    "wav declared as image": ({"prompt": "{a}"}, {"a": ("a.png", wav_bytes(), "image/png")}, "media_decode"),
    "text file": ({"prompt": "{a}"}, {"a": ("a.txt", b"hello there", "text/plain")}, "media_decode"),
    "unknown bytes": ({"prompt": "{a}"}, {"a": ("a.bin", b"\x00\x01\x02" * 50, "application/octet-stream")}, "unknown_modality"),
    "empty file": ({"prompt": "{a}"}, {"a": ("a.png", b"", "image/png")}, "media_limit"),
    "truncated file": ({"prompt": "{a}"}, {"a": ("a.png", PNG[:60], "image/png")}, "media_decode"),
    "unknown field": ({"prompt": "hi", "path": "/etc/passwd"}, {}, "invalid_request"),
    "bad option": ({"prompt": "hi", "seed": "minus one"}, {}, "invalid_request"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(MULTIPART_CASES))
def test_bad_multipart_requests_get_a_clear_4xx(client, case):
    fields, files, kind = MULTIPART_CASES[case]
    parts = {**{k: (None, v) for k, v in fields.items()}, **files}  # (None, value): a plain form field
    assert_error(client.post("/v1/chat/completions/multipart", files=parts), 400, kind)


def test_server_is_healthy_after_bad_input(client):
    assert client.get("/health").json()["status"] == "ok"
    ok = client.post("/v1/chat/completions", json={"messages": [image_message("draw ", b64(PNG))]})
    assert ok.status_code == 200


# --- refusals: not ready, timeouts --------------------------------------------------------------


def test_503_while_the_model_loads_then_ready(model_dir):
    release = threading.Event()

    def loader():
        release.wait(30)
        return codi2.load(model_dir)

    with torch_threads(1), TestClient(create_app(loader=loader, settings=ServerSettings(**SETTINGS))) as c:
        health = c.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "loading"
        busy = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        assert_error(busy, 503, "not_ready")
        assert busy.headers["retry-after"]
        release.set()
        for _ in range(200):
            if c.get("/health").status_code == 200:
                break
            time.sleep(0.05)
        assert c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}).status_code == 200


def test_504_past_the_deadline_and_the_worker_is_freed(model_dir):
    slow = codi2.load(model_dir)
    forward = slow.llm.forward
    calls = slowed(slow, 0.1)
    settings = ServerSettings(**{**SETTINGS, "request_timeout": 0.3})
    with torch_threads(1), TestClient(create_app(slow, settings=settings)) as c:
        request = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 64, "temperature": 1.0, "seed": 1}
        assert_error(c.post("/v1/chat/completions", json=request), 504, "timeout")
        time.sleep(0.2)
        stopped_at = calls["n"]
        time.sleep(0.3)
        assert calls["n"] == stopped_at, "the timed-out generation must stop"
        assert stopped_at < 10, "generation stopped at the deadline, not at max_tokens"
        slow.llm.forward = forward
        assert c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}).status_code == 200


# --- a live server under load ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(model_dir):
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "codi2", "--quiet", "serve", "--model", str(model_dir), "--port", str(port),
         "--max-queue", "32", "--timeout", "60", "--max-batch", "8", "--batch-window-ms", "20"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited: {proc.stderr.read()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the server did not start in 90 s")
    yield url, proc
    proc.terminate()
    try:
        # uvicorn shuts down gracefully, then re-raises the signal: exit by SIGTERM is clean
        assert proc.wait(20) in (0, -signal.SIGTERM), "SIGTERM must stop the server"
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in proc.stderr.read()


def rss(pid: int) -> int:
    psutil = pytest.importorskip("psutil")
    return psutil.Process(pid).memory_info().rss


async def _storm(url: str, prompts: list[str], images: list[bytes | None]) -> list[tuple[int, dict]]:
    limits = httpx.Limits(max_connections=len(prompts), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:

        async def one(i: int) -> tuple[int, dict]:
            content = [{"type": "text", "text": prompts[i]}]
            if images[i] is not None:
                content.insert(0, {"type": "image", "data": b64(images[i])})
            response = await http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": content}],
                                                                     "max_tokens": 12, "seed": i})  # fmt: skip
            return response.status_code, response.json()

        return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(len(prompts)))), 150)


def test_200_concurrent_requests_answered_or_refused_none_crossed(live_server, model):
    url, proc = live_server
    n = 200
    prompts = [f"request {i} " + "x" * (i % 97) for i in range(n)]
    images = [png_bytes(i) if i % 3 == 0 else None for i in range(n)]
    warm = httpx.post(f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}, timeout=60)
    assert warm.status_code == 200
    before = rss(proc.pid)
    started = time.monotonic()
    results = asyncio.run(_storm(url, prompts, images))
    elapsed = time.monotonic() - started
    after = rss(proc.pid)

    statuses = [status for status, _ in results]
    assert len(results) == n and set(statuses) <= {200, 429}, sorted(set(statuses))
    answered = [i for i, (status, _) in enumerate(results) if status == 200]
    assert len(answered) >= 32, f"at least a full queue is answered, got {len(answered)}"
    print(f"\n{len(answered)} answered, {n - len(answered)} refused (429) in {elapsed:.1f} s; "
          f"RSS {before / 2**20:.0f} -> {after / 2**20:.0f} MiB")
    for i, (status, body) in enumerate(results):
        if status == 429:
            assert body["error"]["type"] == "queue_full"
    # each answer is to its own request: the prompt length the server counted is that
    # request's own, and the session it created holds that request's own text
    from codi2.attachments import load_attachment
    from codi2.core.messages import normalize_messages

    sessions = [results[i][1]["session_id"] for i in answered]
    assert len(set(sessions)) == len(answered)
    for i in answered:
        media = {"a": load_attachment(images[i], name="a")} if images[i] is not None else None
        text = ("{a}" if media else "") + prompts[i]
        expected = len(model.sequence(normalize_messages(text, media), training=False, add_generation_prompt=True))
        assert results[i][1]["usage"]["prompt_tokens"] == expected, f"request {i} got another request's answer"
    for i in answered[:: max(1, len(answered) // 10)]:
        history = httpx.get(f"{url}/v1/sessions/{results[i][1]['session_id']}").json()["messages"]
        assert history[0]["content"][-1] == {"type": "text", "text": prompts[i]}
    assert after - before < 300 * 2**20, f"RSS grew by {(after - before) / 2**20:.0f} MiB under load"
    assert elapsed < 150
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok" and health["queue"]["in_flight"] == 0
    # the answers above came out of batches (--max-batch 8): none crossed inside one either
    batching = health["batching"]
    assert batching["max_batch"] == 8 and batching["window_ms"] == 20 and 1 < batching["largest"] <= 8, batching


def test_live_server_survives_bad_input_and_serves_the_page(live_server):
    url, _ = live_server
    bad = [
        httpx.post(f"{url}/v1/chat/completions", content=b"{oops", headers={"content-type": "application/json"}),
        httpx.post(f"{url}/v1/chat/completions", json=image_part(data="../../etc/passwd")),
        httpx.post(f"{url}/v1/chat/completions", json=image_part(data=b64(PNG[:50]))),
        httpx.post(f"{url}/v1/chat/completions/multipart", data={"prompt": "{a}"}, files={"a": ("a.png", b"", "image/png")}),
    ]
    assert [r.status_code for r in bad] == [400, 400, 400, 400]
    assert all(set(r.json()) == {"error"} for r in bad)
    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    assert "codi2 chat" in httpx.get(f"{url}/").text


def test_generated_audio_and_video_are_served_as_wav_and_mp4(model):
    import soundfile as sf

    with torch_threads(1), TestClient(create_app(EveryModality(model), settings=ServerSettings(**SETTINGS))) as c:
        body = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "draw a square"}]}).json()
        parts = {p["modality"]: p for p in body["choices"][0]["message"]["media"]}
        assert set(parts) == {"image", "audio", "video"}
        assert [p["display"] for p in parts.values()] == ["image", "audio", "video"]
        audio = c.get(parts["audio"]["url"])
        assert audio.headers["content-type"] == "audio/wav" and parts["audio"]["seconds"] == 0.1
        assert parts["audio"]["bytes"] == len(audio.content)
        samples, rate = sf.read(io.BytesIO(audio.content))
        assert rate == 16000 and len(samples) == 1600
        video = c.get(parts["video"]["url"])
        assert video.headers["content-type"] == "video/mp4" and video.content[4:8] == b"ftyp"
        assert parts["video"]["frames"] == 3
        history = c.get(f"/v1/sessions/{body['session_id']}").json()["messages"][1]["content"]
        assert [p["type"] for p in history] == ["image", "text", "audio", "text", "video"]


# --- streaming (Server-Sent Events) ----------------------------------------------------------------


def sse_events(lines) -> list[tuple[str | None, object]]:
    """(event name, parsed data) of each Server-Sent Event; ``[DONE]`` stays a string."""
    events, name = [], None
    for line in lines:
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
            events.append((name, data if data == "[DONE]" else json.loads(data)))
            name = None
    return events


def strip_urls(text: str) -> str:
    import re

    return re.sub(r"/v1/media/[\w-]+", "/v1/media/ID", text)


def test_stream_sends_text_progress_media_then_done(client):
    request = {"messages": [image_message("make it blue ", b64(png_bytes(1)))], "seed": 0, "steps": 4}
    with client.stream("POST", "/v1/chat/completions", json={**request, "stream": True,
                                                             "stream_options": {"include_usage": True}}) as response:  # fmt: skip
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.iter_lines())
    assert events[-1] == (None, "[DONE]") and all(name is None for name, _ in events)
    chunks = [data for _, data in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    progress = [c["progress"] for c in chunks if "progress" in c]
    assert [p["step"] for p in progress] == [0, 1, 2, 3, 4] and {p["modality"] for p in progress} == {"image"}
    assert all(p["steps"] == 4 for p in progress[1:])
    media = [m for d in deltas for m in d.get("media", [])]
    assert len(media) == 1 and media[0]["url"].startswith("http://testserver/v1/media/")
    assert decode_png(client.get(media[0]["url"]).content).shape == (16, 16, 3)
    # the progress of an item comes before the item, the text before it before both
    order = [("media" if "media" in c["choices"][0]["delta"] else "progress" if "progress" in c else "text")
             for c in chunks[1:] if c["choices"] and c["choices"][0]["finish_reason"] is None]  # fmt: skip
    assert order.index("progress") < order.index("media")
    final = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(final) == 1 and final[0]["choices"][0]["finish_reason"] == "stop" and final[0]["session_id"]
    usage = [c for c in chunks if not c["choices"]]
    assert len(usage) == 1 and usage[0]["usage"]["completion_tokens"] > 0
    # the streamed content is the content of the same answer whole
    streamed = "".join(d.get("content") or "" for d in deltas)
    whole = client.post("/v1/chat/completions", json=request).json()["choices"][0]["message"]["content"]
    assert strip_urls(streamed) == strip_urls(whole) and "![output0](http://testserver/v1/media/ID)" in strip_urls(streamed)
    history = client.get(f"/v1/sessions/{final[0]['session_id']}").json()["messages"]
    assert [m["role"] for m in history] == ["user", "assistant"] and history[1]["content"][0]["type"] == "image"


def idle(c) -> bool:
    """Whether the queue empties (its place is given back once a response is closed)."""
    for _ in range(40):
        if c.get("/health").json()["queue"]["in_flight"] == 0:
            return True
        time.sleep(0.05)
    return False


class FailsWhileRendering:
    """A model that breaks after its answer started: when the first item starts to render."""

    def __init__(self, model, error: Exception):
        self.model, self.error = model, error

    def __getattr__(self, name):
        return getattr(self.model, name)

    def generate(self, messages, progress=None, **options):
        def breaking(event, answer):
            if event.startswith("render:"):
                raise self.error
            if progress is not None:
                progress(event, answer)

        return self.model.generate(messages, progress=breaking, **options)


@pytest.mark.parametrize("error, kind", [(RuntimeError("boom"), "internal_error"),
                                         (codi2.errors.MediaError("decoder gave up"), "media_error")])  # fmt: skip
def test_an_error_after_the_stream_started_is_an_error_event(model, error, kind):
    with torch_threads(1), TestClient(create_app(FailsWhileRendering(model, error), settings=ServerSettings(**SETTINGS))) as c:
        request = {"messages": [image_message("make it blue ", b64(png_bytes(1)))], "seed": 0, "stream": True}
        with c.stream("POST", "/v1/chat/completions", json=request) as response:
            assert response.status_code == 200
            events = sse_events(response.iter_lines())
        name, data = events[-1]
        assert name == "error" and set(data) == {"error"} and data["error"]["type"] == kind, events[-1]
        assert "Traceback" not in data["error"]["message"] and (None, "[DONE]") not in events
        assert events[0][1]["choices"][0]["delta"]["role"] == "assistant"
        assert c.get("/health").json()["status"] == "ok" and idle(c)


class SlowFirstToken:
    """A model whose first token takes a second (whatever it samples, the deadline passes)."""

    def __init__(self, model):
        self.model = model

    def __getattr__(self, name):
        return getattr(self.model, name)

    def generate(self, messages, progress=None, **options):
        slowed = []

        def hook(event, answer):
            if event == "token" and not slowed:
                slowed.append(time.sleep(1.0))
            if progress is not None:
                progress(event, answer)

        return self.model.generate(messages, progress=hook, **options)


def test_a_stream_past_its_deadline_ends_with_a_timeout_event(model):
    settings = ServerSettings(**{**SETTINGS, "request_timeout": 0.5})
    with torch_threads(1), TestClient(create_app(SlowFirstToken(model), settings=settings)) as c:
        request = {"messages": [{"role": "user", "content": "hi"}], "seed": 1, "stream": True}
        with c.stream("POST", "/v1/chat/completions", json=request) as response:
            assert response.status_code == 200, "the stream started before the deadline"
            events = sse_events(response.iter_lines())
        assert events[-1][0] == "error" and events[-1][1]["error"]["type"] == "timeout", events[-1]
        assert idle(c)


def test_media_links_use_the_configured_public_url(model):
    settings = ServerSettings(**SETTINGS, public_url="https://chat.example.org/")
    with torch_threads(1), TestClient(create_app(model, settings=settings)) as c:
        body = c.post("/v1/chat/completions", json={"messages": [image_message("make it blue ", b64(png_bytes(1)))], "seed": 0}).json()
        message = body["choices"][0]["message"]
        url = message["media"][0]["url"]
        assert url.startswith("https://chat.example.org/v1/media/") and f"]({url})" in message["content"]
        assert c.get(url.replace("https://chat.example.org", "")).status_code == 200


def test_examples_come_from_the_model_directory(model, tmp_path):
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "a.png").write_bytes(png_bytes(4))
    (tmp_path / "examples.json").write_text(json.dumps({"examples": [
        {"title": "edit", "prompt": "make {a} blue", "media": {"a": "examples/a.png"}},
        {"prompt": "draw a square"}]}))  # fmt: skip
    from types import SimpleNamespace

    before = getattr(model, "source", None)
    model.source = SimpleNamespace(path=tmp_path)
    try:
        with TestClient(create_app(model, settings=ServerSettings(**SETTINGS))) as c:
            examples = c.get("/v1/examples").json()["examples"]
            assert [e["title"] for e in examples] == ["edit", "draw a square"] and examples[1]["media"] == []
            (item,) = examples[0]["media"]
            assert item["name"] == "a" and item["modality"] == "image" and item["display"] == "image"
            assert base64.b64decode(item["data"].split(",", 1)[1]) == png_bytes(4)
            # a file outside the model directory is never read: no examples, the page works without
            (tmp_path / "examples.json").write_text(json.dumps({"examples": [{"prompt": "{a}", "media": {"a": "../secret.png"}}]}))
            assert c.get("/v1/examples").json() == {"examples": []}
        model.source = SimpleNamespace(path=None)  # a model without a directory has none
        with TestClient(create_app(model, settings=ServerSettings(**SETTINGS))) as c:
            assert c.get("/v1/examples").json() == {"examples": []}
    finally:
        model.source = before


def test_an_answer_sent_back_stands_for_its_media(client):
    first = client.post("/v1/chat/completions", json={"messages": [image_message("make it blue ", b64(png_bytes(1)))],
                                                      "seed": 0, "store": False}).json()["choices"][0]["message"]  # fmt: skip
    echoed = {"role": "assistant", **{k: first[k] for k in ("content", "text", "media")}, "refusal": None, "annotations": []}
    follow = {"role": "user", "content": "now red"}
    body = client.post("/v1/chat/completions", json={"messages": [image_message("make it blue ", b64(png_bytes(1))), echoed, follow],
                                                     "seed": 0}).json()  # fmt: skip
    history = client.get(f"/v1/sessions/{body['session_id']}").json()["messages"]
    assert [p["type"] for p in history[1]["content"] if p["type"] != "text"] == ["image"], "the link became the image"
    as_text = {"role": "assistant", "content": first["text"]}  # the same answer without its image: fewer tokens
    plain = client.post("/v1/chat/completions", json={"messages": [image_message("make it blue ", b64(png_bytes(1))), as_text, follow],
                                                      "store": False}).json()  # fmt: skip
    assert body["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"]


def test_stream_with_audio_output_carries_message_audio(model):
    with torch_threads(1), TestClient(create_app(EveryModality(model), settings=ServerSettings(**SETTINGS))) as c:
        request = {"messages": [{"role": "user", "content": "draw a square"}], "seed": 0, "stream": True,
                   "modalities": ["text", "audio"], "audio": {"format": "pcm16", "voice": "alloy"}}  # fmt: skip
        with c.stream("POST", "/v1/chat/completions", json=request) as response:
            events = sse_events(response.iter_lines())
        deltas = [d["choices"][0]["delta"] for _, d in events[:-1] if d["choices"]]
        audio = [d["audio"] for d in deltas if "audio" in d]
        assert len(audio) == 2 and audio[0]["id"] == audio[1]["id"], audio  # the sound, then its transcript
        assert len(base64.b64decode(audio[0]["data"])) == 1600 * 2  # 0.1 s of 16-bit samples at 16 kHz
        text = "".join(d.get("content") or "" for d in deltas if "media" not in d)
        assert audio[1]["transcript"].strip() == text.strip() and "data" not in audio[1]
        modalities = [m["modality"] for d in deltas for m in d.get("media", [])]
        assert modalities == ["image", "audio", "video"]
