"""Training CoDi-2: configuration, the Accelerate-driven trainer, the feature cache, the JSONL
dataset format, sharded streaming data (WebDataset / Arrow / Parquet) and the paper's data
builders (see docs/training.md).

Importing this package is free (the CLI imports :mod:`codi2.training.commands` at start-up);
``TrainConfig`` and :func:`train` import what they need when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from codi2.training.config import TrainConfig
    from codi2.training.trainer import TrainResult


def train(config: Any, registry: Any = None, resume: Any = None, **kwargs: Any) -> TrainResult:
    """Run training (see :func:`codi2.training.trainer.train`)."""
    from codi2.training.trainer import train as _train

    return _train(config, registry, resume, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "TrainConfig":
        from codi2.training.config import TrainConfig

        return TrainConfig
    raise AttributeError(f"module 'codi2.training' has no attribute {name!r}")


__all__ = ["TrainConfig", "train"]
