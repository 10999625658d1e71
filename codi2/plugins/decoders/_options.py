"""Options every diffusers-pipeline decoder takes (torch-free: imported at registration)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, field_validator


class PipelineOptions(BaseModel):
    """Shared options; each decoder subclasses it, sets ``model``'s default and adds its own."""

    model_config = ConfigDict(extra="forbid")
    #: the plugin's name and whether it implements the paper's fidelity (reference) path
    plugin: ClassVar[str] = "decoder"
    has_fidelity: ClassVar[bool] = False

    #: hub id or local directory of the stock diffusers pipeline
    model: str
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    #: torch device; None = "cuda" when available, else "cpu"
    device: str | None = None
    #: frozen: only ``cond`` gets gradients; adapters: the fidelity conv_in (nothing without a
    #: fidelity path); full: the denoiser trains too
    trainable: Literal["frozen", "adapters", "full"] = "frozen"
    #: never reach the hub (a hub id must already be in the local cache)
    local_files_only: bool = False
    #: the paper's fidelity path: reference latents concatenated through a widened conv_in
    fidelity: bool = False

    @field_validator("fidelity")
    @classmethod
    def _fidelity_supported(cls, value: bool) -> bool:
        if value and not cls.has_fidelity:
            raise ValueError(f"{cls.plugin} has no fidelity (reference) path; use fidelity=false")
        return value
