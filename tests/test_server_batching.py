"""Request batching in the server: concurrent requests share one ``generate_batch`` call, each
keeps its own answer (the one it gets alone), its own stream, deadline, cancellation and errors.

The model is the tiny trained one (tests/_tiny_chat_model.py), loaded from its directory.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

if os.environ.get("CI", "").lower() != "true":  # on CI a missing extra is a failure, not a skip
    pytest.importorskip("fastapi", reason="the server needs the serve extra: pip install 'codi2[serve]'")
from _tiny_chat_model import chat_model_dir, png_bytes, slowed, torch_threads
from fastapi.testclient import TestClient
from test_server import SETTINGS, sse_events, strip_urls

import codi2
from codi2.core.messages import Message, TextPart
from codi2.server import ServerSettings, create_app
from codi2.server.engine import Engine, ServerError
from codi2.server.inputs import GenerationParams
from codi2.server.streaming import make_work


@pytest.fixture(scope="module")
def model():
    return codi2.load(chat_model_dir())


def image_request(text: str, seed: int, png_seed: int, **extra) -> dict:
    data = base64.b64encode(png_bytes(png_seed)).decode("ascii")
    content = [{"type": "text", "text": text}, {"type": "image", "data": data}]
    return {"messages": [{"role": "user", "content": content}], "seed": seed, "steps": 3, **extra}


REQUESTS = [
    {"messages": [{"role": "user", "content": "draw a square"}], "seed": 0, "steps": 3},
    image_request("make it blue ", 1, 1),
    {**image_request("paint it red ", 2, 2), "stream": True},
    {"messages": [{"role": "user", "content": "hello what is this?"}], "seed": 3, "steps": 3, "temperature": 1.0},
    {"messages": [{"role": "user", "content": "draw a circle"}], "seed": 4, "steps": 3, "stream": True, "max_tokens": 2},
]


def send(client, request: dict) -> tuple[int, str, list[bytes]]:
    """(status, the answer's content with media URLs replaced, the media's PNG bytes)."""
    if request.get("stream"):
        with client.stream("POST", "/v1/chat/completions", json=request) as response:
            if response.status_code != 200:
                response.read()
                return response.status_code, response.json()["error"]["type"], []
            events = sse_events(response.iter_lines())
        assert events[-1] == (None, "[DONE]"), events[-2:]
        deltas = [data["choices"][0]["delta"] for _, data in events[:-1] if data["choices"]]
        content = "".join(d.get("content") or "" for d in deltas)
        urls = [m["url"] for d in deltas for m in d.get("media", [])]
    else:
        response = client.post("/v1/chat/completions", json=request)
        if response.status_code != 200:
            return response.status_code, response.json()["error"]["type"], []
        message = response.json()["choices"][0]["message"]
        content, urls = message["content"], [m["url"] for m in message.get("media", [])]
    return 200, strip_urls(content), [client.get(url).content for url in urls]


def send_together(client, requests: list[dict]) -> list[tuple[int, str, list[bytes]]]:
    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(lambda r: send(client, r), requests))


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def test_concurrent_requests_share_one_batch_and_get_their_own_answers(model):
    # a long window: every request of the burst arrives within it
    batched = ServerSettings(**SETTINGS, max_batch=8, batch_window=1.0)
    with torch_threads(1), TestClient(create_app(model, settings=batched)) as c:
        together = send_together(c, REQUESTS)
        health = c.get("/health").json()["batching"]
    # one batch, and one of its own for the request with other options (temperature)
    assert health["batches"] == 2 and health["requests"] == len(REQUESTS) and health["largest"] == len(REQUESTS) - 1, health
    with torch_threads(1), TestClient(create_app(model, settings=ServerSettings(**SETTINGS, max_batch=1))) as c:
        alone = [send(c, r) for r in REQUESTS]  # one at a time, through the old path
        also_alone = send_together(c, REQUESTS[:2])
        health = c.get("/health").json()["batching"]
    assert health["batches"] == 0 and health["max_batch"] == 1  # max_batch=1: no batching at all
    assert also_alone == alone[:2]
    assert sum(len(media) for *_, media in alone) >= 3  # the case renders images in the batch
    for (status, content, media), (status1, content1, media1) in zip(together, alone):
        assert status == status1 == 200
        assert content == content1  # the same tokens, streamed or whole
        assert len(media) == len(media1)
        for a, b in zip(media, media1):  # the tiny decoder in a batch: float rounding at most
            assert np.abs(pixels(a) - pixels(b)).max() <= 1


def test_a_bad_request_in_a_burst_fails_alone(model):
    too_long = {"messages": [{"role": "user", "content": "draw " * 600}], "seed": 0}  # over the model's 400 tokens
    bad_image = {"messages": [{"role": "user", "content": [{"type": "image", "data": "bm90IGFuIGltYWdl"}]}]}
    over_limit = {**REQUESTS[0], "max_tokens": 10_000}
    burst = [REQUESTS[0], too_long, REQUESTS[2], bad_image, over_limit, REQUESTS[1]]
    with torch_threads(1), TestClient(create_app(model, settings=ServerSettings(**SETTINGS, max_batch=8, batch_window=1.0))) as c:
        answers = send_together(c, burst)
        health = c.get("/health").json()["batching"]
        alone = [send(c, r) for r in (REQUESTS[0], REQUESTS[2], REQUESTS[1])]
    assert [(status, kind) for status, kind, _ in (answers[1], answers[3], answers[4])] == [
        (400, "invalid_request"), (400, "media_decode"), (400, "invalid_request")]  # fmt: skip
    assert [a[:2] for a in (answers[0], answers[2], answers[5])] == [a[:2] for a in alone]
    # the too-long one reached the batch (its conversation is checked there) and failed alone
    assert health["batches"] == 1 and health["largest"] == 3, health


class FailsInABatch:
    """A model whose batched call fails whenever one conversation says "poison" (and whose
    single call fails for that conversation only): the failure is one item's, not the batch's."""

    def __init__(self, model):
        self.model = model

    def __getattr__(self, name):
        return getattr(self.model, name)

    @staticmethod
    def _poisoned(conversation) -> bool:
        return "poison" in " ".join(part.text for m in conversation for part in m.parts if hasattr(part, "text"))

    def generate_batch(self, conversations, **options):
        if any(self._poisoned(c) for c in conversations):
            raise RuntimeError("a decoder blew up")
        return self.model.generate_batch(conversations, **options)

    def generate(self, conversation, **options):
        if self._poisoned(conversation):
            from codi2.errors import MessageError

            raise MessageError("this conversation cannot be answered")
        return self.model.generate(conversation, **options)


def test_a_failing_batch_answers_each_request_alone(model):
    poison = {"messages": [{"role": "user", "content": "poison"}], "seed": 0, "steps": 3}
    burst = [REQUESTS[0], poison, REQUESTS[1]]
    settings = ServerSettings(**SETTINGS, max_batch=8, batch_window=1.0)
    with torch_threads(1), TestClient(create_app(FailsInABatch(model), settings=settings)) as c:
        answers = send_together(c, burst)
        health = c.get("/health").json()["batching"]
        alone = [send(c, r) for r in (REQUESTS[0], REQUESTS[1])]
    assert health["batches"] == 1 and health["largest"] == 3  # it was one batch, and it failed
    assert answers[1][:2] == (400, "invalid_request")
    assert [answers[0][:2], answers[2][:2]] == [a[:2] for a in alone]


def test_a_deadline_a_disconnect_and_a_lost_session_stop_only_their_own_rows(model):
    model = codi2.load(chat_model_dir())  # its own copy: the LLM is slowed down below
    forward = model.llm.forward

    def slow(*args, **kwargs):
        time.sleep(0.15)
        return forward(*args, **kwargs)

    model.llm.forward = slow
    settings = ServerSettings(**SETTINGS, max_batch=8, batch_window=0.2, request_timeout=60.0)
    engine = Engine(settings, model=model)
    tokens = {}

    def work(name: str, seed: int, **params):
        text = [Message("user", [TextPart("draw a square")])]
        job = make_work(engine, text, GenerationParams(seed=seed, steps=2, **params), base_url="http://x")
        progress = job.progress

        def counting(event, answer):
            if event == "token":
                tokens[name] = tokens.get(name, 0) + 1
            progress(event, answer)

        job.progress = counting
        return job

    async def burst():
        now = time.monotonic()
        runs = {
            "late": asyncio.ensure_future(engine.run(work("late", 0), now - 60.0 + 0.5)),  # its deadline: in 0.5 s
            "gone": asyncio.ensure_future(engine.run(work("gone", 1), now)),
            "ok": asyncio.ensure_future(engine.run(work("ok", 2), now)),
            "lost": asyncio.ensure_future(engine.run(work("lost", 3, session_id="s-gone"), now)),
            "ok2": asyncio.ensure_future(engine.run(work("ok2", 4, stream=False), now)),
        }
        await asyncio.sleep(0.6)
        runs["gone"].cancel()  # what the server does when the client disconnects
        done = await asyncio.gather(*runs.values(), return_exceptions=True)
        return dict(zip(runs, done))

    with torch_threads(1):
        results = asyncio.run(burst())
        alone = [model.generate([Message("user", [TextPart("draw a square")])], seed=s, steps=2) for s in (2, 4)]
    engine.close()
    assert isinstance(results["late"], ServerError) and results["late"].status == 504
    assert isinstance(results["gone"], asyncio.CancelledError)
    assert isinstance(results["lost"], ServerError) and results["lost"].status == 404
    for name, answer in zip(("ok", "ok2"), alone):
        message = results[name]["choices"][0]["message"]
        assert re.sub(r"!\[output\d+\]\([^)]*\)", "", message["content"]).strip() == answer.text.strip()
        assert len(message["media"]) == len(answer.media) == 1
        assert results[name]["usage"]["completion_tokens"] == answer.tokens == tokens[name]
    # the stopped rows stopped consuming tokens while the others went on
    assert tokens["late"] < tokens["ok"] and tokens["gone"] < tokens["ok"], tokens
    assert engine.batches == 1 and engine.largest_batch == 4  # "lost" failed before the batch started


def test_batching_settings_are_checked():
    from codi2.errors import ConfigError

    with pytest.raises(ConfigError, match="max_batch must be > 0"):
        ServerSettings(max_batch=0).validate()
    with pytest.raises(ConfigError, match="batch_window must be 0-10 seconds"):
        ServerSettings(batch_window=-1).validate()


async def _asgi_post(app, body: dict, disconnect_after: float | None = None) -> tuple[int, dict | None]:
    """POST ``body`` to the app in this event loop; the client goes away ``disconnect_after``
    seconds later (then there is no answer to read) or waits for the whole answer."""
    import json

    events = [{"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}]
    sent: list[dict] = []
    done = asyncio.Event()

    async def receive() -> dict:
        if events:
            return events.pop(0)
        if disconnect_after is not None:
            await asyncio.sleep(disconnect_after)
        else:
            await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "query_string": b"",
             "headers": [(b"content-type", b"application/json")], "http_version": "1.1", "scheme": "http",
             "server": ("t", 80), "client": ("c", 1)}  # fmt: skip
    await app(scope, receive, send)
    start = next((m for m in sent if m["type"] == "http.response.start"), None)
    if start is None:
        return 0, None
    data = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], data if body.get("stream") else json.loads(data)


def test_a_client_going_away_stops_its_row_and_the_batch_answers_the_others():
    slow = codi2.load(chat_model_dir())
    calls = slowed(slow, 0.05, endless=True)  # each answer is exactly max_tokens long
    app = create_app(slow, settings=ServerSettings(max_batch=8, batch_window=0.2))
    message = [{"role": "user", "content": "hi"}]
    stays = {"messages": message, "max_tokens": 20, "temperature": 1.0, "seed": 1}
    leaves = {"messages": message, "max_tokens": 200, "temperature": 1.0, "seed": 2}

    async def both():
        return await asyncio.gather(_asgi_post(app, stays), _asgi_post(app, leaves, disconnect_after=0.4))

    with torch_threads(1):
        (status, body), _ = asyncio.run(both())
    assert status == 200 and body["usage"]["completion_tokens"] == 20
    engine = app.state.engine
    assert engine.batches == 1 and engine.largest_batch == 2  # they shared one batch
    # the batch ended with the one that stayed (20 tokens), not at the other's 200
    assert calls["n"] < 40, calls
    assert engine.admitted == 0


def test_a_short_request_is_answered_without_waiting_for_the_long_one_in_its_batch():
    """Each request is answered as soon as its row is complete. (A whole answer with media waits
    for the batch's text: its media are rendered with the others', one decoder call.)"""
    slow = codi2.load(chat_model_dir())
    slowed(slow, 0.05, endless=True)  # each answer is exactly max_tokens long
    app = create_app(slow, settings=ServerSettings(max_batch=8, batch_window=0.2))
    message = [{"role": "user", "content": "hi"}]
    finished = {}

    async def timed(name: str, body: dict):
        result = await _asgi_post(app, body)
        finished[name] = time.monotonic()
        return result

    async def both():
        # the short one streams: media are then rendered as their spans close, not after the batch's text
        return await asyncio.gather(timed("short", {"messages": message, "max_tokens": 3, "seed": 1, "stream": True}),
                                    timed("long", {"messages": message, "max_tokens": 40, "seed": 2}))

    with torch_threads(1):
        started = time.monotonic()
        (s1, short), (s2, long) = asyncio.run(both())
    events = sse_events(short.decode().splitlines())
    assert s1 == s2 == 200 and events[-1] == (None, "[DONE]") and long["usage"]["completion_tokens"] == 40
    assert events[-2][1]["choices"][0]["finish_reason"] == "length"
    assert app.state.engine.batches == 1 and app.state.engine.largest_batch == 2
    # 40 tokens take at least 2 s here; the short answer came after about 4 forwards
    assert finished["short"] - started < (finished["long"] - started) / 2, finished
