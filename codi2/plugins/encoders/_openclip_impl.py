"""The ``openclip`` encoder component (imports torch and open_clip; see ``openclip.py``)."""

from __future__ import annotations

import contextlib
import copy
import difflib
import hashlib
import json
import os
import pickle
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from codi2.core.types import Media
from codi2.errors import ComponentLoadError, MediaError, pickle_refused
from codi2.plugins.base import FrozenEncoder
from codi2.plugins.encoders.openclip import NAME, OpenCLIPOptions

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
PRECISIONS = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
#: the preprocessing fields a pretrained tag may override (OpenCLIP's PreprocessCfg)
PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """No Hugging Face hub access inside (for configs/tokenizers open_clip may look up)."""
    saved = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = None
    with contextlib.suppress(ImportError):
        from huggingface_hub import constants  # read at import time: patch the live value too
    old = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if constants is not None:
            constants.HF_HUB_OFFLINE = old
        if saved is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved


def _hub_candidates(hf_hub: str) -> tuple[str, list[str]]:
    """``org/repo/filename`` (filename optional) -> repo id and the file names to look for,
    safetensors first (the order open_clip itself prefers)."""
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    repo, filename = os.path.split(hf_hub)  # a trailing "/" means the default file name
    filename = filename or HF_WEIGHTS_NAME
    names = [HF_SAFE_WEIGHTS_NAME] if filename == HF_WEIGHTS_NAME else []
    if filename.endswith((".bin", ".pth")) and filename != HF_WEIGHTS_NAME:
        names.append(filename[:-4] + ".safetensors")
    return repo, [*names, filename]


def resolve_pretrained(model: str, pretrained: str, cache_dir: str | None) -> tuple[Path, dict[str, Any]]:
    """A local weights file for ``pretrained`` (a path, or a tag already in a local cache) and
    the tag's config (preprocessing, quick_gelu). Never downloads."""
    import open_clip

    path = Path(pretrained).expanduser()
    if path.is_file():
        return path, {}
    tag_cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if not tag_cfg:
        tags = open_clip.list_pretrained_tags_by_model(model)
        raise ComponentLoadError(
            f"encoder {NAME!r}: pretrained={pretrained!r} is neither a file nor a tag of {model!r} "
            f"(tags: {', '.join(tags) or 'none'})"
        )
    looked: list[str] = []
    if tag_cfg.get("file") and Path(tag_cfg["file"]).is_file():
        return Path(tag_cfg["file"]), tag_cfg
    if tag_cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo, names = _hub_candidates(tag_cfg["hf_hub"])
        for filename in names:
            found = try_to_load_from_cache(repo, filename, cache_dir=cache_dir)
            if isinstance(found, str):
                return Path(found), tag_cfg
            looked.append(f"hub cache {repo}/{filename}")
    if tag_cfg.get("url"):
        local = Path(cache_dir or "~/.cache/clip").expanduser() / os.path.basename(tag_cfg["url"])
        if local.is_file():
            return local, tag_cfg
        looked.append(str(local))
    hint = f"huggingface-cli download {tag_cfg['hf_hub'].rstrip('/')}" if tag_cfg.get("hf_hub") else tag_cfg.get("url", "")
    raise ComponentLoadError(
        f"encoder {NAME!r}: weights {model}/{pretrained} are not in a local cache (looked at: "
        f"{'; '.join(looked) or 'nothing to look at'}). codi2 never downloads: fetch them once "
        f"({hint}) or pass options.pretrained=/path/to/weights"
    )


def _describe(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {' '.join(line.strip() for line in lines[:3])}" if lines else type(exc).__name__


def build_model(options: OpenCLIPOptions, device: torch.device) -> tuple[torch.nn.Module, Any, str, int]:
    """The OpenCLIP model, its tokenizer, its weights file (or "random weights") and its
    embedding width."""
    import open_clip
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    if options.model_config_ is None and options.model not in open_clip.list_models():
        close = difflib.get_close_matches(options.model, open_clip.list_models(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else " (see open_clip.list_models())"
        raise ComponentLoadError(f"encoder {NAME!r}: unknown OpenCLIP model {options.model!r}{hint}")
    weights_path, tag_cfg = (None, {})
    if not options.random_init:
        weights_path, tag_cfg = resolve_pretrained(options.model, options.pretrained or "", options.cache_dir)
    source = f"{weights_path}" if weights_path else "random weights"
    try:
        with offline():
            if options.model_config_ is not None:
                cfg = copy.deepcopy(options.model_config_)
                text_cfg = cfg.setdefault("text_cfg", {})
                if "hf_model_name" in text_cfg:
                    text_cfg.setdefault("hf_model_pretrained", False)  # our checkpoint has the weights
                if "multimodal_cfg" in cfg:
                    raise ComponentLoadError(f"encoder {NAME!r}: CoCa configs (multimodal_cfg) are not supported")
                custom_text = cfg.pop("custom_text", False) or "hf_model_name" in text_cfg
                with device:
                    model = (open_clip.CustomTextCLIP if custom_text else open_clip.CLIP)(**cfg)
                if weights_path is not None:
                    open_clip.load_checkpoint(model, str(weights_path), strict=True, weights_only=True)
                model = model.to(dtype=DTYPES[options.dtype])
                size = model.visual.image_size
                open_clip.set_model_preprocess_cfg(model, merge_preprocess_dict(PreprocessCfg(), {"size": size}))
                tokenizer = _tokenizer_for(text_cfg)
                embed_dim = cfg["embed_dim"]
            else:
                with device:  # built in place (instantly on "meta"), not on the CPU first
                    model = open_clip.create_model(
                        options.model,
                        pretrained=str(weights_path) if weights_path else None,
                        precision=PRECISIONS[options.dtype],
                        device=device,
                        force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
                        force_preprocess_cfg={k: tag_cfg[k] for k in PREPROCESS_KEYS if k in tag_cfg},
                        cache_dir=options.cache_dir,
                        pretrained_image=False,
                        pretrained_text=False,
                    )
                tokenizer = open_clip.get_tokenizer(options.model, cache_dir=options.cache_dir)
                embed_dim = open_clip.get_model_config(options.model)["embed_dim"]
    except ComponentLoadError:
        raise
    except pickle.UnpicklingError:
        raise ComponentLoadError(f"encoder {NAME!r}: {pickle_refused(str(source))}") from None
    except Exception as exc:  # open_clip raises RuntimeError/ValueError/KeyError/... on bad configs or files
        raise ComponentLoadError(
            f"encoder {NAME!r}: cannot build {options.model!r} from {source}: {_describe(exc)}"
        ) from exc
    return model.to(device), tokenizer, source, int(embed_dim)


def _tokenizer_for(text_cfg: dict[str, Any]) -> Any:
    from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

    context = text_cfg.get("context_length", 77)
    if text_cfg.get("hf_tokenizer_name"):
        return HFTokenizer(text_cfg["hf_tokenizer_name"], context_length=context)
    return SimpleTokenizer(context_length=context, **text_cfg.get("tokenizer_kwargs", {}))


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class OpenCLIPEncoder(FrozenEncoder):
    """An OpenCLIP model as a codi2 encoder: one unit vector per image or text."""

    name = NAME
    sample_rate = 16000  # unused (no audio); the interface asks every encoder for one

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        embed_dim: int,
        modalities: Sequence[str] = ("image", "text"),
        batch_size: int = 32,
        identity: str = "openclip(random)",
    ):
        super().__init__()
        from open_clip.transform import PreprocessCfg, image_transform_v2

        self.model = model
        self.tokenizer = tokenizer
        self.modalities = tuple(m for m in ("image", "text") if m in modalities)
        self.batch_size = batch_size
        self.preprocess = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
        self.embed_dim = embed_dim
        self._identity = identity
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_options(cls, options: OpenCLIPOptions) -> OpenCLIPEncoder:
        device = torch.device(options.device or _default_device())
        model, tokenizer, source, embed_dim = build_model(options, device)
        if source == "random weights":
            weights = f"random-{id(model):x}"  # never reuse features of random weights
        else:
            stat = Path(source).stat()
            weights = f"{Path(source).resolve()}@{stat.st_size}:{stat.st_mtime_ns}"
        arch = options.model
        if options.model_config_ is not None:  # a custom architecture: name it by its config
            digest = hashlib.sha256(json.dumps(options.model_config_, sort_keys=True).encode()).hexdigest()
            arch = f"{options.model}:{digest[:16]}"
        return cls(
            model,
            tokenizer,
            embed_dim=embed_dim,
            modalities=options.modalities or ("image", "text"),
            batch_size=options.batch_size,
            identity=f"openclip(model={arch};weights={weights};dtype={options.dtype})",
        )

    @property
    def identity(self) -> str:
        return self._identity

    def tokens_per_item(self, modality: str) -> int:
        self.check_modality(modality)
        return 1

    def _input(self, item: Media, modality: str) -> Any:
        if modality == "text":
            if not isinstance(item.data, str):
                raise MediaError("text item must hold a str", item=item.label)
            return item.data
        from PIL import Image

        data = np.asarray(item.data)
        if data.ndim != 3 or data.shape[-1] != 3 or data.dtype != np.uint8 or 0 in data.shape:
            raise MediaError(f"image must be uint8 [H, W, 3], got {data.dtype} {data.shape}", item=item.label)
        return self.preprocess(Image.fromarray(np.ascontiguousarray(data), mode="RGB"))

    @torch.no_grad()
    def encode(self, items: Sequence[Media], modality: str) -> torch.Tensor:
        """Unit vectors ``[B, 1, embed_dim]`` (float32, no gradient)."""
        items = self.check_items(items, modality)
        param = next(self.model.parameters())
        if not items:
            return torch.zeros(0, 1, self.embed_dim, device=param.device)
        inputs = [self._input(item, modality) for item in items]
        out = []
        for start in range(0, len(inputs), self.batch_size):
            chunk = inputs[start : start + self.batch_size]
            if modality == "text":
                out.append(self.model.encode_text(self.tokenizer(chunk).to(param.device), normalize=True))
            else:
                pixels = torch.stack(chunk).to(device=param.device, dtype=param.dtype)
                out.append(self.model.encode_image(pixels, normalize=True))
        return torch.cat(out).float()[:, None]

