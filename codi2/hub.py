"""Publishing a codi2 model on the Hugging Face hub, with a model card.

::

    import codi2

    codi2.push_to_hub("runs/my-model", "me/codi2-shapes")   # a saved directory, or a loaded model
    model = codi2.load("me/codi2-shapes")                     # anyone, through huggingface_hub's cache

or ``codi2 push runs/my-model me/codi2-shapes``. What goes up is the model directory
(``config.json``, ``model.safetensors`` with the trained parameters only, and any files the
directory holds) plus a ``README.md`` model card: hub metadata (``library_name: codi2``, the
backbones as ``base_model``), the components, and how to load the model. Backbones are not
copied: the config names them by hub id or path, as they were loaded.

huggingface_hub is imported only when a card is written or a model pushed.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

from codi2.errors import ConfigError

CARD_FILE = "README.md"
# a hub model id ("org/name"); local paths and bare names are not base models
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
# option names under which plugins name their pretrained backbone (hf-causal-lm, diffusers decoders, ...)
_BACKBONE_OPTIONS = ("model", "checkpoint", "tokenizer")


def base_models(config: dict[str, Any]) -> list[str]:
    """The hub ids of the backbones a model config names (its components' ``model`` options)."""
    found: list[str] = []
    parts = [*config.get("encoders", []), config.get("llm", {}), *config.get("decoders", {}).values()]
    for part in parts:
        for key in _BACKBONE_OPTIONS:
            value = (part.get("options") or {}).get(key)
            if isinstance(value, str) and _HUB_ID.match(value) and not Path(value).exists() and value not in found:
                found.append(value)
    return found


def model_card(config: dict[str, Any], repo_id: str) -> str:
    """The ``README.md`` of a codi2 model on the hub: YAML metadata, components, how to load."""
    from huggingface_hub import ModelCardData

    bases = base_models(config)
    data = ModelCardData(library_name="codi2", pipeline_tag="any-to-any", base_model=bases or None,
                         tags=["codi2", "codi-2", "multimodal", "any-to-any"])  # fmt: skip

    def row(role: str, part: dict[str, Any]) -> str:
        options = json.dumps(part.get("options") or {}, sort_keys=True)
        return f"| {role} | `{part['plugin']}` | `{options}` |"

    rows = []
    for enc in config["encoders"]:
        reads = ", ".join(enc.get("modalities") or []) or "every modality it encodes"
        rows.append(row(f"encoder ({reads})", enc))
    rows.append(row("LLM", config["llm"]))
    rows += [row(f"{modality} decoder", dec) for modality, dec in config.get("decoders", {}).items()]
    outputs = ", ".join(config.get("decoders", {})) or "text only"
    name = repo_id.split("/")[-1]
    return f"""---
{data.to_yaml()}
---

# {name}

A [CoDi-2](https://arxiv.org/abs/2311.18775) model for **codi2**: an aligned encoder reads
interleaved text and media, a causal LLM answers, and diffusion decoders render the media it asks
for ({outputs}).

## Load it

```bash
pip install codi2
codi2 generate --model {repo_id} "Describe {{a}}." --media a=photo.png
```

```python
import codi2

model = codi2.load("{repo_id}")   # through the Hugging Face cache; HF_HUB_OFFLINE=1 uses the cache only
answer = model.generate("Describe {{a}}.", media={{"a": "photo.png"}}, seed=0)
print(answer.text)
answer.save("out")
```

## Components

Each component is a codi2 plugin, configured by its own options; a plugin that does not ship
with codi2 must be installed too (`codi2 plugins` lists what is installed).

| part | plugin | options |
|------|--------|---------|
{chr(10).join(rows)}

## Files

- `config.json`: the model configuration above (plugins, options, generation defaults);
- `model.safetensors`: only what training changed (projectors, output slots, marker rows,
  LoRA or decoder adapters); the backbones load from their own ids{", " + ", ".join(bases) if bases else ""}.
"""


def push_to_hub(model: Any, repo_id: str, *, private: bool | None = None, token: str | None = None,
                commit_message: str = "Upload codi2 model", card: bool = True) -> str:
    """Upload ``model`` (a loaded CoDi2Model, or a saved model directory) to the hub repository
    ``repo_id`` (created if needed), with a model card unless the directory already has a
    ``README.md`` or ``card`` is False. Returns the commit URL."""
    if not _HUB_ID.match(repo_id):
        raise ConfigError(f"hub repository id {repo_id!r}: expected 'namespace/name'")
    from huggingface_hub import CommitOperationAdd, HfApi

    with tempfile.TemporaryDirectory(prefix="codi2-push-") as staging:
        if isinstance(model, (str, Path)):
            folder = Path(model)
            if not (folder / "config.json").is_file():
                raise ConfigError(f"{folder}: not a saved codi2 model (no config.json)")
        else:
            folder = model.save_pretrained(staging)  # refuses a config that would not load back
        # every file of the model directory, hidden ones (temp files of atomic writes) excepted
        names = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
        operations = [CommitOperationAdd(path_in_repo=n.as_posix(), path_or_fileobj=str(folder / n))
                      for n in names if not any(part.startswith(".") for part in n.parts)]  # fmt: skip
        if card and not (folder / CARD_FILE).is_file():
            text = model_card(json.loads((folder / "config.json").read_text(encoding="utf-8")), repo_id)
            operations.append(CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=text.encode("utf-8")))
        api = HfApi(token=token)
        try:  # one commit: the model and its card arrive together
            api.create_repo(repo_id, private=private, exist_ok=True)
            commit = api.create_commit(repo_id, operations=operations, commit_message=commit_message)
        except Exception as exc:  # offline mode, authentication, HTTP errors: one line naming the repo
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ConfigError(f"push to {repo_id!r} failed: {type(exc).__name__}: {first}") from None
    return str(getattr(commit, "commit_url", commit))


__all__ = ["base_models", "model_card", "push_to_hub"]
