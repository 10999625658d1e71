"""Conversations and placeholder prompts: parsing and every error a user can make."""

import numpy as np
import pytest

from codi2.core.messages import MediaPart, TextPart, infer_modality, normalize_messages, parse_prompt
from codi2.core.types import Media
from codi2.errors import MessageError, PlaceholderError, UnknownModalityError


def test_placeholders_become_ordered_parts():
    parts = parse_prompt(
        "Given the transformation between {a} and {b}, apply the same editing to {c}.",
        media={"a": "a.png", "b": "b.jpg", "c": "c.png"},
    )
    kinds = [(type(p).__name__, getattr(p, "name", None)) for p in parts]
    assert kinds == [("TextPart", None), ("MediaPart", "a"), ("TextPart", None), ("MediaPart", "b"),
                     ("TextPart", None), ("MediaPart", "c"), ("TextPart", None)]
    assert parts[0].text == "Given the transformation between "
    assert parts[-1].text == "."
    assert all(p.modality == "image" for p in parts if isinstance(p, MediaPart))


def test_escaped_braces_are_literal_text():
    parts = parse_prompt("a set {{x}} and {img}", media={"img": "x.wav"})
    assert parts[0].text == "a set {x} and "
    assert parts[1].modality == "audio"


@pytest.mark.parametrize("source, modality", [
    ("clip.mp4", "video"), ("tone.flac", "audio"), ("x.JPG", "image"),
    (np.zeros((8, 8, 3), np.uint8), "image"), (np.zeros(16000, np.float32), "audio"),
    ((np.zeros(100, np.float32), 8000), "audio"), (np.zeros((4, 8, 8, 3), np.uint8), "video"),
    (Media("video", np.zeros((2, 4, 4, 3), np.uint8), fps=2), "video"),
])
def test_modality_inferred_from_source(source, modality):
    assert infer_modality(source) == modality


def test_placeholder_without_attachment_names_it():
    with pytest.raises(PlaceholderError, match=r"\{b\} has no attachment \(attached: a\)"):
        parse_prompt("{a} then {b}", media={"a": "x.png"})


def test_unreferenced_attachment_is_an_error():
    with pytest.raises(PlaceholderError, match="'extra' never referenced"):
        parse_prompt("just {a}", media={"a": "x.png", "extra": "y.png"})


@pytest.mark.parametrize("prompt, match", [
    ("a } b", "unmatched '}'"), ("{a", "unmatched '{'"), ("{a b}", "invalid placeholder"), ("", "empty"),
])
def test_malformed_prompts(prompt, match):
    with pytest.raises(MessageError, match=match):
        parse_prompt(prompt, media={})


def test_unknown_suffix_asks_for_an_explicit_type():
    with pytest.raises(UnknownModalityError, match="cannot tell the modality"):
        parse_prompt("{a}", media={"a": "notes.xyz"})


def test_explicit_part_dict_as_attachment():
    parts = parse_prompt("{a}", media={"a": {"type": "audio", "path": "noise.bin"}})
    assert parts[0].modality == "audio" and parts[0].name == "a"


def test_content_part_messages():
    msgs = normalize_messages([
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "What is "}, {"type": "image", "path": "x.png"}]},
        {"role": "assistant", "content": [{"type": "audio", "data": np.zeros(10, np.float32), "target": False}], "target": False},
    ])
    assert [m.role for m in msgs] == ["system", "user", "assistant"]
    assert msgs[0].parts == [TextPart("be brief")]
    assert msgs[1].media[0].source == "x.png"
    assert msgs[2].target is False and msgs[2].media[0].target is False


@pytest.mark.parametrize("messages, match", [
    ([], "non-empty list"),
    ([{"role": "robot", "content": "x"}], "message 0: role must be one of"),
    ([{"role": "user"}], "message 0: 'content'"),
    ([{"role": "user", "content": "x", "colour": 1}], "unknown keys"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": [{"type": "text"}]}], "message 1, part 0: a text part"),
    ([{"role": "user", "content": [{"type": "image"}]}], "exactly one of"),
    ([{"role": "user", "content": [{"type": "image", "path": "a.png", "data": b"x"}]}], "exactly one of"),
    ([{"role": "user", "content": [{"type": "image", "url": "file:///etc/passwd"}]}], "URLs are never fetched"),
    ([{"role": "system", "content": [{"type": "image", "path": "a.png"}]}], "system messages hold text only"),
])
def test_malformed_messages(messages, match):
    with pytest.raises(MessageError, match=match):
        normalize_messages(messages)


def test_unknown_part_type_lists_known_modalities():
    with pytest.raises(UnknownModalityError, match="unknown part type 'smell'; known: text, image, audio, video"):
        normalize_messages([{"role": "user", "content": [{"type": "smell", "path": "x"}]}])


def test_encoded_text_parts_are_text_media():
    (msg,) = normalize_messages([{"role": "user", "content": [{"type": "text", "text": "a red circle", "encode": True}]}])
    assert msg.media[0].modality == "text" and msg.media[0].source == "a red circle"
