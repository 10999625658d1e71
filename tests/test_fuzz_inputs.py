"""Fuzzing everything a user or client types: placeholder prompts and message lists, JSON
request bodies against the server, JSONL dataset lines, and model/training config files.
Each either parses or raises a codi2 error (the server: a JSON error with a 4xx status, never a
500), within the bound of :func:`_fuzz.bounded`."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("hypothesis")
from _fuzz import bounded, scaled
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codi2.core.config import ModelConfig
from codi2.core.messages import normalize_messages

#: JSON values, nested a little
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
#: text with the characters placeholder parsing cares about, and lone surrogates
TEXT = st.lists(st.sampled_from(list("ab {}_-\n\\") + ["\ud800", "é", "{a}", "{{", "}}"]), max_size=12).map("".join) | st.text(max_size=30)
PARTS = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image", "audio", "video", "imgae", "image_url"])},
    optional={"text": TEXT | JSON, "data": st.sampled_from([None, "", "abc", "aGk="]), "path": st.text(max_size=8),
              "encode": st.booleans(), "target": JSON, "name": JSON},
)
MESSAGES = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "bot"]) | JSON},
                          optional={"content": TEXT | st.lists(PARTS | JSON, max_size=3) | JSON, "target": JSON}),
    max_size=4,
) | JSON


@settings(max_examples=scaled(300))
@given(TEXT, st.dictionaries(st.sampled_from(["a", "b", "a b", "", "é", "a\n"]),
                             st.sampled_from([np.zeros((4, 4, 3), np.uint8), (np.zeros(1600, np.float32), 16000),
                                              "no-such-file.png", 3, {"type": "image"}]), max_size=3))
def test_placeholder_prompts(prompt, media):
    bounded(lambda: normalize_messages(prompt, media))


@settings(max_examples=scaled(300))
@given(MESSAGES)
def test_message_lists(messages):
    bounded(lambda: normalize_messages(messages))


# --- the server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client():
    pytest.importorskip("fastapi")
    from _tiny_chat_model import chat_model_dir, torch_threads
    from fastapi.testclient import TestClient

    import codi2
    from codi2.server import ServerSettings, create_app

    settings = ServerSettings(max_new_tokens=4, max_text_chars=2000)
    with torch_threads(1), TestClient(create_app(codi2.load(chat_model_dir()), settings=settings),
                                      raise_server_exceptions=False) as c:  # fmt: skip
        yield c


def _request_bodies() -> st.SearchStrategy:
    options = {"max_tokens": st.integers(-2, 3) | JSON, "seed": st.integers(-1, 2**64) | JSON,
               "temperature": st.floats(allow_nan=False) | JSON, "top_p": st.floats(0, 1) | JSON,
               "session_id": st.text(max_size=70) | JSON, "media_format": st.sampled_from(["url", "base64", "x"]),
               "stream": JSON, "n": JSON, "store": JSON, "steps": JSON, "guidance": JSON}  # fmt: skip
    body = st.fixed_dictionaries({"messages": MESSAGES}, optional=options)
    return st.one_of(body.map(lambda b: json.dumps(b).encode()), JSON.map(lambda b: json.dumps(b).encode()),
                     st.binary(max_size=200), body.map(lambda b: json.dumps(b).encode()[: len(json.dumps(b)) // 2]))


def _check_answer(response) -> None:
    assert response.status_code < 500, response.text
    body = response.json()
    if response.status_code >= 400:
        assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, body


@settings(max_examples=scaled(300), suppress_health_check=list(HealthCheck))
@given(_request_bodies())
def test_json_request_bodies_never_get_a_500(client, body):
    response = bounded(lambda: client.post("/v1/chat/completions", content=body,
                                           headers={"content-type": "application/json"}))  # fmt: skip
    _check_answer(response)


@settings(max_examples=scaled(100), suppress_health_check=list(HealthCheck))
@given(st.dictionaries(st.sampled_from(["prompt", "system", "seed", "top_p", "max_tokens", "x", "store"]),
                       TEXT, max_size=4),
       st.dictionaries(st.sampled_from(["a", "b"]), st.binary(max_size=64), max_size=2))
def test_multipart_forms_never_get_a_500(client, fields, files):
    response = bounded(lambda: client.post("/v1/chat/completions/multipart",
                                           data={k: v.encode("utf-8", "surrogatepass") for k, v in fields.items()},
                                           files={k: (f"{k}.bin", v, "application/octet-stream") for k, v in files.items()} or {"z": ("z", b"", "image/png")}))  # fmt: skip
    _check_answer(response)


# --- datasets and configs ------------------------------------------------------------------


@settings(max_examples=scaled(200))
@given(st.lists(st.one_of(MESSAGES.map(lambda m: json.dumps({"messages": m}).encode()), JSON.map(lambda v: json.dumps(v).encode()),
                          st.binary(max_size=80).filter(lambda b: b"\n" not in b)), min_size=1, max_size=6))  # fmt: skip
def test_jsonl_lines(tmp_path_factory, lines):
    from codi2.training.data import ConversationDataset, validate_files

    path = tmp_path_factory.mktemp("jsonl") / "train.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    report = bounded(lambda: validate_files(path))
    assert not isinstance(report, Exception)  # problems are reported, not raised
    assert len({(p.file, p.line) for p in report.problems}) + report.samples <= len(lines)
    bounded(lambda: ConversationDataset(path, on_error="skip"))


CONFIG_KEYS = ["encoders", "llm", "decoders", "plugin", "options", "modalities", "generation", "max_input_tokens",
               "model", "data", "train", "max_steps", "epochs", "stage", "optimizer", "lr", "seed", "schedule"]  # fmt: skip
CONFIGS = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 2**40) | st.floats() | st.sampled_from(["tiny-llm", "x", "", "image"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(CONFIG_KEYS) | st.text(max_size=5), inner, max_size=5),
    max_leaves=15,
)


@settings(max_examples=scaled(300))
@given(CONFIGS)
def test_config_dicts(data):
    from codi2.training.config import TrainConfig

    bounded(lambda: ModelConfig.from_dict(data))
    bounded(lambda: TrainConfig.from_dict(data))


@settings(max_examples=scaled(200))
@given(st.binary(max_size=200) | CONFIGS.map(lambda c: json.dumps(c, default=str).encode()), st.sampled_from([".json", ".yaml", ".yml"]))
def test_config_files(tmp_path_factory, data, suffix):
    from codi2.training.config import TrainConfig

    path = tmp_path_factory.mktemp("cfg") / f"config{suffix}"
    path.write_bytes(data)
    bounded(lambda: ModelConfig.from_file(path))
    bounded(lambda: TrainConfig.from_file(path))
