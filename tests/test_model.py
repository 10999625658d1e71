"""The CoDi-2 model core on tiny real components: layout, losses, gradients, generation, saving."""

import itertools

import numpy as np
import pytest
import torch

from codi2.assembly import assemble
from codi2.core.model import CoDi2Model
from codi2.errors import CheckpointError, MessageError, UnknownModalityError
from codi2.testing import TinyDecoder, TinyEncoder, TinyLLM, test_media, tiny_components


def make_model(**settings):
    return CoDi2Model.from_components(**tiny_components(), **settings)


def edit_conversation(target=True):
    return [
        {"role": "user", "content": [{"type": "text", "text": "Make "}, {"type": "image", "data": test_media("image", 0)},
                                     {"type": "text", "text": " blue."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Here: "},
                                          {"type": "image", "data": test_media("image", 1), "target": target}]},
    ]


def test_sequence_wraps_media_in_markers_and_labels_only_the_answer():
    model = make_model()
    batch = model.collate([edit_conversation()])
    ids, labels = batch.ids[0].tolist(), batch.label_mask[0].tolist()
    m = model.markers
    (row, start, media), = batch.inputs["image"]
    assert ids[start - 1] == m.open("image") and ids[start + 1] == m.close("image")  # 1 feature token
    (row, out_start, target, reference), = batch.outputs["image"]
    n = model.decoders["image"].condition.tokens
    assert ids[out_start - 1] == m.open("image") and ids[out_start + n] == m.close("image")
    assert labels[out_start - 1] is True, "the model must learn to open the media span"
    assert not any(labels[out_start : out_start + n + 1]), "slots and the closing marker are not predicted"
    assert not any(labels[: start + 2]), "the user turn is never a target"
    labelled = model.llm.detokenize([i for i, lab in zip(ids, labels) if lab and i < m.vocab_size])
    assert labelled == "Here: \n"
    assert reference is media, "the last input image is the fidelity reference of the output"
    assert np.array_equal(target.data, test_media("image", 1).data)


def test_history_media_marked_not_target_are_inputs():
    batch = make_model().collate([edit_conversation(target=False)])
    assert len(batch.inputs["image"]) == 2 and "image" not in batch.outputs


def test_total_is_alpha_feature_plus_diffusion_plus_text():
    model = make_model(loss={"alpha": 0.5})
    losses = model(model.collate([edit_conversation()]), generator=torch.Generator().manual_seed(0))
    assert set(losses) == {"text", "feature", "diffusion", "total"}
    assert all(losses[k] > 0 for k in ("text", "feature", "diffusion"))
    expected = 0.5 * losses["feature"] + losses["diffusion"] + losses["text"]
    torch.testing.assert_close(losses["total"], expected)


def grads_after(model, **loss):
    model.config.loss = model.config.loss.model_copy(update=loss)
    model.zero_grad()
    model(model.collate([edit_conversation()]), generator=torch.Generator().manual_seed(0))["total"].backward()
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_each_loss_term_moves_the_right_parameters():
    model = make_model()
    model.set_trainable(llm="full")
    text = grads_after(model, text=True, feature=False, diffusion=False)
    assert any(n.startswith("marker_head") for n in text) and any(n.startswith("in_proj.image") for n in text)
    assert not any(n.startswith("out_proj") for n in text), "text loss must not reach the output projector"

    feature = grads_after(model, text=False, feature=True, diffusion=False)
    assert {"slots.image"} <= feature and any(n.startswith("out_proj.image") for n in feature)
    assert any(n.startswith("llm.blocks") for n in feature)
    assert not any(n.startswith("marker_head") for n in feature)

    diffusion = grads_after(model, text=False, feature=False, diffusion=True)
    assert any(n.startswith("out_proj.image") for n in diffusion) and "slots.image" in diffusion
    assert any(n.startswith("llm.blocks") for n in diffusion), "the diffusion loss must back-propagate into the LLM"
    assert not any(n.startswith("decoders.") for n in diffusion), "frozen decoders receive no gradient"
    assert not any(n.startswith("encoders.") for n in diffusion | feature | text), "encoders stay frozen"


def test_frozen_llm_gets_no_gradient_but_projectors_do():
    model = make_model()
    model.set_trainable(llm="frozen")
    names = grads_after(model)
    assert not any(n.startswith("llm.") for n in names)
    assert any(n.startswith("out_proj") for n in names) and any(n.startswith("in_proj") for n in names)


def train(model, conversations, steps=60, lr=3e-3):
    model.set_trainable(llm="full")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    batch = model.collate(conversations)
    history = []
    for step in range(steps):
        loss = model(batch, generator=torch.Generator().manual_seed(step))["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    return history


class CountingDecoder(TinyDecoder):
    calls = 0

    def generate(self, cond, reference=None, **kw):
        CountingDecoder.calls += 1
        self.last_reference = reference
        return super().generate(cond, reference, **kw)


def draw_conversation():
    return [{"role": "user", "content": "Draw it."},
            {"role": "assistant", "content": [{"type": "text", "text": "Sure: "}, {"type": "image", "data": test_media("image", 3)},
                                              {"type": "text", "text": " and "}, {"type": "audio", "data": test_media("audio", 1)}]}]


@pytest.fixture(scope="module")
def trained():
    """A tiny model taught one answer with text, an image and an audio clip."""
    torch.manual_seed(0)
    comps = tiny_components()
    comps["decoders"]["image"] = CountingDecoder("image")
    model = CoDi2Model.from_components(**comps)
    history = train(model, [draw_conversation()], steps=80)
    return model, history


def test_training_teaches_the_model_to_answer_with_text_and_two_media(trained):
    model, history = trained
    assert history[-1] < 0.25 * history[0]
    CountingDecoder.calls = 0
    answer = model.generate("Draw it.", seed=0)
    assert [type(p).__name__ for p in answer.parts] == ["str", "Media", "str", "Media", "str"]
    assert answer.text == "Sure:  and \n"  # the template ends a turn with a newline
    assert [m.modality for m in answer.media] == ["image", "audio"]
    assert CountingDecoder.calls == 1 and answer.finish_reason == "stop"
    assert answer.media[0].data.shape == (16, 16, 3)
    again = model.generate("Draw it.", seed=0)
    assert np.array_equal(again.media[1].data, answer.media[1].data), "generation is deterministic under a seed"


def test_max_media_and_max_new_tokens_bound_the_answer(trained):
    model, _ = trained
    answer = model.generate("Draw it.", max_media=1, seed=0)
    assert len(answer.media) == 1
    short = model.generate("Draw it.", max_new_tokens=3, seed=0)
    assert short.tokens == 3 and short.finish_reason == "length"


def test_fidelity_passes_the_input_media_as_reference():
    comps = tiny_components()
    comps["decoders"]["image"] = CountingDecoder("image", fidelity=True)
    model = CoDi2Model.from_components(**comps, fidelity=True)
    # Force the model to open an image span at once, whatever the hidden states are: a hook adds a
    # large constant to the image-open marker's logit (a weight row would depend on their sign).
    boost = torch.zeros(len(model.markers))
    boost[model.markers.open("image") - model.markers.vocab_size] = 1e4
    model.marker_head.register_forward_hook(lambda module, inputs, out: out + boost)
    model.llm.head.weight.data.zero_()
    model.generate("Edit {a}", media={"a": test_media("image", 5)}, max_new_tokens=1)
    (ref,) = comps["decoders"]["image"].last_reference
    assert np.array_equal(ref.data, test_media("image", 5).data)


def test_progress_reports_text_drafts_and_diffusion_steps():
    torch.manual_seed(0)
    model = make_model()
    seen = []
    answer = model.generate("Draw it.", seed=3, max_new_tokens=12, temperature=1.0, max_media=0,
                            progress=lambda event, a: seen.append((event, a.text + a.draft)))  # fmt: skip
    texts = [text for event, text in seen if event == "token"]
    assert len(texts) == answer.tokens and texts[-1] == answer.text and answer.text
    # the text only grows, but for a character whose bytes are not all sampled yet (U+FFFD for now)
    held = [t.rstrip("\ufffd") for t in texts]
    assert all(b.startswith(a) for a, b in itertools.pairwise(held)), texts
    # an image span forced at once: "render:image", then every diffusion step, then the item
    boost = torch.zeros(len(model.markers))
    boost[model.markers.open("image") - model.markers.vocab_size] = 1e4
    model.marker_head.register_forward_hook(lambda module, inputs, out: out + boost)
    events = []
    answer = model.generate("Draw it.", seed=0, max_new_tokens=1, steps=3,
                            progress=lambda event, a: events.append((event, a.render_steps, len(a.media))))  # fmt: skip
    assert events == [("token", None, 0), ("render:image", None, 0), ("step", (1, 3), 0), ("step", (2, 3), 0),
                      ("step", (3, 3), 0), ("media", None, 1)]  # fmt: skip
    assert answer.render_steps is None and len(answer.media) == 1


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = make_model()
    train(model, [draw_conversation()], steps=20)
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    fresh = CoDi2Model.from_pretrained(tmp_path / "ckpt", components=tiny_components())
    for key, value in model.trained_state_dict().items():
        torch.testing.assert_close(fresh.trained_state_dict()[key], value, msg=key)
    a, b = (m.generate("Draw it.", seed=1, max_new_tokens=24, temperature=1.0) for m in (model, fresh))
    assert a.text == b.text and all(np.array_equal(x.data, y.data) for x, y in zip(a.media, b.media))


def test_checkpoint_mismatch_names_the_tensor(tmp_path):
    make_model().save_pretrained(tmp_path / "small")
    bigger = {**tiny_components(), "encoders": [TinyEncoder(embed_dim=24)]}
    with pytest.raises(CheckpointError, match=r"core tensor 'in_proj\.\w+\.0\.weight': checkpoint shape \(32, 16\), model shape \(32, 24\)"):
        CoDi2Model.from_pretrained(tmp_path / "small", components=bigger)
    (tmp_path / "small" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="unreadable weights file"):
        CoDi2Model.from_pretrained(tmp_path / "small", components=tiny_components())
    with pytest.raises(CheckpointError, match="not a codi2 model directory"):
        CoDi2Model.from_pretrained(tmp_path / "nothing", components=tiny_components())


def test_conversation_feeds_generated_media_back_as_input(trained):
    model, _ = trained
    chat = model.chat()
    first = chat.ask("Draw it.", seed=0)
    assert len(first.media) == 2 and chat.last_media == first.media
    seq = model.sequence(chat.messages, training=False, add_generation_prompt=True)
    assert [s.part.source for s in seq.inputs] == first.media, "generated media re-enter the history as inputs"
    before = list(chat.messages)
    with pytest.raises(MessageError):
        chat.ask("Use {missing}")
    assert chat.messages == before, "a failed round leaves the history untouched"
    chat.ask("Now make it blue.", seed=0, max_new_tokens=4)
    assert [m.role for m in chat.messages] == ["user", "assistant", "user", "assistant"]


def test_a_target_without_a_decoder_and_oversized_inputs_are_clear_errors():
    model = CoDi2Model.from_components(encoders=[TinyEncoder()], llm=TinyLLM(), decoders={"image": TinyDecoder("image")}, max_input_tokens=40)
    conv = [{"role": "user", "content": "x"}, {"role": "assistant", "content": [{"type": "audio", "data": test_media("audio")}]}]
    with pytest.raises(MessageError, match="conversation 0: message 1: assistant audio .* no audio decoder"):
        model.collate([conv])
    with pytest.raises(MessageError, match="at most 40"):
        model.generate("x" * 100)


def test_encoder_modalities_are_checked():
    from codi2.core.config import ModelConfig

    class ImageOnly(TinyEncoder):
        modalities = ("image",)

    config = ModelConfig.from_dict({"encoders": [{"plugin": "tiny-encoder", "modalities": ["audio"]}], "llm": {"plugin": "tiny-llm"}})
    with pytest.raises(UnknownModalityError, match="encoder 'tiny-encoder' cannot encode 'audio'; it encodes image"):
        CoDi2Model(config, [ImageOnly()], TinyLLM(), {})
    model = CoDi2Model.from_components([ImageOnly()], TinyLLM())
    with pytest.raises(UnknownModalityError, match="no encoder for audio input; this model reads image"):
        model.generate("hear {a}", media={"a": test_media("audio")})


def test_a_model_built_through_the_registry_saves_a_config_that_rebuilds_it(tmp_path):
    from codi2.registry import Registry

    registry = Registry.create(entry_points=False)
    config = {
        "encoders": [{"plugin": "tiny-encoder", "options": {"embed_dim": 12}}],
        "llm": {"plugin": "tiny-llm"},
        "decoders": {"image": {"plugin": "tiny-decoder", "options": {"modality": "image"}},
                     "audio": {"plugin": "tiny-decoder", "options": {"modality": "audio", "tokens": 3}}},
    }
    model = assemble(config, registry=registry)
    assert model.slots["audio"].shape == (3, 32) and model.in_proj["image"][0].in_features == 12
    model.save_pretrained(tmp_path / "m")
    again = assemble(tmp_path / "m", registry=registry)
    for key, value in model.trained_state_dict().items():
        torch.testing.assert_close(again.trained_state_dict()[key], value)
    # the integrator's path writes the same kind of config
    composed = CoDi2Model.from_components(**tiny_components())
    composed.save_pretrained(tmp_path / "c")
    assert assemble(tmp_path / "c", registry=registry).decoders["audio"].modality == "audio"
