"""The ``hf-causal-lm`` plugin on a tiny Llama saved to disk and loaded back the real way."""

import shutil
import subprocess
import sys

import pytest
import torch

from codi2.core.interfaces import LLM
from codi2.errors import CheckpointError, ComponentLoadError, ConfigError, TemplateError
from codi2.plugins.llms import hf_causal_lm
from codi2.plugins.llms.hf_causal_lm_testing import build_tiny_llama
from codi2.registry.components import ComponentSpec
from codi2.testing import check_llm


def registered_spec():
    """The component exactly as the plugin registers it."""
    specs = []

    def register(name, *, load, options, description="", **extra):
        specs.append(ComponentSpec(name, "llm", load, options, description))

    hf_causal_lm.codi2_register_llms(register=register)
    (spec,) = specs
    return spec


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def load(tiny_dir):
    spec = registered_spec()

    def _load(**options):
        options.setdefault("model", str(tiny_dir))
        return spec.load(options)

    return _load


def test_plugin_module_imports_no_torch():
    code = "import sys, codi2.plugins.llms.hf_causal_lm; assert not {'torch', 'transformers', 'peft'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_options_are_validated():
    spec = registered_spec()
    assert spec.name == "hf-causal-lm"
    with pytest.raises(ConfigError, match="lora_rank"):
        spec.validate_options({"lora_rank": 8})
    with pytest.raises(ConfigError, match="init='random'"):
        spec.validate_options({"device": "meta"})
    assert spec.validate_options({}).lora.target_modules == "auto"


def test_loads_with_the_checkpoint_vocabulary_and_text_round_trip(load, tiny_dir):
    llm = load(trainable="frozen")
    assert isinstance(llm, LLM) and isinstance(llm, torch.nn.Module)
    assert llm.vocab_size == len(llm.tokenizer) == 419 and llm.hidden_size == 64
    assert llm.eos_token_ids == (2,)
    ids = llm.tokenize("hello world")
    assert ids[0] != 1 and 2 not in ids, "tokenize adds no BOS/EOS"
    specials = llm.tokenize("<s>hello</s>")
    assert specials[0] == 1 and specials[-1] == 2, "special tokens written in text are parsed"
    text = "Zebras ü: unseen text 42!"
    assert llm.detokenize(llm.tokenize(text)) == text, "byte fallback round-trips any text"
    assert llm.detokenize(llm.tokenize("<s>hello world</s>")) == "hello world", "specials are dropped"


def test_render_chat_llama2_template_system_prompt_and_fallback(load, tiny_dir, tmp_path):
    llm = load(system_prompt="Be brief.")
    chat = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "draw"},
    ]
    assert llm.render_chat(chat, add_generation_prompt=True) == (
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nhi [/INST] hello </s><s>[INST] draw [/INST]"
    )
    with pytest.raises(TemplateError, match="alternate"):
        llm.render_chat([{"role": "assistant", "content": "x"}], add_generation_prompt=False)

    bare = tmp_path / "bare"
    shutil.copytree(tiny_dir, bare)
    (bare / "chat_template.jinja").unlink()
    plain = load(model=str(bare))
    assert plain.render_chat(chat[:2], add_generation_prompt=True) == "<s>user: hi\nassistant: hello</s>\nassistant:"
    template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
    custom = load(model=str(bare), chat_template=template)
    assert custom.render_chat(chat[:1], add_generation_prompt=False) == "<user>hi"


def test_forward_hidden_is_final_norm_output_and_kv_cache_matches(load):
    llm = load(trainable="frozen")
    captured = {}
    hook = llm.hf_model.model.norm.register_forward_hook(lambda module, args, out: captured.update(norm=out))
    emb = llm.embed(torch.tensor([llm.tokenize("the cat sat on the mat")]))
    n = emb.shape[1]
    with torch.no_grad():
        full = llm(emb)
        assert full.logits.shape == (1, n, 419) and full.hidden.shape == (1, n, 64)
        assert torch.equal(full.hidden, captured["norm"])
        hook.remove()
        head = llm(emb[:, :-3])
        tail = llm(emb[:, -3:], past=head.past)
    torch.testing.assert_close(tail.logits[:, -1], full.logits[:, -1], atol=1e-5, rtol=0)
    torch.testing.assert_close(tail.hidden, full.hidden[:, -3:], atol=1e-5, rtol=0)


def test_left_padding_gives_the_unpadded_result(load):
    llm = load(trainable="frozen")
    short = llm.embed(torch.tensor([llm.tokenize("a red circle")]))
    pad = torch.zeros(1, 3, 64)
    other = llm.embed(torch.tensor([llm.tokenize("a blue square, a green")[: short.shape[1] + 3]]))
    batch = torch.cat([torch.cat([pad, short], 1), other])
    mask = torch.ones(2, batch.shape[1], dtype=torch.long)
    mask[0, :3] = 0
    with torch.no_grad():
        alone = llm(short)
        padded = llm(batch, attention_mask=mask)
        # continue both with a new-positions-only mask: the remembered padding still applies
        step = llm.embed(torch.tensor([[300], [300]]))
        nxt = llm(step, attention_mask=torch.ones(2, 1, dtype=torch.long), past=padded.past)
        alone_next = llm(step[:1], past=alone.past)
    torch.testing.assert_close(padded.logits[0, -1], alone.logits[0, -1], atol=1e-5, rtol=0)
    torch.testing.assert_close(nxt.logits[0, -1], alone_next.logits[0, -1], atol=1e-5, rtol=0)


def perturb_(params):
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in params:
            p.add_(0.1 * torch.randn(p.shape, generator=gen))


def test_lora_trains_only_adapters_and_round_trips(load):
    lora = {"r": 4, "alpha": 8, "dropout": 0.0}
    llm = load(lora=lora)
    trainable = {n for n, p in llm.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    # layers * modules * (A + B) * r * hidden
    assert sum(p.numel() for n, p in llm.named_parameters() if n in trainable) == 2 * 4 * 2 * 4 * 64

    emb = llm.embed(torch.tensor([llm.tokenize("hello world")]))
    llm.train()
    llm(emb).logits.sum().backward()
    grads = {n: p.grad for n, p in llm.named_parameters() if p.grad is not None}
    assert set(grads) == trainable and any(g.abs().sum() > 0 for g in grads.values())

    llm.set_trainable("frozen")
    llm.set_trainable("lora")  # idempotent: no second set of adapters
    assert {n for n, p in llm.named_parameters() if p.requires_grad} == trainable
    perturb_(p for n, p in llm.named_parameters() if n in trainable)
    llm.eval()
    state = {k: v.clone() for k, v in llm.trained_state_dict().items()}
    assert state and all("lora_" in k for k in state)

    fresh = load(trainable="frozen", lora=lora)  # no adapters yet: loading injects them
    assert not fresh.has_lora
    with torch.no_grad():
        before = fresh(emb).logits
        fresh.load_trained_state_dict(state)
        assert fresh.policy == "lora"
        torch.testing.assert_close(fresh(emb).logits, llm(emb).logits, atol=0, rtol=0)
    assert not torch.allclose(before, fresh(emb).logits.detach())

    with pytest.raises(CheckpointError, match="shape .* options lora.r is 8"):
        load(lora={"r": 8}).load_trained_state_dict(state)
    with pytest.raises(CheckpointError, match="unexpected tensor 'bogus.lora_A.weight'"):
        fresh.load_trained_state_dict({**state, "bogus.lora_A.weight": torch.zeros(1)})
    first, *rest = state
    with pytest.raises(CheckpointError, match=f"lacks tensor '{first}'"):
        fresh.load_trained_state_dict({k: state[k] for k in rest})
    with pytest.raises(ConfigError, match="lora.target_modules"):
        load(lora={"target_modules": ["no_such_proj"]})


def test_full_policy_merges_adapters_and_round_trips(load):
    llm = load(lora={"r": 4, "dropout": 0.0})
    perturb_(p for n, p in llm.named_parameters() if "lora_B" in n)
    emb = llm.embed(torch.tensor([llm.tokenize("a green triangle")]))
    with torch.no_grad():
        adapted = llm(emb).logits
        llm.set_trainable("full")
        torch.testing.assert_close(llm(emb).logits, adapted, atol=1e-5, rtol=0)  # merge is exact
    assert not llm.has_lora and all(p.requires_grad for p in llm.parameters())
    perturb_(llm.parameters())
    state = {k: v.clone() for k, v in llm.trained_state_dict().items()}
    assert set(state) == {n for n, _ in llm.hf_model.named_parameters()}

    fresh = load()  # has LoRA adapters: a full state replaces them
    with torch.no_grad():
        fresh.load_trained_state_dict(state)
        torch.testing.assert_close(fresh(emb).logits, llm(emb).logits, atol=0, rtol=0)
    assert fresh.policy == "full" and not fresh.has_lora
    with pytest.raises(CheckpointError, match="'lm_head.weight' has shape"):
        fresh.load_trained_state_dict({**state, "lm_head.weight": torch.zeros(3, 3)})

    frozen = load(trainable="frozen")
    assert frozen.trained_state_dict() == {} and not any(p.requires_grad for p in frozen.parameters())
    frozen.load_trained_state_dict({})


def test_gradient_checkpointing_trains_without_cache(load):
    llm = load(gradient_checkpointing=True, lora={"r": 2})
    emb = llm.embed(torch.tensor([llm.tokenize("play the sound of rain")])).detach().requires_grad_()
    llm.train()
    out = llm(emb)
    assert out.past is None
    out.hidden.float().pow(2).mean().backward()  # as the feature-regression loss does
    assert all(p.grad is not None for n, p in llm.named_parameters() if "lora_A" in n)
    assert emb.grad is not None and emb.grad.abs().sum() > 0, "gradients reach the projected inputs"
    llm.eval()
    with torch.no_grad():
        assert llm(emb).past is not None


def test_bfloat16_takes_float32_embeddings(load):
    llm = load(dtype="bfloat16", trainable="frozen")
    assert next(llm.parameters()).dtype == torch.bfloat16
    with torch.no_grad():
        out = llm(torch.randn(1, 4, 64))
    assert out.logits.dtype == torch.bfloat16 and out.hidden.shape == (1, 4, 64)


def test_load_failures_name_the_checkpoint(load, tiny_dir, tmp_path):
    offline = r"llm 'hf-causal-lm': cannot load 'nobody/no-such-llm': .*HF_HUB_OFFLINE.*; download it"
    with pytest.raises(ComponentLoadError, match=offline) as info:
        load(model="nobody/no-such-llm")
    assert info.value.__cause__ is None and info.value.__suppress_context__
    with pytest.raises(ComponentLoadError, match="cannot load '/no/such/dir': no such directory; check the path"):
        load(model="/no/such/dir", tokenizer=str(tiny_dir))
    with pytest.raises(ComponentLoadError, match="cannot load tokenizer '/no/tokenizer'"):
        load(tokenizer="/no/tokenizer")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ComponentLoadError, match="cannot load '.*broken'.*save_pretrained"):
        load(model=str(broken))


def test_random_init_builds_llama2_7b_on_meta(tiny_dir):
    llama2_7b = {
        "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096,
    }
    options = {"init": "random", "config": llama2_7b, "device": "meta", "tokenizer": str(tiny_dir)}
    llm = registered_spec().load(options)
    assert llm.hidden_size == 4096 and llm.vocab_size == 32000
    assert next(llm.parameters()).device.type == "meta"
    assert sum(p.numel() for p in llm.parameters() if p.requires_grad) == 32 * 4 * 2 * 32 * 4096  # LoRA r=32
    out = llm(torch.zeros(1, 5, 4096, device="meta"))
    assert out.logits.shape == (1, 5, 32000) and out.hidden.shape == (1, 5, 4096)


def test_random_init_overrides_the_stored_config(tiny_dir):
    llm = registered_spec().load({"model": str(tiny_dir), "init": "random", "config": {"num_hidden_layers": 1}})
    assert llm.hf_model.config.num_hidden_layers == 1 and llm.vocab_size == 419


def test_contract_kit(load):
    check_llm(load())
