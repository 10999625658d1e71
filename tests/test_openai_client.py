"""The official ``openai`` client against a live server (uvicorn on 127.0.0.1) serving the shipped
toy model: text, image and audio inputs, multi-round with media, audio output in OpenAI's
``message.audio``, streaming with media, and errors surfacing as the client's typed exceptions.

What the toy model answers is read back with the toy world's analysers, so these tests check
that the links in ``content`` lead to the items that were asked for — not only their format.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import threading
import time
import warnings

import pytest

if os.environ.get("CI", "").lower() != "true":  # on CI a missing package is a failure, not a skip
    pytest.importorskip("openai", reason="the client tests need the test extra: pip install 'codi2[test]'")
    pytest.importorskip("fastapi", reason="the server needs the serve extra: pip install 'codi2[serve]'")
import httpx
import openai

from codi2.attachments import load_attachment
from codi2.toy import world as w
from codi2.toy.analysers import analyse
from codi2.toy.world import AudioItem, ImageItem

MEDIA_LINK = re.compile(r"(!?)\[([^\]]+)\]\((http://127\.0\.0\.1:\d+/v1/media/[\w-]+)\)")


def wait_healthy(url: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"the server did not become healthy in {seconds:.0f} s")


def data_uri(media) -> str:
    from codi2.core.media import media_to_bytes

    fmt, mime = ("png", "image/png") if media.modality == "image" else ("wav", "audio/wav")
    return f"data:{mime};base64,{base64.b64encode(media_to_bytes(media, fmt)).decode('ascii')}"


def fetch(url: str):
    """The item behind a media link, decoded, and what the toy world's analyser reads in it."""
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200, response.text
    media = load_attachment(response.content, name="fetched")
    return media, analyse(media).item


def create(client, **kwargs):
    """``chat.completions.create`` with warnings as errors: the client parses the answer cleanly."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        response = client.chat.completions.create(model="toy", seed=0, **kwargs)
        response.model_dump_json()  # serialising back must not warn either (it did for list content)
    return response


# --- whole answers ---------------------------------------------------------------------------------


def test_text_prompt_answer_is_markdown_with_an_absolute_image_link(client, server):
    response = create(client, messages=[{"role": "user", "content": "Draw a large red circle."}])
    message = response.choices[0].message
    assert isinstance(message.content, str) and response.choices[0].finish_reason == "stop"
    links = MEDIA_LINK.findall(message.content)
    assert len(links) == 1 and links[0][0] == "!", message.content  # an image: ![name](url)
    _, name, url = links[0]
    assert url.startswith(server + "/v1/media/")
    media = message.model_extra["media"]
    assert media == [{**media[0], "modality": "image", "name": name, "url": url, "mime_type": "image/png", "display": "image"}]
    item, reading = fetch(url)
    assert item.data.shape == (32, 32, 3) and media[0]["bytes"] > 0
    assert reading == ImageItem(shape="circle", colour="red", size="large"), reading
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_image_input_as_image_url(client):
    square = w.to_media(ImageItem(shape="square", colour="blue", size="small"))
    response = create(client, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in "},
        {"type": "image_url", "image_url": {"url": data_uri(square)}},
        {"type": "text", "text": "?"}]}])  # fmt: skip
    message = response.choices[0].message
    assert message.model_extra["media"] == [] and not MEDIA_LINK.search(message.content)
    assert w.parse_caption(message.content) == ImageItem(shape="square", colour="blue", size="small"), message.content


def test_audio_input_as_input_audio(client):
    tone = w.to_media(AudioItem(waveform="sine", pitch="G4", overlay="none"))
    wav = data_uri(tone).split(",", 1)[1]
    response = create(client, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in "},
        {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}},
        {"type": "text", "text": "?"}]}])  # fmt: skip
    assert w.parse_caption(response.choices[0].message.content) == AudioItem(waveform="sine", pitch="G4", overlay="none")


def test_multi_round_with_media_continues_the_session(client, server):
    first = create(client, messages=[{"role": "user", "content": "Draw a large green square."}])
    session = first.model_extra["session_id"]
    assert session and fetch(MEDIA_LINK.findall(first.choices[0].message.content)[0][2])[1].colour == "green"
    second = create(client, messages=[{"role": "user", "content": "Make it purple."}], extra_body={"session_id": session})
    assert second.model_extra["session_id"] == session
    _, reading = fetch(MEDIA_LINK.findall(second.choices[0].message.content)[0][2])
    assert reading == ImageItem(shape="square", colour="purple", size="large"), reading  # the first round's square
    history = httpx.get(f"{server}/v1/sessions/{session}").json()["messages"]
    assert [m["role"] for m in history] == ["user", "assistant"] * 2
    assert [p["type"] for p in history[1]["content"] + history[3]["content"] if p["type"] != "text"] == ["image", "image"]


def test_multi_round_without_a_session_sends_the_answer_back(client):
    """A stateless client keeps the history itself and sends the earlier answer back as it came:
    its links to this server's media stand for the items."""
    ask = {"role": "user", "content": "Draw a large green square."}
    first = create(client, messages=[ask], extra_body={"store": False})
    assert first.model_extra["session_id"] is None
    follow = {"role": "user", "content": "Make it purple."}
    second = create(client, messages=[ask, first.choices[0].message, follow], extra_body={"store": False})
    _, reading = fetch(MEDIA_LINK.findall(second.choices[0].message.content)[0][2])
    assert reading == ImageItem(shape="square", colour="purple", size="large"), reading
    # a link to another answer of this server is resolved too (the follow-up is answered with an
    # edited image). Which shape comes back is not asserted: this history (the square's request,
    # a circle as its answer) contradicts itself, which no training conversation does, so whether
    # the model follows the request's words or the linked image is a property of one training
    # run, not of the server (the toy model shipped 2026-12-07 follows the words)
    circle = create(client, messages=[{"role": "user", "content": "Draw a large red circle."}], extra_body={"store": False})
    third = create(client, messages=[ask, circle.choices[0].message, follow], extra_body={"store": False})
    _, reading = fetch(MEDIA_LINK.findall(third.choices[0].message.content)[0][2])
    assert (reading.colour, reading.size) == ("purple", "large"), reading
    # a link this server does not hold is a clear error, not text the model would read
    stale = {"role": "assistant", "content": "Here it is: ![output0](http://127.0.0.1:1/v1/media/AAAAAAAAAAAAAAAAAAAAAA)"}
    with pytest.raises(openai.BadRequestError, match="unknown or expired"):
        client.chat.completions.create(model="toy", messages=[ask, stale, follow])


def test_audio_output_in_message_audio(client):
    response = create(client, messages=[{"role": "user", "content": "Play a sine tone at A4."}],
                      modalities=["text", "audio"], audio={"voice": "alloy", "format": "wav"})  # fmt: skip
    message = response.choices[0].message
    assert message.audio is not None and message.audio.id and message.audio.expires_at > time.time()
    assert message.audio.transcript == message.model_extra["text"]
    sound = load_attachment(base64.b64decode(message.audio.data), name="audio")
    assert sound.sample_rate == 16000 and analyse(sound).item == AudioItem(waveform="sine", pitch="A4", overlay="none")
    links = MEDIA_LINK.findall(message.content)
    assert len(links) == 1 and links[0][0] == "" and links[0][1].endswith(".wav")  # a link, not an image
    assert message.model_extra["media"][0]["seconds"] == 1.0


# --- streaming --------------------------------------------------------------------------------------


def test_streaming_with_media(client):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stream = client.chat.completions.create(
            model="toy", seed=0, stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Draw a yellow circle and play its sound."}],
        )  # fmt: skip
        chunks = list(stream)
    kinds, content, media = [], "", []
    for chunk in chunks:
        assert chunk.object == "chat.completion.chunk"
        if (chunk.model_extra or {}).get("progress"):
            kinds.append("progress")
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        content += delta.content or ""
        if (delta.model_extra or {}).get("media"):
            media += delta.model_extra["media"]
            kinds.append("media")
        elif delta.content:
            kinds.append("text")
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"] and chunks[-1].usage.completion_tokens > 0 and chunks[-1].choices == []
    # text first, then each item after its own progress, in the order made
    assert [m["modality"] for m in media] == ["image", "audio"]
    compact = [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1]]
    assert compact[:4] == ["text", "progress", "media", "text"] and compact[-2:] == ["progress", "media"], compact
    links = MEDIA_LINK.findall(content)
    assert [url for _, _, url in links] == [m["url"] for m in media]
    assert fetch(media[0]["url"])[1] == ImageItem(shape="circle", colour="yellow", size="large")
    assert fetch(media[1]["url"])[1] == AudioItem(waveform="sine", pitch="A4", overlay="none")  # yellow -> A4, circle -> sine


# --- errors -------------------------------------------------------------------------------------------


def test_errors_are_the_clients_typed_exceptions(client):
    broken = data_uri(w.to_media(ImageItem(shape="square", colour="red", size="large")))[:80]
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="toy", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": broken}}, {"type": "text", "text": "what is this?"}]}])  # fmt: skip
    assert bad.value.status_code == 400 and bad.value.body["type"] == "media_decode"
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model="toy", max_tokens=10**6, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="path"):
        client.chat.completions.create(model="toy", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}])  # fmt: skip
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="toy", messages=[{"role": "user", "content": "hi"}],
                                       extra_body={"session_id": "A" * 22})  # fmt: skip
    assert missing.value.body["type"] == "session_not_found"
    with pytest.raises(openai.BadRequestError):  # refused before the stream starts: a plain 400
        client.chat.completions.create(model="toy", stream=True, messages=[{"role": "user", "content": "x " * 3000}])


class Controlled:
    """The toy model, its diffusion steps slowed and counted, optionally failing mid-answer."""

    def __init__(self, model):
        self.model, self.delay, self.fail, self.steps = model, 0.0, None, 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def generate(self, messages, progress=None, **options):
        def hook(event, answer):
            if event.startswith("render:") and self.fail is not None:
                raise self.fail
            if event == "step":
                self.steps += 1
                time.sleep(self.delay)
            if progress is not None:
                progress(event, answer)

        return self.model.generate(messages, progress=hook, **options)


@pytest.fixture(scope="module")
def controlled_server():
    """A live uvicorn on 127.0.0.1 (in this process, so tests can steer the model) serving
    :class:`Controlled` with a queue of one place."""
    import uvicorn

    import codi2
    from codi2.server import ServerSettings, create_app

    model = Controlled(codi2.load("toy"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(model, settings=ServerSettings(max_queue=1)), log_level="critical"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        wait_healthy(url)
        yield url, model, openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@pytest.fixture(scope="module")
def server(controlled_server):
    return controlled_server[0]


@pytest.fixture(scope="module")
def client(controlled_server):
    return controlled_server[2]


def in_flight(url: str) -> int:
    return httpx.get(f"{url}/health").json()["queue"]["in_flight"]


def test_an_error_mid_stream_is_an_api_error_and_the_server_stays_healthy(controlled_server):
    url, model, client = controlled_server
    model.fail = RuntimeError("the decoder broke")
    try:
        stream = client.chat.completions.create(model="toy", stream=True, messages=[{"role": "user", "content": "Draw a large red circle."}])
        received = []
        with pytest.raises(openai.APIError, match="internal error") as error:
            received.extend(stream)
        assert received and received[0].choices[0].delta.role == "assistant", "the stream had started"
        assert error.value.body["type"] == "internal_error" and "the decoder broke" not in str(error.value)
    finally:
        model.fail = None
    assert httpx.get(f"{url}/health").json()["status"] == "ok" and in_flight(url) == 0
    assert create(client, messages=[{"role": "user", "content": "Draw a large red circle."}]).choices[0].message.content


def test_queue_full_is_a_rate_limit_error_and_closing_a_stream_cancels_it(controlled_server):
    url, model, client = controlled_server
    model.delay = 0.05
    try:
        stream = client.chat.completions.create(model="toy", stream=True,
                                                messages=[{"role": "user", "content": "Draw a yellow circle and play its sound."}])  # fmt: skip
        for chunk in stream:  # read until the first item is rendering
            if (chunk.model_extra or {}).get("progress", {}).get("step", 0) >= 2:
                break
        assert in_flight(url) == 1
        with pytest.raises(openai.RateLimitError) as busy:  # the stream holds the only place
            client.chat.completions.create(model="toy", messages=[{"role": "user", "content": "hi"}])
        assert busy.value.body["type"] == "queue_full"
        started = model.steps
        stream.close()  # the client goes away
        deadline = time.monotonic() + 10
        while in_flight(url) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert in_flight(url) == 0
        stopped_at = model.steps
        time.sleep(0.3)
        assert model.steps == stopped_at and stopped_at - started < 20, "the generation stopped when the stream closed"
    finally:
        model.delay = 0.0
    assert create(client, messages=[{"role": "user", "content": "Draw a large red circle."}]).choices[0].finish_reason == "stop"
