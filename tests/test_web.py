"""The web chat page in a real headless browser (Debian's chromium + chromedriver, via Selenium).

Loads the page from a live ``codi2 serve``, attaches an image, sends a prompt, waits for the
generated image to appear, sends a follow-up in the same conversation, and checks that a bad
upload shows an error while the page keeps working. With the shipped toy model (its diffusion
steps slowed so a browser can watch): the example prompts of an empty conversation, the answer
streaming in (text first, a progress bar that advances, then the item), spectrograms beside
uploaded and generated audio, and Cancel stopping the generation on the server.

Needs ``apt-get install chromium chromium-driver`` and ``pip install selenium``. Without them
the test is skipped — except on CI (``CI=true``), where it fails instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from _tiny_chat_model import EveryModality, chat_model_dir, png_bytes

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ON_CI = os.environ.get("CI", "").lower() == "true"


def _missing() -> str | None:
    try:
        import fastapi  # noqa: F401
        import httpx  # noqa: F401
        import selenium  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install selenium 'codi2[serve]')"
    if not (CHROMIUM and CHROMEDRIVER):
        return "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
    return None


@pytest.fixture(scope="module")
def browser_ready():
    reason = _missing()
    if reason:
        if ON_CI:
            pytest.fail(f"the browser test must run on CI: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def server(browser_ready):
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "codi2", "--quiet", "serve", "--model", str(chat_model_dir()),
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the server exited: {proc.stderr.read().decode()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the server did not start in 90 s")
        time.sleep(0.2)
    yield url
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.fixture(scope="module")
def driver(browser_ready, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1000,900", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):  # fmt: skip
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    browser.set_page_load_timeout(30)
    yield browser
    browser.quit()


def wait_for(driver, condition, timeout: float = 30, what: str = "the page"):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)
    except TimeoutException:
        shot = Path(os.environ.get("CODI2_WEB_SCREENSHOT", "/tmp/codi2-web-failure.png"))
        driver.save_screenshot(str(shot))
        log = driver.find_element("id", "log").text
        raise AssertionError(f"timed out waiting for {what}; screenshot {shot}; chat log: {log!r}") from None


def loaded_images(driver, selector: str) -> list:
    return [img for img in driver.find_elements("css selector", selector)
            if driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)]  # fmt: skip


def test_chat_page_with_uploaded_image_and_follow_up(server, driver, tmp_path):
    import httpx

    image = tmp_path / "square.png"
    image.write_bytes(png_bytes(1))
    driver.get(server + "/")
    wait_for(driver, lambda d: "reads" in d.find_element("id", "model").text, what="the model line")
    assert "image" in driver.find_element("id", "model").text

    # round 1: an uploaded image and a prompt
    driver.find_element("id", "files").send_keys(str(image))
    wait_for(driver, lambda d: "square.png" in d.find_element("id", "attachments").text, what="the attachment chip")
    driver.find_element("id", "prompt").send_keys("make it blue")
    driver.find_element("id", "send").click()
    wait_for(driver, lambda d: loaded_images(d, ".message.assistant img"), what="the generated image")
    generated = loaded_images(driver, ".message.assistant img")[0]
    assert "/v1/media/" in generated.get_attribute("src")
    assert driver.execute_script("return arguments[0].naturalWidth", generated) == 16
    assert loaded_images(driver, ".message.user img"), "the user's own upload is shown"
    assert driver.find_element("id", "attachments").text == "", "attachments are cleared after sending"

    # round 2: a follow-up in the same conversation (Enter sends; typed while the first answer
    # still streams, it goes when that answer is complete)
    driver.find_element("id", "prompt").send_keys("paint it red\n")
    # a finished answer (no longer .streaming): the page records its session when the stream ends
    wait_for(driver, lambda d: len(d.find_elements("css selector", ".message.assistant:not(.streaming)")) == 2, what="the follow-up answer")
    sessions = {m.get_attribute("data-session") for m in driver.find_elements("css selector", ".message.assistant")}
    assert len(sessions) == 1 and "" not in sessions, "both rounds belong to one session"
    history = httpx.get(f"{server}/v1/sessions/{sessions.pop()}").json()["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    assert history[0]["content"][0]["type"] == "image" and history[2]["content"][-1]["text"] == "paint it red"
    driver.save_screenshot(str(tmp_path / "chat.png"))

    # a broken upload: a clear error in the page, and the page still works afterwards
    broken = tmp_path / "broken.png"
    broken.write_bytes(png_bytes(1)[:50])
    driver.find_element("id", "files").send_keys(str(broken))
    driver.find_element("id", "prompt").send_keys("what is this?\n")
    wait_for(driver, lambda d: d.find_elements("css selector", ".message.error"), what="the error message")
    error = driver.find_element("css selector", ".message.error").text
    assert "broken.png" in error and "truncated" in error, error
    driver.find_element("id", "prompt").send_keys("draw a square\n")
    wait_for(driver, lambda d: len(d.find_elements("css selector", ".message.assistant")) == 3, what="an answer after the error")

    # a new conversation starts empty and gets a new session
    driver.find_element("id", "reset").click()
    assert driver.find_elements("css selector", ".message") == []


class WithHeightmap(EveryModality):
    """Answers also hold an item of a modality no page shows natively (a made-up "heightmap",
    saved as .npy): the page offers it as a download link with the preview its spec draws."""

    def __init__(self, model):
        import io

        import numpy as np
        from PIL import Image

        from codi2.core.modality import ModalitySpec
        from codi2.core.types import Media

        def npy(media):
            buffer = io.BytesIO()
            np.save(buffer, media.data)
            return buffer.getvalue()

        def preview(media):
            buffer = io.BytesIO()
            Image.fromarray((media.data * 255).astype(np.uint8)).save(buffer, format="PNG")
            return buffer.getvalue()

        super().__init__(model)
        def load(source, *, name=None, **_):
            return Media("heightmap", np.load(io.BytesIO(source), allow_pickle=False), name=name)

        spec = ModalitySpec(name="heightmap", load=load, encode=npy, suffixes=(".npy",), mime_type="application/x-npy",
                            display="download", preview=preview)  # fmt: skip
        self.modalities = model.modalities.union([spec])

    def generate(self, messages, **options):
        import numpy as np

        from codi2.core.types import Media

        answer = super().generate(messages, **options)
        answer.parts.append(Media("heightmap", np.linspace(0, 1, 24 * 24).reshape(24, 24), name="terrain"))
        return answer


@pytest.fixture(scope="module")
def every_modality_server(browser_ready):
    """An in-process uvicorn (in a thread) whose answers hold an image, audio, a video and a heightmap."""
    import uvicorn

    import codi2
    from codi2.server import ServerSettings, create_app

    app = create_app(WithHeightmap(codi2.load(chat_model_dir())), settings=ServerSettings())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(15)
    sock.close()


def test_generated_audio_and_video_play_inline(every_modality_server, driver):
    driver.get(every_modality_server + "/")
    driver.find_element("id", "prompt").send_keys("draw a square\n")
    ready = "return arguments[0].readyState >= 1 && arguments[0].duration > 0"  # metadata decoded
    # the items stream in one by one: wait for the finished answer (no longer .streaming) first
    wait_for(driver, lambda d: d.find_elements("css selector", ".message.assistant:not(.streaming)"), what="the whole answer")
    wait_for(driver, lambda d: [m for m in d.find_elements("css selector", ".message.assistant audio, .message.assistant video")
                                if d.execute_script(ready, m)] and loaded_images(d, ".message.assistant img"),
             what="the audio and video players")  # fmt: skip
    audio = driver.find_element("css selector", ".message.assistant audio")
    video = driver.find_element("css selector", ".message.assistant video")
    assert audio.get_attribute("controls") is not None and video.get_attribute("controls") is not None
    wait_for(driver, lambda d: d.execute_script(ready, audio) and d.execute_script(ready, video), what="both players ready")
    assert abs(driver.execute_script("return arguments[0].duration", audio) - 0.1) < 0.02
    assert driver.execute_script("return arguments[0].videoWidth", video) == 16
    # a modality without a native player: a download link of its file, with its preview image
    link = driver.find_element("css selector", ".message.assistant a.download")
    assert link.get_attribute("download") == "terrain" and "terrain" in link.text
    assert link.get_attribute("href").startswith("data:application/x-npy;base64,") or "/v1/media/" in link.get_attribute("href")
    wait_for(driver, lambda d: loaded_images(d, ".message.assistant a.download img"), what="the heightmap preview")


# --- the toy model: examples, streaming, the progress bar, cancel, spectrograms --------------------


class SlowSteps:
    """The toy model with every diffusion step slowed down (so a browser can watch the progress
    bar), counting the steps it renders."""

    def __init__(self, model, seconds: float):
        self.model, self.seconds, self.steps = model, seconds, 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def generate(self, messages, progress=None, **options):
        def slow(event, answer):
            if event == "step":
                self.steps += 1
                time.sleep(self.seconds)
            if progress is not None:
                progress(event, answer)

        return self.model.generate(messages, progress=slow, **options)


@pytest.fixture(scope="module")
def toy_server(browser_ready):
    """An in-process uvicorn serving the shipped toy model, its diffusion steps slowed to 0.1 s."""
    import uvicorn

    import codi2
    from codi2.server import ServerSettings, create_app

    model = SlowSteps(codi2.load("toy"), 0.1)
    app = create_app(model, settings=ServerSettings())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", model
    server.should_exit = True
    thread.join(15)
    sock.close()


def example_button(driver, title: str):
    wait_for(driver, lambda d: d.find_elements("css selector", "#examples button.example"), what="the example prompts")
    buttons = [b for b in driver.find_elements("css selector", "#examples button.example") if title in b.text]
    assert buttons, [b.text for b in driver.find_elements("css selector", "#examples button.example")]
    return buttons[0]


def spectrogram_drawn(driver, canvas) -> bool:
    """The canvas was drawn and is not one flat colour."""
    return driver.execute_script(
        "const c = arguments[0]; if (c.dataset.drawn !== '1') return false;"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "const seen = new Set(); for (let i = 0; i < d.length; i += 4) seen.add(d[i] * 65536 + d[i + 1] * 256 + d[i + 2]);"
        "return seen.size > 8;", canvas)  # fmt: skip


def test_examples_stream_with_a_progress_bar_and_audio_spectrograms(toy_server, driver):
    url, _ = toy_server
    driver.get(url + "/")
    # an empty conversation offers the model's examples, with their sample media
    button = example_button(driver, "edit an image")
    assert "Make {a} purple." in button.text and button.find_elements("css selector", "img")
    assert len(driver.find_elements("css selector", "#examples button.example")) == 6
    button.click()
    assert not driver.find_elements("css selector", "#examples"), "examples go once the conversation starts"
    assert loaded_images(driver, ".message.user img"), "the example's sample image is shown as the user's"
    # while the image renders: the text so far, a progress bar that advances, no image yet
    bar = wait_for(driver, lambda d: d.find_elements("css selector", ".message.assistant .progress progress"),
                   what="the progress bar")[0]  # fmt: skip
    wait_for(driver, lambda d: d.execute_script("return arguments[0].value", bar) >= 3, what="the bar to advance")
    assert driver.execute_script("return arguments[0].max", bar) == 20
    assert "Here it is:" in driver.find_element("css selector", ".message.assistant .text").text
    assert not driver.find_elements("css selector", ".message.assistant img")
    assert "rendering image" in driver.find_element("css selector", ".message.assistant .progress").text
    wait_for(driver, lambda d: loaded_images(d, ".message.assistant img"), what="the generated image")
    assert not driver.find_elements("css selector", ".progress"), "the bar goes when the item arrives"
    assert driver.find_element("id", "send").is_enabled() and not driver.find_element("id", "cancel").is_displayed()

    # audio in and out: each player has a spectrogram beside it
    driver.find_element("id", "reset").click()
    example_button(driver, "describe a sound").click()
    wait_for(driver, lambda d: len(d.find_elements("css selector", ".message.assistant")) == 1
             and not d.find_elements("css selector", ".message.streaming"), what="the caption")  # fmt: skip
    user_canvas = driver.find_element("css selector", ".message.user .audio-item canvas.spectrogram")
    wait_for(driver, lambda d: spectrogram_drawn(d, user_canvas), what="the spectrogram of the uploaded audio")
    assert "tone" in driver.find_element("css selector", ".message.assistant .text").text
    driver.find_element("id", "reset").click()
    example_button(driver, "text to audio").click()
    canvas = wait_for(driver, lambda d: d.find_elements("css selector", ".message.assistant .audio-item canvas.spectrogram"),
                      timeout=60, what="the generated audio")[0]  # fmt: skip
    wait_for(driver, lambda d: spectrogram_drawn(d, canvas), what="the spectrogram of the generated audio")
    assert driver.find_element("css selector", ".message.assistant .audio-item audio").get_attribute("src").startswith(url + "/v1/media/")


def test_cancel_stops_the_answer_on_the_server(toy_server, driver):
    import httpx

    url, model = toy_server
    driver.get(url + "/")
    before = model.steps
    example_button(driver, "image and sound").click()
    wait_for(driver, lambda d: d.find_elements("css selector", ".message.assistant .progress progress"), what="the progress bar")
    cancel = driver.find_element("id", "cancel")
    assert cancel.is_displayed()
    cancel.click()
    wait_for(driver, lambda d: "cancelled" in d.find_element("id", "log").text, what="the cancelled note")
    assert not driver.find_elements("css selector", ".message.assistant img"), "no item after cancel"
    assert driver.find_element("id", "send").is_enabled() and not cancel.is_displayed()
    # the server stops generating: its step count stops, the queue empties
    for _ in range(50):
        if httpx.get(f"{url}/health").json()["queue"]["in_flight"] == 0:
            break
        time.sleep(0.1)
    assert httpx.get(f"{url}/health").json()["queue"]["in_flight"] == 0
    stopped_at = model.steps
    time.sleep(0.5)
    assert model.steps == stopped_at, "the generation went on after the client cancelled"
    assert stopped_at - before < 20, "the generation stopped within its first item (20 steps each)"
    # and the page keeps working
    driver.find_element("id", "prompt").send_keys("Draw a large red circle.\n")
    wait_for(driver, lambda d: loaded_images(d, ".message.assistant img"), timeout=60, what="an answer after cancel")
