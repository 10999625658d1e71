"""The trainer on tiny real components: learning, gradient routing, stages, exact resume,
SIGKILL safety, checkpoints and the feature cache."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict

from codi2.assembly import assemble
from codi2.core.model import CoDi2Model
from codi2.errors import CheckpointError, ConfigError, DatasetError
from codi2.registry import Registry, hookimpl
from codi2.testing import TinyDecoder, TinyEncoder, TinyLLM, test_media
from codi2.training.cache import FeatureCache
from codi2.training.checkpoint import latest_checkpoint, list_checkpoints, load_tree, save_tree
from codi2.training.config import TrainConfig
from codi2.training.trainer import LRFactor, apply_stage, train

torch.set_num_threads(1)  # tiny models: one thread is fastest and makes runs bit-identical across processes


# --- an in-test plugin with the tiny components -------------------------------------------------------


class TinyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = 0
    delay: float = 0.0  # seconds slept per diffusion loss: lets a test kill a run mid-way


ENCODE_CALLS: list[int] = []


class CountingEncoder(TinyEncoder):
    def encode(self, items, modality):
        ENCODE_CALLS.append(len(items))
        return super().encode(items, modality)


class SlowDecoder(TinyDecoder):
    delay = 0.0

    def diffusion_loss(self, cond, media, reference=None, generator=None):
        time.sleep(self.delay)
        return super().diffusion_loss(cond, media, reference, generator)


def _decoder(options):
    decoder = SlowDecoder("image", seed=options.seed)
    decoder.delay = options.delay
    return decoder


class TinyPlugin:
    @hookimpl
    def codi2_register_encoders(self, register):
        register("tiny", load=lambda o: CountingEncoder(16, seed=o.seed), options=TinyOptions)

    @hookimpl
    def codi2_register_llms(self, register):
        register("tiny-llm", load=lambda o: TinyLLM(32, seed=o.seed), options=TinyOptions)

    @hookimpl
    def codi2_register_decoders(self, register):
        register("tiny-image", load=_decoder, options=TinyOptions)


def make_registry():
    registry = Registry.create(builtins=False, entry_points=False)
    registry.register_plugin(TinyPlugin(), name="tiny-test")
    return registry


def model_config(delay=0.0):
    return {"encoders": [{"plugin": "tiny"}], "llm": {"plugin": "tiny-llm"},
            "decoders": {"image": {"plugin": "tiny-image", "options": {"delay": delay}}}}


def write_dataset(root: Path, n=6, name="train.jsonl") -> Path:
    """n 'invert this image' conversations with their PNGs, paths relative to the JSONL."""
    (root / "media").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        image = test_media("image", i).data
        Image.fromarray(image).save(root / "media" / f"in{i}.png")
        Image.fromarray(255 - image).save(root / "media" / f"out{i}.png")
        lines.append(json.dumps({"id": i, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Invert "}, {"type": "image", "path": f"media/in{i}.png"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Done: "}, {"type": "image", "path": f"media/out{i}.png"}]},
        ]}))
    (root / name).write_text("\n".join(lines) + "\n")
    return root / name


def run_config(root: Path, data: Path, **settings) -> dict:
    config = {"model": model_config(), "data": {"train": str(data)}, "stage": "custom", "trainable": {"llm": "full"},
              "optimizer": {"lr": 3e-3}, "schedule": {"kind": "cosine", "warmup_steps": 2}, "batch_size": 2,
              "max_steps": 12, "log_every": 2, "output_dir": str(root / "run"), "progress": False, "seed": 3}
    config.update(settings)
    return config


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data"))


def totals(history):
    return np.array([[h[k] for k in ("text", "feature", "diffusion", "total")] for h in history])


# --- learning ------------------------------------------------------------------------------------------


def test_loss_decreases_and_the_run_writes_metrics_checkpoints_and_a_loadable_model(tmp_path, data):
    eval_data = write_dataset(tmp_path / "eval", n=2, name="eval.jsonl")
    config = run_config(tmp_path, data, max_steps=24, save_every=8, keep_last=2, eval_every=8)
    config["data"]["eval"] = str(eval_data)
    result = train(config, make_registry())
    loss = [h["total"] for h in result.history]
    assert len(loss) == 24 and np.mean(loss[-4:]) < 0.5 * np.mean(loss[:4])
    assert all(h["lr"] > 0 for h in result.history[:-1]) and result.history[0]["lr"] < result.history[2]["lr"], "warm-up"

    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train_records] == list(range(2, 25, 2))
    assert {"text", "feature", "diffusion", "total", "lr", "samples_per_s"} <= set(train_records[0])
    evals = [r for r in records if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [8, 16, 24] and evals[-1]["total"] < evals[0]["total"] and evals[0]["samples"] == 2

    assert [step for step, _ in list_checkpoints(tmp_path / "run" / "checkpoints")] == [16, 24], "keep_last=2"
    latest = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert latest.name == "step-000024"
    assert not [p for p in latest.rglob("*") if p.suffix in (".pt", ".pth", ".bin", ".pkl")], "nothing pickled"
    final = assemble(result.final_dir, registry=make_registry())
    for key, value in result_model_state(result).items():
        torch.testing.assert_close(final.trained_state_dict()[key], value, msg=key)


def result_model_state(result):
    from safetensors.torch import load_file

    return load_file(str(result.final_dir / "model.safetensors"))


def test_diffusion_loss_alone_trains_the_llm_through_the_output_projector(tmp_path, data):
    registry = make_registry()
    model = assemble(model_config(), registry=registry)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = run_config(tmp_path, data, max_steps=1, loss={"text": False, "feature": False}, optimizer={"lr": 1e-2, "max_grad_norm": None})
    result = train(config, registry, model=model)
    assert result.history[0]["text"] == 0 and result.history[0]["feature"] == 0 and result.history[0]["diffusion"] > 0
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert any(n.startswith("llm.blocks.") for n in changed), "the diffusion loss must reach the LLM's weights"
    assert {"slots.image"} <= changed and any(n.startswith("out_proj.image") for n in changed)
    assert not any(n.startswith(("llm.head", "marker_head", "decoders.", "encoders.")) for n in changed), sorted(changed)


def test_stages_choose_what_trains():
    def trainable(stage, fidelity=False, **extra):
        model = CoDi2Model.from_components(encoders=[TinyEncoder()], llm=TinyLLM(), decoders={"image": TinyDecoder("image", fidelity=fidelity)}, fidelity=fidelity)
        config = TrainConfig.from_dict({"model": {}, "data": {"train": "x.jsonl"}, "stage": stage, "max_steps": 1, **extra})
        apply_stage(model, config.trainable_for(fidelity=fidelity))
        return {n.split(".")[0] + ("." + n.split(".")[1] if n.startswith(("llm", "decoders")) else "") for n, p in model.named_parameters() if p.requires_grad}

    assert trainable("align") == {"in_proj", "marker_embeddings", "marker_head"}
    assert trainable("output") == {"out_proj", "slots"}
    assert trainable("output", fidelity=True) == {"out_proj", "slots", "decoders.image"}
    assert trainable("instruct") == {"in_proj", "out_proj", "slots", "marker_embeddings", "marker_head", "llm.head"}  # tiny "lora"
    assert trainable("custom", trainable={"input_projectors": False, "output_side": False, "markers": False, "llm": "full"}) == {"llm.embedding", "llm.position", "llm.blocks", "llm.norm", "llm.head"}
    with pytest.raises(ConfigError, match="stage 'custom' needs 'trainable'"):
        TrainConfig.from_dict({"model": {}, "data": {"train": "x"}, "stage": "custom", "max_steps": 1})
    with pytest.raises(ConfigError, match="give max_steps or epochs"):
        TrainConfig.from_dict({"model": {}, "data": {"train": "x"}})
    with pytest.raises(ConfigError, match="optimizer.lrr"):
        TrainConfig.from_dict({"model": {}, "data": {"train": "x"}, "max_steps": 1, "optimizer": {"lrr": 1}})


def test_lr_schedule():
    cosine = LRFactor("cosine", warmup=4, total=14)
    assert [round(cosine(s), 3) for s in (0, 3, 4, 9, 14)] == [0.2, 0.8, 1.0, 0.5, 0.0]
    assert LRFactor("linear", 0, 10)(5) == 0.5 and LRFactor("constant", 2, 10)(9) == 1.0


# --- resume ------------------------------------------------------------------------------------------------


def test_resume_continues_the_same_loss_curve(tmp_path, data):
    straight = train(run_config(tmp_path / "a", data, grad_accumulation=2), make_registry())
    first = train(run_config(tmp_path / "b", data, grad_accumulation=2), make_registry(), stop_after=5)
    assert first.final_dir is None and first.last_checkpoint.name == "step-000005"
    resumed = train(run_config(tmp_path / "b", data, grad_accumulation=2), make_registry(), resume=tmp_path / "b" / "run")
    assert [h["step"] for h in resumed.history] == list(range(6, 13))
    np.testing.assert_allclose(totals(first.history + resumed.history), totals(straight.history), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose([h["lr"] for h in resumed.history], [h["lr"] for h in straight.history[5:]], rtol=1e-12)
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)), "metrics.jsonl holds each step once after a resume"
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train(run_config(tmp_path / "b", data), make_registry())

    train(run_config(tmp_path / "c", data, grad_accumulation=2, max_steps=8), make_registry(), stop_after=5)
    longer = train(run_config(tmp_path / "c", data, grad_accumulation=2), make_registry(), resume="auto")
    assert [h["step"] for h in longer.history] == list(range(6, 13)), "max_steps raised from 8 to 12 on resume"
    np.testing.assert_allclose([h["lr"] for h in longer.history], [h["lr"] for h in straight.history[5:]], rtol=1e-12)


def test_max_minutes_stops_the_run_with_a_final_model_and_a_resumable_checkpoint(tmp_path, data):
    config = run_config(tmp_path, data, max_minutes=0.0005)  # 30 ms: over after the first step
    config["model"] = model_config(delay=0.05)
    stopped = train(config, make_registry())
    assert stopped.timed_out and 1 <= stopped.step < 12
    assert stopped.final_dir is not None and (stopped.final_dir / "model.safetensors").is_file()
    assert stopped.last_checkpoint is not None and stopped.last_checkpoint.name == f"step-{stopped.step:06d}"
    config["max_minutes"] = None
    rest = train(config, make_registry(), resume="auto")
    assert not rest.timed_out and rest.step == 12 and rest.history[0]["step"] == stopped.step + 1


def child_run(config_path: str, go: str) -> None:
    """Entry point of the subprocess killed by the test below: imports first, then waits for
    the test to say go (so its start-up overlaps the test's own reference run)."""
    torch.set_num_threads(1)
    import accelerate  # noqa: F401  (warm up: the first optimizer imports torch._dynamo, seconds)

    torch.optim.AdamW([torch.zeros(1, requires_grad=True)]).zero_grad()
    deadline = time.monotonic() + 180  # generous: a loaded CI machine starts processes slowly
    while not Path(go).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    train(json.loads(Path(config_path).read_text()), make_registry())


def test_sigkill_leaves_a_loadable_checkpoint_and_resume_matches_an_uninterrupted_run(tmp_path, data):
    config = run_config(tmp_path / "killed", data, save_every=2, keep_last=2, max_steps=40)
    config["model"] = model_config(delay=0.03)
    (tmp_path / "config.json").write_text(json.dumps(config))
    go = tmp_path / "go"
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_training; "
            f"test_training.child_run({str(tmp_path / 'config.json')!r}, {str(go)!r})")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    straight = train(run_config(tmp_path / "straight", data, max_steps=40), make_registry(), stop_after=20)
    go.touch()
    root = tmp_path / "killed" / "run" / "checkpoints"
    deadline = time.monotonic() + 180  # generous: a loaded CI machine starts processes slowly
    while time.monotonic() < deadline and child.poll() is None:
        latest = latest_checkpoint(root)
        if latest is not None and int(latest.name.split("-")[1]) >= 4:
            break
        time.sleep(0.01)
    assert child.poll() is None, f"the run ended before it could be killed:\n{child.stdout.read().decode()[-2000:]}"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()

    latest = latest_checkpoint(root)
    step = int(latest.name.split("-")[1])
    assert 4 <= step <= 14
    assemble(latest, registry=make_registry())  # the last good checkpoint loads
    config["model"] = model_config()
    resumed = train(config, make_registry(), resume=tmp_path / "killed" / "run", stop_after=step + 6)
    assert [h["step"] for h in resumed.history] == list(range(step + 1, step + 7))
    np.testing.assert_allclose(totals(resumed.history), totals(straight.history[step : step + 6]), rtol=1e-6, atol=1e-7)


def test_resume_errors_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="no such folder"):
        train(run_config(tmp_path, write_dataset(tmp_path)), make_registry(), resume=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no complete checkpoint"):
        train(run_config(tmp_path, tmp_path / "train.jsonl"), make_registry(), resume=tmp_path / "empty")


def test_malformed_resume_state_names_the_file_and_field(tmp_path, data):
    first = train(run_config(tmp_path, data), make_registry(), stop_after=2)
    ckpt_dir = first.last_checkpoint
    state_file = ckpt_dir / "trainer_state.json"
    good_state = json.loads(state_file.read_text())
    for field, value, words in (("step", "2", "field 'step' must be a non-negative integer, got '2'"),
                                ("world_size", 0, "field 'world_size' must be a positive integer"),
                                ("trainable", None, "field 'trainable' must be a list of parameter names")):
        state_file.write_text(json.dumps({**good_state, field: value}))
        with pytest.raises(CheckpointError, match=re.escape(f"{state_file}: {words}")):
            train(run_config(tmp_path, data), make_registry(), resume=ckpt_dir)
    state_file.write_text(json.dumps(good_state))
    rng_file = ckpt_dir / "rng-rank0.json"
    rng = json.loads(rng_file.read_text())
    rng["tree"]["python"] = "not a state"
    rng_file.write_text(json.dumps(rng))
    with pytest.raises(CheckpointError, match=re.escape(f"{rng_file}: field 'python' is malformed")):
        train(run_config(tmp_path, data), make_registry(), resume=ckpt_dir)


# --- state files and the feature cache ----------------------------------------------------------------------


def test_state_trees_round_trip_without_pickle(tmp_path):
    state = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2, 3)}}, "groups": [{"betas": (0.9, 0.99), "lr": 1e-3}],
             "rng": (3, tuple(range(5)), None), "np": np.arange(4, dtype=np.uint32)}
    save_tree(tmp_path, "opt", state)
    back = load_tree(tmp_path, "opt")
    torch.testing.assert_close(back["state"][0]["exp_avg"], state["state"][0]["exp_avg"])
    assert back["groups"][0]["betas"] == (0.9, 0.99) and back["rng"] == state["rng"] and back["np"].dtype == np.uint32
    with pytest.raises(CheckpointError, match="opt.bad: values of type object"):
        save_tree(tmp_path, "opt", {"bad": object()})


def test_feature_cache_is_hit_in_epoch_two_and_survives_corruption(tmp_path, data):
    config = run_config(tmp_path, data, max_steps=None, epochs=2)  # 3 steps per epoch
    ENCODE_CALLS.clear()
    first = train(config, make_registry(), stop_after=3)
    assert sum(ENCODE_CALLS) == 6 and first.cache_stats["misses"] == 6, "epoch 1 encodes each input image once"
    ENCODE_CALLS.clear()
    second = train(config, make_registry(), resume="auto")
    assert ENCODE_CALLS == [], "epoch 2 never calls the encoder"
    assert second.cache_stats["hits"] == 6 and second.cache_stats["misses"] == 0

    cache = FeatureCache(tmp_path / "cache")
    cache.put("enc/image/abc", torch.ones(1, 4))
    cache.flush()
    torch.testing.assert_close(cache.get("enc/image/abc"), torch.ones(1, 4))
    (shard,) = (tmp_path / "cache" / "shards").iterdir()
    garbled = bytearray(shard.read_bytes())
    garbled[-3] ^= 0xFF  # one flipped bit in the features: the CRC catches it
    shard.write_bytes(bytes(garbled))
    assert cache.get("enc/image/abc") is None and cache.stats.corrupt == 1
    cache.put("enc/image/abc", torch.zeros(1, 4))
    assert cache.get("enc/image/abc").sum() == 0 and len(cache) == 1
    assert not list((tmp_path / "cache").rglob("*.tmp")), "no temporary files left behind"


def test_unreadable_media_stop_the_run_naming_the_line_or_are_skipped_and_reported(tmp_path):
    data = write_dataset(tmp_path, n=4)
    (tmp_path / "media" / "in2.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # exists, but cannot be decoded
    with pytest.raises(DatasetError, match=r"train.jsonl:3 \(id 2\): .*in2.png.*data.on_error: skip"):
        train(run_config(tmp_path / "a", data, max_steps=2), make_registry())
    config = run_config(tmp_path / "b", data, max_steps=4)
    config["data"]["on_error"] = "skip"
    result = train(config, make_registry())
    assert result.step == 4 and len(result.skipped) >= 1
    assert all(s.startswith(f"{data}:3 (id 2): ") for s in result.skipped)


def test_codi2_train_command_with_a_config_file_and_overrides(tmp_path, data, capsys):
    import argparse

    import yaml

    from codi2.training.commands import add_train_parser

    config = {"model": {"encoders": [{"plugin": "tiny-encoder"}], "llm": {"plugin": "tiny-llm"}, "decoders": {"image": {"plugin": "tiny-decoder"}}},
              "data": {"train": os.path.relpath(data, tmp_path)}, "stage": "instruct", "max_steps": 50, "output_dir": "runs/x"}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "--config", str(tmp_path / "train.yaml"), "--max-steps", "2", "--set", "optimizer.lr=1e-3", "--no-progress"])
    assert args.run(args) == 0
    assert f"trained 2 step(s); model saved to {tmp_path / 'runs' / 'x' / 'final'}" in capsys.readouterr().out
    assert assemble(tmp_path / "runs" / "x" / "final").config.llm.plugin == "tiny-llm"


def _hammer(root, seed, out):
    cache = FeatureCache(root)
    for i in range(40):
        key = f"enc/image/{(i * 7 + seed) % 10}"
        cache.put(key, torch.full((2, 3), float((i * 7 + seed) % 10)))
        found = cache.get(key)
        out.put(found is not None and bool((found == (i * 7 + seed) % 10).all()))
    out.put(("stats", cache.stats.corrupt))


def test_feature_cache_is_safe_for_concurrent_processes(tmp_path):
    import multiprocessing

    context = multiprocessing.get_context("fork")
    out = context.Queue()
    workers = [context.Process(target=_hammer, args=(tmp_path, seed, out)) for seed in range(3)]
    for w in workers:
        w.start()
    results = [out.get(timeout=60) for _ in range(3 * 41)]
    for w in workers:
        w.join(timeout=60)
    assert all(w.exitcode == 0 for w in workers)
    assert all(r is True for r in results if not isinstance(r, tuple)), "every read sees a whole, correct entry"
    assert all(r[1] == 0 for r in results if isinstance(r, tuple)), "no reader ever saw a partial file"
    assert len(FeatureCache(tmp_path)) == 10 and not list(tmp_path.rglob("*.tmp"))
