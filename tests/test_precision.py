"""Mixed precision and memory: bf16 autocast training on the CPU against fp32, and gradient
checkpointing through the whole model (LLM, denoiser, projectors) giving the same gradients."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_training import make_registry, run_config, totals, write_dataset

from codi2.assembly import assemble
from codi2.core.types import Media
from codi2.registry import Registry
from codi2.training.stages import enable_gradient_checkpointing
from codi2.training.trainer import train

torch.set_num_threads(1)

#: bf16 keeps 8 bits of mantissa: each loss term of each step under autocast stays within this
#: relative distance of fp32's over a short run (measured on this run: at most 3e-4 on the
#: total, 7e-3 on the feature term; the bar leaves room for other CPUs' bf16 kernels)
BF16_RTOL = 0.02


def _bf16_child(config_path: str, out: str) -> None:
    """In a fresh process: accelerate fixes mixed_precision for a process's lifetime."""
    torch.set_num_threads(1)
    result = train(json.loads(Path(config_path).read_text()), make_registry())
    Path(out).write_text(json.dumps(result.history))


def test_bf16_autocast_training_on_the_cpu_follows_fp32_within_tolerance(tmp_path):
    data = write_dataset(tmp_path / "data", n=6)
    config = tmp_path / "bf16.json"
    config.write_text(json.dumps(run_config(tmp_path / "bf16", data, max_steps=8, mixed_precision="bf16")))
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_precision; "
            f"test_precision._bf16_child({str(config)!r}, {str(tmp_path / 'bf16.out')!r})")
    child = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    fp32 = train(run_config(tmp_path / "fp32", data, max_steps=8), make_registry())
    _, err = child.communicate(timeout=240)
    assert child.returncode == 0, err[-3000:]
    a, b = totals(fp32.history), totals(json.loads((tmp_path / "bf16.out").read_text()))
    assert not np.array_equal(a, b), "autocast ran: bf16 rounding shows in the losses"
    np.testing.assert_allclose(b, a, rtol=BF16_RTOL, atol=1e-3)
    assert b[-1, 3] < b[0, 3], "bf16 training learns"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from codi2.plugins.decoders.testing_components import build_tiny_sd_unclip
    from codi2.plugins.llms.hf_causal_lm_testing import build_tiny_llama

    root = tmp_path_factory.mktemp("stack")
    local = {"device": "cpu", "local_files_only": True}
    config = {
        "encoders": [{"plugin": "tiny-encoder"}],
        "llm": {"plugin": "hf-causal-lm", "options": {"model": str(build_tiny_llama(root / "llm")), "trainable": "lora", **local}},
        "decoders": {"image": {"plugin": "sd-unclip", "options": {"model": str(build_tiny_sd_unclip(root / "sd")), "steps": 2, **local}}},
    }
    torch.manual_seed(0)
    return assemble(config, registry=Registry.create(entry_points=False))


def _gradients(model, batch):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)  # the same dropout masks (LoRA dropout) in both runs
    losses = model(batch, generator=torch.Generator().manual_seed(0))
    losses["total"].backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, losses


def test_gradient_checkpointing_through_the_whole_model_gives_the_same_gradients(stack):
    model = stack
    model.set_trainable(llm="lora", decoders="full")  # the denoiser trains too: its gradients are compared
    model.train()
    rng = np.random.default_rng(0)
    image = Media("image", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    batch = model.collate([[
        {"role": "user", "content": [{"type": "text", "text": "Flip "}, {"type": "image", "data": image}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Here:"}, {"type": "image", "data": image}]},
    ]])
    plain, plain_losses = _gradients(model, batch)
    parts = enable_gradient_checkpointing(model)
    assert parts[:2] == ["llm", "decoders.image"] and {"in_proj.image", "out_proj.image"} <= set(parts)
    assert model.llm.gradient_checkpointing and model.decoders["image"].unet.is_gradient_checkpointing
    checkpointed, losses = _gradients(model, batch)
    for key in ("text", "feature", "diffusion"):
        torch.testing.assert_close(losses[key], plain_losses[key], rtol=0, atol=0)
    assert plain.keys() == checkpointed.keys()
    assert any("lora_" in n for n in plain) and any("decoders.image.unet" in n for n in plain) and any("in_proj" in n for n in plain)
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-7, msg=name)
