"""Training configuration: one pydantic model (unknown keys are errors), read from YAML or JSON.

A minimal file::

    model: configs/tiny-model.yaml      # a ModelConfig dict, a model config file, a saved codi2
                                        # directory (continue from it) or a preset name
    data: {train: data/edit/data.jsonl, eval: data/edit/eval.jsonl}
    stage: instruct                     # align | output | instruct | custom
    optimizer: {lr: 1.0e-4}
    max_steps: 1000
    output_dir: runs/edit

Relative paths in a file (``model``, ``data.*``, ``output_dir``, ``feature_cache``) are taken
relative to the file's folder, so a run does not depend on the directory it is started from.
Given as a dict (the Python API), they are relative to the working directory.

Stages (paper §4: the projectors are aligned first, then the whole model is instruction-tuned):

- ``align``: the input projectors and the marker tokens train; the LLM and decoders are frozen.
- ``output``: the output slots and projectors train (plus the decoders' fidelity adapters when
  the model uses the fidelity path).
- ``instruct``: everything in the core trains and the LLM gets LoRA adapters (plus the decoder
  adapters under fidelity).
- ``custom``: ``trainable`` says exactly what trains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from codi2.core.config import format_validation_error, read_config_file
from codi2.errors import ConfigError

STAGES = ("align", "output", "instruct", "custom")
#: placeholder in ``feature_cache`` replaced by the run's output directory
OUTPUT_DIR_TOKEN = "{output_dir}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    """Dataset files: JSONL (see :mod:`codi2.training.data`) or shard folders (WebDataset or
    Arrow, see :mod:`codi2.training.shards`); one kind per split."""

    train: list[str] = Field(min_length=1)
    eval: list[str] = Field(default_factory=list)
    #: what a malformed sample does: stop the run ("raise") or be counted, reported and left out
    on_error: Literal["raise", "skip"] = "raise"
    shuffle: bool = True

    @field_validator("train", "eval", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if value is None:
            return []
        return [value] if isinstance(value, str) else value


class TrainableConfig(_Strict):
    """What trains under ``stage: custom`` (see :meth:`CoDi2Model.set_trainable`)."""

    input_projectors: bool = True
    output_side: bool = True
    markers: bool = True
    llm: Literal["frozen", "lora", "full"] = "frozen"
    decoders: Literal["frozen", "adapters", "full"] = "frozen"


class LossOverrides(_Strict):
    """Replace fields of the model's loss settings (ModelConfig.loss) for this run."""

    alpha: float | None = Field(None, ge=0)
    text: bool | None = None
    feature: bool | None = None
    diffusion: bool | None = None


class OptimizerConfig(_Strict):
    """AdamW over the trainable parameters."""

    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    #: clip the global gradient norm to this value (None: no clipping)
    max_grad_norm: float | None = Field(1.0, gt=0)


class ScheduleConfig(_Strict):
    """Learning-rate schedule: linear warm-up, then constant, linear or cosine decay to 0."""

    kind: Literal["constant", "linear", "cosine"] = "cosine"
    warmup_steps: int = Field(0, ge=0)


class TrainConfig(_Strict):
    """One training run. See the module docstring."""

    model: dict[str, Any] | str
    data: DataConfig
    stage: Literal["align", "output", "instruct", "custom"] = "instruct"
    trainable: TrainableConfig | None = None
    loss: LossOverrides = Field(default_factory=LossOverrides)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    #: conversations per process per micro-batch
    batch_size: int = Field(1, ge=1)
    grad_accumulation: int = Field(1, ge=1)
    #: stop after this many optimizer steps and/or epochs (whichever comes first)
    max_steps: int | None = Field(None, ge=1)
    epochs: int | None = Field(None, ge=1)
    #: also stop after this many minutes of this call's training, saving the final model as if
    #: max_steps had been reached (a time-limited job; the schedule still spans max_steps)
    max_minutes: float | None = Field(None, gt=0)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    gradient_checkpointing: bool = False
    seed: int = Field(0, ge=0)
    output_dir: str = "runs/codi2"
    #: write a checkpoint every N optimizer steps (None: only the final model)
    save_every: int | None = Field(None, ge=1)
    #: keep the newest K checkpoints (None: keep all)
    keep_last: int | None = Field(3, ge=1)
    eval_every: int | None = Field(None, ge=1)
    log_every: int = Field(10, ge=1)
    num_workers: int = Field(0, ge=0)
    #: folder of cached frozen-encoder features; null disables the cache
    feature_cache: str | None = f"{OUTPUT_DIR_TOKEN}/feature-cache"
    #: TensorBoard logs under output_dir/tensorboard: None = when tensorboard is installed
    tensorboard: bool | None = None
    #: extra plugin modules to register before the model is built (``my_pkg.plugin``)
    plugins: list[str] = Field(default_factory=list)
    #: show a tqdm progress bar (main process only)
    progress: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.stage == "custom" and self.trainable is None:
            raise ValueError("stage 'custom' needs 'trainable' (which parts train)")
        if self.stage != "custom" and self.trainable is not None:
            raise ValueError(f"'trainable' is only read with stage 'custom' (stage is {self.stage!r})")
        if self.max_steps is None and self.epochs is None:
            raise ValueError("give max_steps or epochs (or both: whichever is reached first)")
        if self.eval_every is not None and not self.data.eval:
            raise ValueError("eval_every needs data.eval (a held-out JSONL file)")
        return self

    # --- files ----------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "training config", base: str | Path | None = None) -> TrainConfig:
        """Validate ``data``; relative paths are resolved against ``base`` when given."""
        try:
            config = cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{source}: {format_validation_error(exc)}") from None
        return config.resolve_paths(base) if base is not None else config

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """Read a YAML or JSON file; relative paths inside are relative to its folder."""
        path = Path(path)
        return cls.from_dict(read_config_file(path), source=str(path), base=path.resolve().parent)

    def resolve_paths(self, base: str | Path) -> TrainConfig:
        """A copy with relative file paths made absolute against ``base``."""
        base = Path(base)

        def fix(p: str) -> str:
            return str(p) if Path(p).expanduser().is_absolute() else str(base / p)

        update: dict[str, Any] = {
            "data": self.data.model_copy(update={"train": [fix(p) for p in self.data.train], "eval": [fix(p) for p in self.data.eval]}),
            "output_dir": fix(self.output_dir),
        }
        if isinstance(self.model, str) and _looks_like_path(self.model, base):
            update["model"] = fix(self.model)
        if self.feature_cache is not None and not self.feature_cache.startswith(OUTPUT_DIR_TOKEN):
            update["feature_cache"] = fix(self.feature_cache)
        return self.model_copy(update=update)

    def with_overrides(self, overrides: dict[str, Any], *, source: str = "--set") -> TrainConfig:
        """A copy with dotted keys replaced (``{"optimizer.lr": 1e-3}``), validated again."""
        data = self.model_dump(mode="json")
        for dotted, value in overrides.items():
            node = data
            *head, last = dotted.split(".")
            for key in head:
                if not isinstance(node.get(key), dict):
                    node[key] = {} if node.get(key) is None else node[key]
                if not isinstance(node[key], dict):
                    raise ConfigError(f"{source}: {dotted!r}: {key!r} is not a section")
                node = node[key]
            node[last] = value
        return TrainConfig.from_dict(data, source=source)

    # --- derived --------------------------------------------------------------------------

    @property
    def feature_cache_dir(self) -> Path | None:
        if self.feature_cache is None:
            return None
        return Path(self.feature_cache.replace(OUTPUT_DIR_TOKEN, self.output_dir))

    def trainable_for(self, *, fidelity: bool, llm_policy: str = "lora") -> TrainableConfig:
        """The stage as explicit trainable flags. ``llm_policy``: how the ``instruct`` stage
        trains the LLM, the LLM's own default (``hf-causal-lm``'s ``trainable`` option)."""
        adapters = "adapters" if fidelity else "frozen"
        if self.stage == "align":
            return TrainableConfig(input_projectors=True, output_side=False, markers=True, llm="frozen", decoders="frozen")
        if self.stage == "output":
            return TrainableConfig(input_projectors=False, output_side=True, markers=False, llm="frozen", decoders=adapters)
        if self.stage == "instruct":
            return TrainableConfig(input_projectors=True, output_side=True, markers=True, llm=llm_policy, decoders=adapters)
        assert self.trainable is not None  # checked by the validator
        return self.trainable


def _looks_like_path(value: str, base: Path) -> bool:
    """A ``model`` string is a path unless it exists as no file and is a bare preset name or a
    hub id (``org/name``)."""
    if (base / value).exists() or value.startswith((".", "/", "~")) or "\\" in value:
        return True
    if value.endswith((".json", ".yaml", ".yml")):
        return True
    from codi2.assembly import looks_like_hub_id

    return "/" in value and not looks_like_hub_id(value)


def parse_override(text: str) -> tuple[str, Any]:
    """``key.sub=value`` -> (``"key.sub"``, value); the value is read as JSON/YAML if it parses
    (numbers, booleans, null, lists), else kept as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE (for example optimizer.lr=3e-4)")
    import yaml

    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value
