"""``hf-causal-lm`` with its default options on tiny random models of eleven architectures.

Each family is saved with ``save_pretrained`` and loaded back through the plugin: LoRA lands on
the attention projections whatever they are called, a few steps lower the loss, KV-cached
greedy decoding equals recomputing from scratch, the trained state round-trips, and a
multi-round conversation is laid out with the family's chat template (Phi-3's upstream one
ends every rendering with ``eos_token``).
"""

import pytest
import torch

from codi2.core.messages import normalize_messages
from codi2.assembly import assemble
from codi2.core.sequence import Markers, build_sequence
from codi2.errors import ConfigError, TemplateError
from codi2.plugins.llms import hf_causal_lm
from codi2.plugins.llms.hf_causal_lm_testing import FAMILIES, build_tiny_causal_lm
from codi2.registry import Registry

#: the attention projections ``lora.target_modules: auto`` must find in each family
ATTENTION = {
    "llama": {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"},
    "phi3": {"self_attn.qkv_proj", "self_attn.o_proj"},
    "gpt2": {"attn.c_attn", "attn.c_proj"},
    "gpt_neox": {"attention.query_key_value", "attention.dense"},
    "falcon": {"self_attention.query_key_value", "self_attention.dense"},
}
for _family in ("mistral", "qwen2", "qwen3", "gemma2", "gemma3", "olmo"):
    ATTENTION[_family] = ATTENTION["llama"]

TEXT = "the cat sat on the mat and looked at the red circle."


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {family: build_tiny_causal_lm(root / family, family) for family in FAMILIES}


def load(directory, **options):
    return hf_causal_lm.load(hf_causal_lm.HFCausalLMOptions(model=str(directory), **options))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_lora_trains_caches_and_round_trips(family, family_dirs, one_torch_thread):
    torch.manual_seed(0)
    llm = load(family_dirs[family])  # every option at its default
    assert set(llm.lora_targets) == ATTENTION[family]
    state = llm.trained_state_dict()
    adapted = {".".join(key.split(".lora_")[0].split(".")[-2:]) for key in state}  # block.layer of each adapter
    assert adapted == ATTENTION[family], "every attention projection carries an adapter, nothing else does"
    assert all(p.requires_grad == ("lora_" in n) for n, p in llm.named_parameters())

    ids = torch.tensor([llm.tokenize(TEXT)])
    llm.train()
    optimizer = torch.optim.AdamW([p for p in llm.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(4):
        logits = llm(llm.embed(ids[:, :-1])).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[0, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses
    llm.eval()

    with torch.no_grad():  # greedy decoding with the KV cache equals recomputing everything
        prompt = ids[:, :6]
        out = llm(llm.embed(prompt))
        cached, past, step_logits = [], out.past, out.logits[:, -1]
        for _ in range(5):
            nxt = step_logits.argmax(-1, keepdim=True)
            cached.append(int(nxt))
            out = llm(llm.embed(nxt), past=past)
            past, step_logits = out.past, out.logits[:, -1]
        full = llm(llm.embed(torch.cat([prompt, torch.tensor([cached])], 1))).logits
    assert full[0, 5:-1].argmax(-1).tolist() == cached
    torch.testing.assert_close(step_logits, full[:, -1], atol=1e-4, rtol=1e-4)

    saved = {k: v.clone() for k, v in llm.trained_state_dict().items()}
    again = load(family_dirs[family])
    again.load_trained_state_dict(saved)
    with torch.no_grad():
        torch.testing.assert_close(again(again.embed(ids)).logits, llm(llm.embed(ids)).logits, atol=1e-5, rtol=0)


def conversation():
    return normalize_messages([
        {"role": "user", "content": "hello world"},
        {"role": "assistant", "content": "the cat sat"},
        {"role": "user", "content": "a blue square"},
        {"role": "assistant", "content": "a red circle"},
    ])  # fmt: skip


def words(text):
    return text.split()


def layout(llm, messages, *, training, add_generation_prompt=False):
    return build_sequence(
        messages, tokenize=llm.tokenize, render=llm.render_chat, markers=Markers(llm.vocab_size),
        input_tokens=lambda m: 1, output_tokens=lambda m: 1, training=training, add_generation_prompt=add_generation_prompt,
    )


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_chat_template_splits_multi_round_conversations(family, family_dirs):
    llm = load(family_dirs[family], trainable="frozen")
    messages = conversation()
    chat = [{"role": m.role, "content": m.parts[0].text} for m in messages]
    seq = layout(llm, messages, training=True)
    whole = llm.render_chat(chat, add_generation_prompt=False)
    # (pieces are tokenized apart, and this SentencePiece-style tokenizer marks each piece's start)
    assert words(llm.detokenize(seq.ids)) == words(llm.detokenize(llm.tokenize(whole))), "the pieces add up to the whole"
    targets = "".join(llm.detokenize([i for i, label in zip(seq.ids, seq.labels) if label]).split())
    assert "thecatsat" in targets and "aredcircle" in targets
    assert "hello" not in targets and "blue" not in targets, "user turns are not targets"
    # a second round at inference: the history plus a generation prompt
    prompt = layout(llm, messages[:3], training=False, add_generation_prompt=True)
    rendered = llm.render_chat(chat[:3], add_generation_prompt=True)
    assert words(llm.detokenize(prompt.ids)) == words(llm.detokenize(llm.tokenize(rendered)))


def test_phi3_upstream_template_trains_only_through_the_closing_eos(family_dirs):
    llm = load(family_dirs["phi3"], trainable="frozen")
    seq = layout(llm, conversation(), training=True)
    eos, end = llm.tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|end|>"])
    assert seq.ids[-1] == eos and seq.labels[-1], "the last answer learns the closing eos"
    assert seq.ids.count(eos) == 1, "the eos of shorter renderings is not left inside the conversation"
    first_answer_end = seq.ids.index(end, seq.ids.index(end) + 1)  # the user's <|end|>, then the answer's
    assert seq.labels[first_answer_end], "an earlier answer learns to stop with <|end|>"


def test_phi3_multi_round_chat_through_the_model(family_dirs, one_torch_thread):
    config = {
        "encoders": [{"plugin": "tiny-encoder"}],
        "llm": {"plugin": "hf-causal-lm", "options": {"model": str(family_dirs["phi3"]), "trainable": "frozen"}},
        "decoders": {},
        "generation": {"max_new_tokens": 3},
    }
    torch.manual_seed(0)
    model = assemble(config, registry=Registry.create(entry_points=False))
    chat = model.chat()
    chat.ask("hello world")
    answer = chat.ask("a blue square")  # the second round renders the first answer's history
    assert isinstance(answer.text, str)


#: Qwen3's way: only the last answer carries an (empty) thinking block, so a later turn
#: rewrites an earlier one (a reduced form of the upstream template's non-thinking branch)
THINK_ON_LAST = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['role'] == 'assistant' and loop.last %}<think>\n\n</think>\n\n{% endif %}"
    "{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_template_that_rewrites_earlier_turns_is_a_clear_error_in_training_only(family_dirs):
    counting = "{% for m in messages %}[{{ messages | length }}] {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    for template in (counting, THINK_ON_LAST):
        llm = load(family_dirs["qwen3"], trainable="frozen", chat_template=template)
        with pytest.raises(TemplateError, match="not prefix-stable at message [01]: .*not only closing text"):
            layout(llm, conversation(), training=True)
        # generating needs no turn boundaries: the whole rendering is the prompt
        prompt = layout(llm, conversation()[:3], training=False, add_generation_prompt=True)
        chat = [{"role": m.role, "content": m.parts[0].text} for m in conversation()[:3]]
        assert prompt.ids == llm.tokenize(llm.render_chat(chat, add_generation_prompt=True))
        assert not any(prompt.labels)


def test_phi3_small_template_ends_the_same_way(family_dirs):
    phi3_small = (
        "{{ bos_token }}{% for message in messages %}{{'<|' + message['role'] + '|>' + '\\n' + message['content'] + "
        "'<|end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
    )
    llm = load(family_dirs["phi3"], trainable="frozen", chat_template=phi3_small)
    seq = layout(llm, conversation(), training=True)
    assert seq.ids.count(llm.tokenizer.convert_tokens_to_ids("<|endoftext|>")) == 1 and seq.labels[-1]


def test_explicit_targets_partial_match_warns_and_no_match_errors(family_dirs):
    llama_names = ["q_proj", "k_proj", "v_proj", "o_proj"]
    with pytest.warns(UserWarning, match=r"q_proj, k_proj, v_proj match no module.*self_attn\.o_proj, self_attn\.qkv_proj"):
        phi = load(family_dirs["phi3"], lora={"target_modules": llama_names})
    assert phi.lora_targets == llama_names
    with pytest.raises(ConfigError, match=r"GPT2LMHeadModel.*match no module; the attention projections are attn\.c_attn, attn\.c_proj"):
        load(family_dirs["gpt2"], lora={"target_modules": llama_names})
    # frozen never touches LoRA, so a loaded-to-generate model needs no matching targets
    assert not load(family_dirs["gpt2"], trainable="frozen", lora={"target_modules": llama_names}).has_lora
    assert load(family_dirs["gpt2"], lora={"target_modules": ["c_attn"]}).lora_targets == ["c_attn"]


def test_peft_defaults_and_their_absence(family_dirs):
    assert load(family_dirs["llama"], lora={"target_modules": "peft"}).lora_targets == ["q_proj", "v_proj"]
    with pytest.raises(ConfigError, match=r"peft has no default for this model type.*self_attn\.qkv_proj"):
        load(family_dirs["phi3"], lora={"target_modules": "peft"})
    with pytest.raises(ValueError, match="at least one module"):
        hf_causal_lm.HFCausalLMOptions(lora={"target_modules": []})


@pytest.mark.parametrize("policy", ["frozen", "lora"])
def test_instruct_stage_trains_the_llm_as_its_trainable_option_says(policy, family_dirs, tmp_path, one_torch_thread):
    import json

    from safetensors.torch import load_file

    from codi2.training.trainer import train

    (tmp_path / "train.jsonl").write_text(json.dumps({"messages": [
        {"role": "user", "content": "hello world"}, {"role": "assistant", "content": "the cat sat"},
    ]}) + "\n")  # fmt: skip
    config = {
        "model": {"encoders": [{"plugin": "tiny-encoder"}],
                  "llm": {"plugin": "hf-causal-lm", "options": {"model": str(family_dirs["gpt2"]), "trainable": policy}}},
        "data": {"train": str(tmp_path / "train.jsonl")}, "stage": "instruct", "max_steps": 1,
        "output_dir": str(tmp_path / "run"), "progress": False,
    }  # fmt: skip
    result = train(config, Registry.create(entry_points=False))
    saved = load_file(str(result.final_dir / "model.safetensors"))
    lora = [k for k in saved if "lora_" in k]
    assert bool(lora) == (policy == "lora"), "trainable: frozen means no LoRA in the instruct stage either"


def test_real_size_lora_targets_on_meta(family_dirs):
    """transformers' default configurations are real sizes (Llama 7B, Phi-3-mini, GPT-2 small,
    GPT-NeoX 20B, Falcon 7B): built on ``meta``, auto targets and adapter sizes come out right."""
    expected = {  # model_type: (hidden size, adapted layers, LoRA parameters at r=32)
        "llama": (4096, ATTENTION["llama"], 32 * 4 * 2 * 32 * 4096),
        "phi3": (3072, ATTENTION["phi3"], 32 * 32 * ((3072 + 3 * 3072) + (3072 + 3072))),
        "gpt2": (768, ATTENTION["gpt2"], 12 * 32 * ((768 + 3 * 768) + (768 + 768))),
        "falcon": (4544, ATTENTION["falcon"], None),
        "gpt_neox": (6144, ATTENTION["gpt_neox"], None),
    }
    tokenizer = str(family_dirs["llama"])
    for model_type, (hidden, targets, lora_params) in expected.items():
        llm = load(tokenizer, tokenizer=tokenizer, init="random", device="meta", config={"model_type": model_type})
        assert llm.hidden_size == hidden and set(llm.lora_targets) == targets, model_type
        if lora_params is not None:
            assert sum(v.numel() for v in llm.trained_state_dict().values()) == lora_params, model_type


def test_every_configuration_in_the_docs_validates():
    """docs/llms.md's YAML examples are valid hf-causal-lm options (a block of one-line
    ``llm:`` / ``lora:`` examples is read line by line)."""
    import re
    from pathlib import Path

    import yaml

    text = (Path(__file__).parents[1] / "docs" / "llms.md").read_text()
    documents = []
    for block in re.findall(r"```yaml\n(.*?)```", text, re.S):
        lines = [line for line in block.splitlines() if line and not line.startswith("#")]
        one_per_line = len(lines) > 1 and all(line.startswith(("llm: {", "lora: {")) for line in lines)
        documents.extend(lines if one_per_line else [block])
    for document in documents:
        data = yaml.safe_load(document)
        options = data["llm"].get("options", {}) if "llm" in data else {"lora": data["lora"]}
        hf_causal_lm.HFCausalLMOptions.model_validate(options)
    assert len(documents) >= 12
