"""Batched generation: several prompts in one padded LLM batch give each prompt's own answer."""

import numpy as np
import pytest
import torch

from codi2.core.model import CoDi2Model
from codi2.errors import ConfigError, MessageError
from codi2.testing import test_media, tiny_components

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = [
    "Draw it.",
    "Make {a} blue, please, and then tell me about it in a long sentence.",
    "Hi",
    "Play {b} louder and show {a}.",
    "Describe {a}.",
]
MEDIA = [None, {"a": test_media("image", 0)}, None, {"a": test_media("image", 2), "b": test_media("audio", 1)}, {"a": test_media("image", 3)}]


def tiny_model(boost: float) -> CoDi2Model:
    """A random tiny model nudged to open image and audio spans now and then (``boost`` on
    their opening markers' logits), so that rows open media at different steps."""
    torch.manual_seed(0)
    model = CoDi2Model.from_components(**tiny_components(), fidelity=True)
    model.eval()
    extra = torch.zeros(len(model.markers))
    for modality in ("image", "audio"):
        extra[model.markers.open(modality) - model.markers.vocab_size] = boost
    model.marker_head.register_forward_hook(lambda module, inputs, out: out + extra)
    eos = torch.zeros(model.llm.head.out_features)
    eos[list(model.llm.eos_token_ids)] = 0.9 * boost  # and to end at different lengths
    model.llm.head.register_forward_hook(lambda module, inputs, out: out + eos)
    return model


def same_answer(a, b, atol):
    assert a.tokens == b.tokens and a.finish_reason == b.finish_reason
    assert [p if isinstance(p, str) else p.modality for p in a.parts] == [p if isinstance(p, str) else p.modality for p in b.parts]
    for x, y in zip(a.media, b.media):
        assert x.name == y.name
        np.testing.assert_allclose(np.asarray(x.data, dtype=np.float64), np.asarray(y.data, dtype=np.float64), atol=atol)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_batch_equals_one_by_one_on_tiny_model(temperature):
    model = tiny_model(boost=4.0)
    seeds = [3, 1, 4, 1, 5]
    options = {"temperature": temperature, "max_new_tokens": 12, "max_media": 2, "steps": 3}
    batched = model.generate_batch(PROMPTS, MEDIA, seeds=seeds, max_batch=4, **options)
    alone = [model.generate(p, media=m, seed=s, **options) for p, m, s in zip(PROMPTS, MEDIA, seeds)]
    assert len(batched) == len(PROMPTS)
    for a, b in zip(batched, alone):
        same_answer(a, b, atol=1e-4)  # the tiny decoder writes floats/uint8 from float math
    if temperature > 0:  # the case is not trivial: rows end at different lengths, some open spans
        assert len({a.tokens for a in alone}) > 1 and sum(len(a.media) for a in alone) >= 2, [(a.tokens, len(a.media)) for a in alone]


def test_each_item_keeps_its_own_token_limit_in_a_shared_batch():
    model = tiny_model(boost=4.0)
    seeds, limits = [3, 1, 4, 1, 5], [2, None, 7, 1, 12]
    options = {"temperature": 1.0, "max_new_tokens": 9, "max_media": 2, "steps": 2}
    batched = model.generate_batch(PROMPTS, MEDIA, seeds=seeds, max_batch=5, max_new_tokens_per_item=limits, **options)
    for answer, prompt, media, seed, limit in zip(batched, PROMPTS, MEDIA, seeds, limits):
        alone = model.generate(prompt, media=media, seed=seed, **{**options, "max_new_tokens": limit or 9})
        same_answer(answer, alone, atol=1e-4)
    assert batched[0].tokens <= 2 and batched[3].tokens == 1 and max(a.tokens for a in batched) > 2
    with pytest.raises(ConfigError, match=r"max_new_tokens_per_item\[1\] must be an integer >= 1"):
        model.generate_batch(PROMPTS[:2], MEDIA[:2], max_new_tokens_per_item=[1, 0])


def test_on_done_reports_each_item_when_it_is_complete():
    model = tiny_model(boost=4.0)
    seeds, limits = [3, 1, 4], [2, 12, 6]
    options = {"temperature": 1.0, "max_new_tokens": 12, "max_media": 2, "steps": 2}
    order, tokens_then = [], {}

    def progress(event, index, answer):
        if event == "token":
            tokens_then["steps"] = tokens_then.get("steps", 0) + (index == 1)

    def on_done(index, answer):
        order.append(index)
        tokens_then[index] = tokens_then.get("steps", 0)  # how far the long row was then
        assert answer.finish_reason in ("stop", "length") and None not in answer.parts

    for defer in (True, False):
        order.clear()
        tokens_then.clear()
        answers = model.generate_batch(PROMPTS[:3], MEDIA[:3], seeds=seeds, max_new_tokens_per_item=limits, progress=progress,
                                       on_done=on_done, defer_media=defer, **options)  # fmt: skip
        assert sorted(order) == [0, 1, 2]
        alone = [model.generate(p, media=m, seed=s, **{**options, "max_new_tokens": n})
                 for p, m, s, n in zip(PROMPTS[:3], MEDIA[:3], seeds, limits)]  # fmt: skip
        for a, b in zip(answers, alone):
            same_answer(a, b, atol=1e-4)
        if not answers[0].media or not defer:  # nothing left to render: reported before the batch ends
            assert tokens_then[0] < answers[1].tokens, (defer, tokens_then, [a.tokens for a in answers])


def test_batch_progress_reports_each_item():
    model = tiny_model(boost=4.0)
    events = []
    model.generate_batch(PROMPTS[:3], MEDIA[:3], seeds=[0, 1, 2], max_new_tokens=4,
                         progress=lambda event, index, answer: events.append((index, event)))
    assert {i for i, _ in events} == {0, 1, 2}
    assert all(sum(1 for i, e in events if i == k and e == "token") >= 1 for k in range(3))


def test_should_stop_takes_one_row_out_and_the_others_finish_as_alone():
    model = tiny_model(boost=4.0)
    seeds = [3, 1, 4]
    options = {"temperature": 1.0, "max_new_tokens": 12, "max_media": 2, "steps": 3}
    asked = []

    def should_stop(index):  # row 1 stops before its fourth token; row 2 before rendering anything
        asked.append(index)
        return index == 1 and tokens[1] >= 3

    tokens = [0, 0, 0]

    def progress(event, index, answer):
        if event == "token":
            tokens[index] += 1
        assert index != 1 or tokens[1] <= 3, "a stopped row went on"

    batched = model.generate_batch(PROMPTS[:3], MEDIA[:3], seeds=seeds, progress=progress, should_stop=should_stop,
                                   defer_media=False, **options)  # fmt: skip
    alone = [model.generate(p, media=m, seed=s, **options) for p, m, s in zip(PROMPTS[:3], MEDIA[:3], seeds)]
    assert alone[1].tokens > 3  # it would have gone on
    assert batched[1].finish_reason == "cancelled" and batched[1].tokens == 3 and None not in batched[1].parts
    for k in (0, 2):
        same_answer(batched[k], alone[k], atol=1e-4)
    assert {0, 1, 2} <= set(asked)


def test_should_stop_drops_a_rows_unrendered_media():
    model = tiny_model(boost=8.0)  # opens media spans early
    options = {"temperature": 1.0, "max_new_tokens": 12, "max_media": 2, "steps": 2}
    alone = model.generate(PROMPTS[0], seed=5, **options)
    assert alone.media  # the row would render something
    stopping = {"now": False}

    # deferred media are rendered after the text: a row stopped after its last token renders nothing
    def should_stop(index):
        return index == 0 and stopping["now"]

    def report(event, index, answer):
        if event.startswith("render:"):
            raise AssertionError("a stopped row was rendered")
        if event == "token" and answer.tokens == alone.tokens:
            stopping["now"] = True

    [answer] = model.generate_batch([PROMPTS[0]], seeds=[5], progress=report, should_stop=should_stop, **options)
    assert answer.finish_reason == "cancelled" and answer.media == [] and None not in answer.parts


def test_batch_argument_errors():
    model = tiny_model(boost=0.0)
    with pytest.raises(ConfigError, match="2 conversations but 1 seeds"):
        model.generate_batch(["a", "b"], seeds=[0])
    with pytest.raises(ConfigError, match="max_batch must be >= 1"):
        model.generate_batch(["a"], max_batch=0)
    with pytest.raises(MessageError, match="prompt 1: "):
        model.generate_batch(["a", "What is {x}?"])
    assert model.generate_batch([]) == []


def test_shipped_toy_model_batch_equals_one_by_one():
    import codi2
    from codi2.toy import world as w

    model = codi2.load("toy")
    prompts = ["Draw a small blue square.", "What is in {a}?", "Play a sine tone at G4.", "Make {a} green.", "Draw a red circle and play its sound."]
    media = [None, {"a": w.to_media(w.ImageItem("circle", "red"))}, None, {"a": w.to_media(w.ImageItem("square", "blue"))}, None]
    seeds = [0, 1, 2, 3, 4]
    batched = model.generate_batch(prompts, media, seeds=seeds)
    alone = [model.generate(p, media=m, seed=s) for p, m, s in zip(prompts, media, seeds)]
    for a, b in zip(batched, alone):
        assert a.text == b.text
        # images within 2 of 255 levels, audio within 1e-3 (batched convolutions round differently)
        same_answer(a, b, atol=2.0 if any(m.modality == "image" for m in a.media) else 1e-3)
    assert sum(len(a.media) for a in alone) == 5


def test_generate_command_answers_a_prompt_file_in_batches(tmp_path, capsys):
    import json

    from codi2.cli import main
    from codi2.toy import world as w

    w.to_media(w.ImageItem("circle", "red")).save(tmp_path / "red.png")
    lines = [{"prompt": "Draw a small blue square.", "id": "square"}, {"prompt": "What is in {a}?", "media": {"a": "red.png"}, "seed": 3},
             {"prompt": "Play a sine tone at G4."}]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    assert main(["--quiet", "generate", "--prompts", str(tmp_path / "p.jsonl"), "--out", str(tmp_path / "out"), "--batch", "2", "--seed", "1"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in rows] == ["square", "2", "3"]
    assert rows[1]["text"] == "a large red circle" and not rows[1]["media"]
    assert rows[0]["media"][0]["path"] == str(tmp_path / "out" / "square" / "output0.png")
    assert rows[2]["media"][0]["type"] == "audio" and (tmp_path / "out" / "3" / "output0.wav").is_file()


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "What is in {b}?"}', "p.jsonl:1: prompt: placeholder {b} has no attachment"),
    ('{"prompt": "x", "media": {"a": "missing.png"}}', "p.jsonl:1: media.a: "),
    ('{"prompt": "x", "seed": -1}', "p.jsonl:1: seed must be an integer in 0.."),
    ('{"prompt": "x", "id": "../up"}', "p.jsonl:1: id: '../up' is not a safe folder name"),
    ('{"prompt": "x", "colour": 1}', "p.jsonl:1: unknown field(s) 'colour'"),
    ('[1, 2]', "p.jsonl:1: expected a JSON object"),
    ('{"prompt": "x", "id": "a"}\n{"prompt": "y", "id": "a"}', "p.jsonl:2: id: 'a' is used twice"),
    ('{"prompt": ', "p.jsonl:1: not a JSON object"),
])
def test_generate_command_rejects_bad_prompt_files(tmp_path, capsys, line, message):
    from codi2.cli import main

    (tmp_path / "p.jsonl").write_text(line + "\n")
    assert main(["generate", "--prompts", str(tmp_path / "p.jsonl")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_generate_command_takes_a_prompt_or_a_file(tmp_path, capsys):
    from codi2.cli import main

    assert main(["generate"]) == 2
    (tmp_path / "p.jsonl").write_text('{"prompt": "x"}\n')
    assert main(["generate", "x", "--prompts", str(tmp_path / "p.jsonl")]) == 2
    assert "give a PROMPT or --prompts FILE" in capsys.readouterr().err
    assert main(["generate", "--prompts", str(tmp_path / "p.jsonl"), "--batch", "0"]) == 2
