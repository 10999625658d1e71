"""The training loop: Accelerate-driven, exactly resumable, with atomic checkpoints.

::

    from codi2.training import train
    result = train("configs/train.yaml")            # or a TrainConfig / dict
    model = codi2.load(result.final_dir)

One process runs on the CPU or one GPU; ``accelerate launch -m codi2 train --config ...`` runs
the same code under DDP (or FSDP / DeepSpeed, as the accelerate config says). Accelerate does all
device placement, mixed precision, gradient accumulation and gradient synchronisation.

Reproducibility: Python, NumPy and torch are seeded from ``seed``; the data order of epoch ``e``
is a permutation drawn from ``(seed, e)``; the diffusion noise of every micro-batch comes from a
generator seeded by ``(seed, micro-batch index, process)``. A checkpoint stores all of it, so a
resumed run continues on the same loss curve as one that was never interrupted.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from codi2.core.modality import resolve_modalities
from codi2.core.model import CoDi2Model
from codi2.errors import CheckpointError, ConfigError
from codi2.training import checkpoint as ckpt
from codi2.training.config import TrainConfig
from codi2.training.data import ConversationDataset
from codi2.training.loader import Collator, EpochSampler, LRFactor, TrainBatch, derive_seed
from codi2.training.stages import (
    apply_stage,
    build_model,
    enable_gradient_checkpointing,
    frozen_parts_to_eval,
    param_groups,
    prepare_registry,
)

LOSS_KEYS = ("text", "feature", "diffusion", "total")


@dataclass
class TrainResult:
    """What a run produced. ``history`` has one record per optimizer step this call ran."""

    output_dir: Path
    final_dir: Path | None  # None when the run stopped early (``stop_after``)
    step: int
    history: list[dict[str, float]] = field(default_factory=list)
    eval_history: list[dict[str, float]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    cache_stats: dict[str, int] | None = None
    last_checkpoint: Path | None = None
    #: the run stopped at ``max_minutes`` before ``max_steps``
    timed_out: bool = False


# --- the run -------------------------------------------------------------------------------------------


def _as_config(config: TrainConfig | Mapping | str | Path) -> TrainConfig:
    if isinstance(config, TrainConfig):
        return config
    if isinstance(config, (str, Path)):
        return TrainConfig.from_file(config)
    return TrainConfig.from_dict(dict(config))


def train(
    config: TrainConfig | Mapping | str | Path,
    registry: Any = None,
    resume: str | Path | None = None,
    *,
    model: CoDi2Model | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train a CoDi-2 model as ``config`` says and save it to ``output_dir/final``.

    ``registry``: where components come from (default: the installed plugins). ``resume``: a
    checkpoint, a run's output folder (its latest checkpoint) or ``"auto"``. ``model``: an
    already-built model to train instead of building ``config.model`` (it must be built the
    same way again to resume). ``stop_after``: stop at this step with a checkpoint, as if
    interrupted (for time-limited jobs); the run can be resumed later.
    """
    config = _as_config(config)
    return _Run(config, registry, resume, model, stop_after).run()


class _Run:
    def __init__(self, config: TrainConfig, registry: Any, resume: Any, model: CoDi2Model | None, stop_after: int | None):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, set_seed

        self.config = config
        self.out = Path(config.output_dir)
        self.ckpt_root = self.out / ckpt.CHECKPOINTS
        self.stop_after = stop_after
        tensorboard = self._want_tensorboard()
        try:
            self.acc = Accelerator(
                mixed_precision=config.mixed_precision,
                gradient_accumulation_steps=config.grad_accumulation,
                rng_types=[],  # the data order and all noise are seeded explicitly (see the module doc)
                # a batch without audio leaves the audio projector unused: DDP must allow that
                kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
                log_with="tensorboard" if tensorboard else None,
                project_dir=str(self.out),
            )
        except (ValueError, RuntimeError) as exc:  # e.g. fp16 without a GPU, a bad accelerate config
            raise ConfigError(f"accelerate cannot set up this run (mixed_precision={config.mixed_precision!r}): {exc}") from None
        self.main = self.acc.is_main_process
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            ckpt.clean_leftovers(self.ckpt_root)
        self.acc.wait_for_everyone()
        self.resume_from = ckpt.resolve_resume(resume, self.out) if resume is not None else None
        if resume is None and ckpt.list_checkpoints(self.ckpt_root):
            raise ConfigError(
                f"output_dir {self.out} already holds checkpoints of an earlier run: continue it with "
                "resume='auto' (--resume auto) or choose another output_dir"
            )

        # the data first: a malformed file should fail before minutes of loading backbones
        registry = prepare_registry(registry, config.plugins) if model is None else None
        self.modalities = resolve_modalities(model.modalities if model is not None else registry.modalities())  # part types data may hold
        self.train_data = self._dataset(config.data.train)
        self.eval_data = self._dataset(config.data.eval) if config.data.eval else None
        self.skipped = [str(p) for d in (self.train_data, self.eval_data) for p in getattr(d, "skipped", [])]

        set_seed(config.seed)  # the same initial weights on every process
        if model is None:
            model, continued = build_model(config, registry)
        else:
            continued = set()
        self.model = model
        if any(v is not None for v in config.loss.model_dump().values()):
            updates = {k: v for k, v in config.loss.model_dump().items() if v is not None}
            model.config = model.config.model_copy(update={"loss": model.config.loss.model_copy(update=updates)})
        if self.resume_from is not None:
            self._load_weights(self.resume_from / "model.safetensors")
        # the instruct stage trains the LLM as its plugin was configured (LoRA unless it says otherwise)
        llm_policy = getattr(model.llm, "default_policy", "lora")
        apply_stage(model, config.trainable_for(fidelity=model.config.fidelity, llm_policy=llm_policy), continued)
        if config.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        self.cache = None
        if config.feature_cache_dir is not None:
            from codi2.training.cache import FeatureCache

            self.cache = model.feature_cache = FeatureCache(config.feature_cache_dir)

        groups, self.param_names = param_groups(model, config.optimizer.weight_decay)
        if not groups:
            raise ConfigError(f"stage {config.stage!r}: nothing to train (no parameter requires a gradient)")
        opt = config.optimizer
        optimizer = torch.optim.AdamW(groups, lr=opt.lr, betas=opt.betas, eps=opt.eps)

        self.model_p, self.optimizer = self.acc.prepare(model, optimizer)
        self.sampler = None
        if isinstance(self.train_data, ConversationDataset):
            self.sampler = EpochSampler(len(self.train_data), config.seed, config.data.shuffle)
            self.loader = self.acc.prepare_data_loader(self._loader(self.train_data, self.sampler), device_placement=False)
        else:
            self.loader = self._stream(self.train_data, config.data.shuffle)
        self.eval_loader = None
        if self.eval_data is not None and not isinstance(self.eval_data, ConversationDataset):
            self.eval_loader = self._stream(self.eval_data, shuffle=False)
        elif self.eval_data is not None:
            eval_loader = self._loader(self.eval_data, EpochSampler(len(self.eval_data), config.seed, shuffle=False))
            self.eval_loader = self.acc.prepare_data_loader(eval_loader, device_placement=False)
        self.steps_per_epoch = math.ceil(len(self.loader) / config.grad_accumulation)
        limits = [n for n in (config.max_steps, config.epochs and config.epochs * self.steps_per_epoch) if n]
        self.total_steps = min(limits)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, LRFactor(config.schedule.kind, config.schedule.warmup_steps, self.total_steps))
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.step = self.epoch = self.batch_in_epoch = self.micro_step = 0
        if self.resume_from is not None:
            self._load_state(self.resume_from)
        else:
            set_seed(config.seed + self.acc.process_index)  # dropout etc. differ between processes
        self.metrics = _MetricsLog(self.out / "metrics.jsonl", self.main, truncate_after=self.step)
        if tensorboard:
            self.acc.init_trackers("tensorboard")

    def _want_tensorboard(self) -> bool:
        import importlib.util

        installed = importlib.util.find_spec("tensorboard") is not None or importlib.util.find_spec("tensorboardX") is not None
        if self.config.tensorboard and not installed:
            raise ConfigError("tensorboard: true, but neither tensorboard nor tensorboardX is installed (pip install tensorboard)")
        return installed if self.config.tensorboard is None else self.config.tensorboard

    def _dataset(self, paths: list[str]) -> Any:
        """A :class:`ConversationDataset` of JSONL files, or the list of shards (see shards.py)."""
        from codi2.training.shards import find_shards, is_sharded

        kinds = {is_sharded(p) for p in paths}
        if len(kinds) > 1:
            raise ConfigError(f"data: {', '.join(paths)} mixes JSONL files and shards; convert the JSONL "
                              "(`codi2 data convert`) or use one kind per split")
        if kinds == {True}:
            return find_shards(paths)
        return ConversationDataset(paths, on_error=self.config.data.on_error, modalities=self.modalities)

    def _stream(self, shards: list, shuffle: bool) -> Any:
        from codi2.training.stream import ShardedLoader

        return ShardedLoader(shards, self.model, batch_size=self.config.batch_size, seed=self.config.seed, shuffle=shuffle,
                             rank=self.acc.process_index, world_size=self.acc.num_processes,
                             num_workers=self.config.num_workers, on_error=self.config.data.on_error)

    def _batches(self) -> Any:
        """This epoch's batches from the current position (``batch_in_epoch`` already consumed)."""
        if self.sampler is None:
            return self.loader.iter_from(self.batch_in_epoch)
        self.sampler.set_epoch(self.epoch)
        return self.acc.skip_first_batches(self.loader, self.batch_in_epoch) if self.batch_in_epoch else self.loader

    def _loader(self, dataset: ConversationDataset, sampler: EpochSampler) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            dataset, batch_size=self.config.batch_size, sampler=sampler, collate_fn=Collator(self.model, self.config.data.on_error),
            num_workers=self.config.num_workers, persistent_workers=False,
        )

    # --- the loop ------------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        from tqdm.auto import tqdm

        config, acc = self.config, self.acc
        result = TrainResult(self.out, None, self.step, skipped=list(self.skipped))
        if self.skipped and self.main:
            print(f"skipped {len(self.skipped)} invalid line(s) of the dataset:\n  " + "\n  ".join(self.skipped[:20]))
        self.model_p.train()
        frozen_parts_to_eval(self.model, keep_llm=self.config.gradient_checkpointing)
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not (self.main and config.progress), desc="train", dynamic_ncols=True)
        window: list[dict[str, float]] = []
        micro: list[torch.Tensor] = []
        samples, started = 0, time.perf_counter()
        stop_at = min(self.total_steps, self.stop_after or self.total_steps)
        deadline = started + 60 * config.max_minutes if config.max_minutes else None
        while self.step < stop_at:
            self.loader.set_epoch(self.epoch)
            batches = self._batches()
            for item in batches:
                self.batch_in_epoch += 1
                result.skipped.extend(item.skipped)
                micro.append(self._micro_step(item))
                samples += item.size
                if not acc.sync_gradients:
                    continue
                if not acc.optimizer_step_was_skipped:
                    self.scheduler.step()
                self.step += 1
                record = self._reduce(micro, samples / max(time.perf_counter() - started, 1e-9))
                micro = []
                if deadline is not None and self._all_past(deadline) and self.step < stop_at:
                    stop_at, result.timed_out = self.step, True
                result.history.append(record)
                window.append(record)
                bar.update(1)
                bar.set_postfix({k: f"{record[k]:.4g}" for k in LOSS_KEYS} | {"samples/s": f"{record['samples_per_s']:.3g}"})
                if self.step % config.log_every == 0 or self.step == stop_at:
                    self._log(window)
                    window = []
                if config.eval_every and self.step % config.eval_every == 0:
                    result.eval_history.append(self.evaluate())
                saving = config.save_every and self.step % config.save_every == 0
                if saving or self.step == stop_at and (config.save_every or self.step < self.total_steps):
                    result.last_checkpoint = self.save_checkpoint()
                if self.step >= stop_at:
                    break
            else:
                self.epoch += 1
                self.batch_in_epoch = 0
                continue
            if self.batch_in_epoch >= len(self.loader):  # the step ended the epoch
                self.epoch += 1
                self.batch_in_epoch = 0
        bar.close()
        result.step = self.step
        if self.step >= self.total_steps or result.timed_out:
            result.final_dir = self.save_final()
        if self.cache is not None:
            self.cache.close()  # publishes its last index rows
            result.cache_stats = self.cache.stats.as_dict()
        if result.skipped and self.main:
            print(f"{len(result.skipped)} sample(s) skipped in total (see metrics.jsonl)")
        # not acc.end_training(): it destroys the process group, which a second train() in this
        # process (the next stage of a launched script) still needs
        for tracker in acc.trackers:
            tracker.finish()
        return result

    def _micro_step(self, item: TrainBatch) -> torch.Tensor:
        acc = self.acc
        generator = torch.Generator().manual_seed(derive_seed(self.config.seed, "noise", self.micro_step, acc.process_index))
        self.micro_step += 1
        with acc.accumulate(self.model_p):
            if item.batch is None:  # every sample skipped: a zero step keeps the processes in lockstep
                losses = {k: torch.zeros((), device=acc.device) for k in LOSS_KEYS}
                loss = sum(p.sum() * 0.0 for p in self.params)
            else:
                losses = self.model_p(item.batch, generator=generator)
                loss = losses["total"]
            acc.backward(loss)
            if acc.sync_gradients and self.config.optimizer.max_grad_norm:
                acc.clip_grad_norm_(self.params, self.config.optimizer.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return torch.stack([losses[k].detach().float() for k in LOSS_KEYS])

    def _all_past(self, deadline: float) -> bool:
        """Whether any process has passed ``deadline`` (so every process stops at the same step)."""
        late = torch.tensor(float(time.perf_counter() > deadline), device=self.acc.device)
        return bool(self.acc.reduce(late, reduction="sum") > 0)

    def _reduce(self, micro: list[torch.Tensor], samples_per_s: float) -> dict[str, float]:
        mean = self.acc.reduce(torch.stack(micro).mean(0).to(self.acc.device), reduction="mean")
        record = {"step": self.step, "epoch": self.epoch, **{k: float(v) for k, v in zip(LOSS_KEYS, mean)}}
        record["lr"] = float(self.scheduler.get_last_lr()[0])
        record["samples_per_s"] = samples_per_s * self.acc.num_processes
        return record

    def _log(self, window: list[dict[str, float]]) -> None:
        if not window:
            return
        record = {"step": self.step, "epoch": self.epoch, "split": "train"}
        record.update({k: sum(r[k] for r in window) / len(window) for k in LOSS_KEYS})
        record["lr"], record["samples_per_s"] = window[-1]["lr"], window[-1]["samples_per_s"]
        if self.cache is not None:
            record["cache"] = self.cache.stats.as_dict()
        self.metrics.write(record)
        self.acc.log({f"train/{k}": v for k, v in record.items() if isinstance(v, float)}, step=self.step)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean losses over the held-out split (fixed noise, so evaluations are comparable)."""
        acc = self.acc
        self.model_p.eval()
        devices = [acc.device.index or 0] if acc.device.type == "cuda" else []
        totals = torch.zeros(len(LOSS_KEYS), device=acc.device)
        count = torch.zeros((), device=acc.device)
        with torch.random.fork_rng(devices=devices):  # evaluation leaves the training RNG untouched
            for i, item in enumerate(self.eval_loader):
                if item.batch is None:
                    continue
                generator = torch.Generator().manual_seed(derive_seed(self.config.seed, "eval", i, acc.process_index))
                losses = self.model_p(item.batch, generator=generator)
                totals += torch.stack([losses[k].float() for k in LOSS_KEYS]) * item.size
                count += item.size
        totals, count = acc.reduce(totals, reduction="sum"), acc.reduce(count, reduction="sum")
        self.model_p.train()
        frozen_parts_to_eval(self.model, keep_llm=self.config.gradient_checkpointing)
        record = {"step": self.step, "epoch": self.epoch, "split": "eval", "samples": int(count)}
        record.update({k: float(v / count.clamp(min=1)) for k, v in zip(LOSS_KEYS, totals)})
        self.metrics.write(record)
        acc.log({f"eval/{k}": record[k] for k in LOSS_KEYS}, step=self.step)
        return record

    # --- checkpoints ---------------------------------------------------------------------------------

    def _sharded_optimizer(self) -> bool:
        from accelerate.utils import DistributedType

        return self.acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)

    @contextlib.contextmanager
    def _full_parameters(self):
        """Whole parameters for trained_state_dict(), also when FSDP / ZeRO-3 shard them."""
        from accelerate.utils import DistributedType

        if self.acc.distributed_type == DistributedType.FSDP:
            from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

            with FSDP.summon_full_params(self.model_p, writeback=False):
                yield
        elif self.acc.distributed_type == DistributedType.DEEPSPEED and getattr(self.acc.state.deepspeed_plugin, "zero_stage", 0) == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(self.model.parameters())):
                yield
        else:
            yield

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step-N`` atomically and point ``latest`` at it."""
        acc, name = self.acc, ckpt.step_name(self.step)
        tmp = self.ckpt_root / f".tmp-{name}"
        if self.main:
            self.ckpt_root.mkdir(parents=True, exist_ok=True)
            ckpt.staging_dir(self.ckpt_root, name)
        acc.wait_for_everyone()
        with self._full_parameters():
            if self.main:
                self.model.save_pretrained(tmp)
        rank = acc.process_index
        if self._sharded_optimizer():
            ckpt.save_tree(tmp, f"optimizer-rank{rank}", self.optimizer.state_dict())
        elif self.main:
            ckpt.save_tree(tmp, "optimizer", self.optimizer.state_dict())
        ckpt.save_tree(tmp, f"rng-rank{rank}", ckpt.capture_rng())
        if self.main:
            ckpt.save_tree(tmp, "scheduler", self.scheduler.state_dict())
            if acc.scaler is not None:
                ckpt.save_tree(tmp, "scaler", acc.scaler.state_dict())
        acc.wait_for_everyone()
        final = self.ckpt_root / name
        if self.main:
            state = {
                "format": ckpt.FORMAT, "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "micro_step": self.micro_step, "seed": self.config.seed, "world_size": acc.num_processes,
                "sharded_optimizer": self._sharded_optimizer(), "trainable": self.param_names,
                "total_steps": self.total_steps, "config": self.config.model_dump(mode="json"),
            }
            (tmp / ckpt.STATE_FILE).write_text(json.dumps(state, indent=1) + "\n")
            ckpt.publish_dir(tmp, final)
            ckpt.write_latest(self.ckpt_root, name)
            ckpt.prune(self.ckpt_root, self.config.keep_last, protect=final)
        acc.wait_for_everyone()
        return final

    def _load_weights(self, weights: Path) -> None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(weights))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{weights}: unreadable weights file: {exc}") from None
        self.model.load_trained_state_dict(state)

    def _load_state(self, directory: Path) -> None:
        acc = self.acc
        state = ckpt.check_trainer_state(ckpt.read_json(directory / ckpt.STATE_FILE), directory / ckpt.STATE_FILE)
        if state.get("format") != ckpt.FORMAT:
            raise CheckpointError(f"{directory}: checkpoint format {state.get('format')!r}, this codi2 reads {ckpt.FORMAT}")
        if state["trainable"] != self.param_names:
            diff = sorted(set(state["trainable"]) ^ set(self.param_names))[:5]
            raise CheckpointError(f"{directory}: the checkpoint trained other parameters than this run would ({diff}...); did the stage or model change?")
        sharded = state.get("sharded_optimizer", False)
        if (sharded or state["world_size"] > 1) and state["world_size"] != acc.num_processes:
            raise CheckpointError(f"{directory}: written by {state['world_size']} process(es); resume it with the same number (now {acc.num_processes})")
        rank = acc.process_index
        optimizer_name = f"optimizer-rank{rank}" if sharded else "optimizer"
        _restore(directory, optimizer_name, self.optimizer.load_state_dict)
        _restore(directory, "scheduler", self.scheduler.load_state_dict)
        self._follow_schedule()
        if acc.scaler is not None and (directory / "scaler.json").is_file():
            _restore(directory, "scaler", acc.scaler.load_state_dict)
        rng_name = f"rng-rank{rank}" if (directory / f"rng-rank{rank}.json").is_file() else "rng-rank0"
        ckpt.restore_rng(ckpt.load_tree(directory, rng_name), f"{directory / rng_name}.json")
        self.step, self.epoch, self.batch_in_epoch, self.micro_step = (state[k] for k in ("step", "epoch", "batch_in_epoch", "micro_step"))
        self.loader.set_epoch(self.epoch)  # a stream's epoch length depends on the epoch
        if self.batch_in_epoch >= len(self.loader):
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        if self.main:
            print(f"resumed from {directory} at step {self.step} (epoch {self.epoch}, batch {self.batch_in_epoch})")

    def _follow_schedule(self) -> None:
        """Use this run's schedule (its length may differ from the checkpoint's: a raised
        ``max_steps``), not the one restored with the scheduler state."""
        factor = LRFactor(self.config.schedule.kind, self.config.schedule.warmup_steps, self.total_steps)
        self.scheduler.lr_lambdas = [factor] * len(self.optimizer.param_groups)
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base * factor(self.scheduler.last_epoch)
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def save_final(self) -> Path:
        final = self.out / "final"
        if self.main:
            tmp = ckpt.staging_dir(self.out, "final")
        self.acc.wait_for_everyone()
        with self._full_parameters():
            if self.main:
                self.model.save_pretrained(tmp)
                ckpt.publish_dir(tmp, final)
        self.acc.wait_for_everyone()
        return final


class _MetricsLog:
    """``metrics.jsonl``: one JSON record per log / evaluation (main process only). A resumed run
    first drops the records of steps after its checkpoint, which the killed run had logged."""

    def __init__(self, path: Path, enabled: bool, truncate_after: int):
        self.path, self.enabled, self._json = path, enabled, json
        if enabled and truncate_after and path.is_file():
            kept = [line for line in path.read_text().splitlines() if line.strip() and self._step(line) <= truncate_after]
            path.write_text("".join(line + "\n" for line in kept))
        elif enabled and not truncate_after and path.is_file():
            path.unlink()

    def _step(self, line: str) -> int:
        try:
            return int(self._json.loads(line).get("step", 0))
        except (ValueError, AttributeError):
            return 0

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(self._json.dumps(record) + "\n")


def _restore(directory: Path, name: str, load_state_dict: Any) -> None:
    """``load_state_dict`` of the state tree ``name``; a malformed one is a CheckpointError naming
    the file (torch raises KeyError/ValueError/TypeError deep inside otherwise)."""
    tree = ckpt.load_tree(directory, name)
    try:
        load_state_dict(tree)
    except (KeyError, ValueError, TypeError, IndexError, RuntimeError, AttributeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CheckpointError(f"{directory / name}.json: malformed state ({type(exc).__name__}: {reason})") from None


__all__ = ["Collator", "EpochSampler", "LRFactor", "TrainResult", "apply_stage", "build_model", "train"]
