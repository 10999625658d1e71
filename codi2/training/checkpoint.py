"""Training checkpoints: written atomically, read without unpickling.

A checkpoint is a folder ``output_dir/checkpoints/step-000123/`` holding

- ``config.json`` + ``model.safetensors``: the codi2 model directory (``save_pretrained``), so
  ``codi2.load(checkpoint)`` loads it directly;
- ``optimizer.safetensors`` + ``optimizer.json`` (``optimizer-rank{r}.*`` when the optimizer is
  sharded across processes), ``scheduler.json``, ``scaler.json`` (fp16 only);
- ``rng-rank{r}.json`` (+ ``.safetensors``): every process's Python, NumPy and torch RNG states;
- ``trainer_state.json``: the step, the data position and the run's settings — written last.

State that is not a tensor goes to JSON; tensors go to safetensors, referenced from the JSON by
name (:func:`save_tree` / :func:`load_tree`). Nothing is pickled.

Atomicity: every file is written into ``checkpoints/.tmp-step-000123/``, which is renamed to
``step-000123`` once complete; then the pointer file ``checkpoints/latest`` is replaced
(temporary file + ``os.replace``). A process killed at any moment leaves either the previous
checkpoint as ``latest`` or the new one, never a half-written one: leftovers named ``.tmp-*``
or ``.trash-*`` are ignored and removed by the next run.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codi2.errors import CheckpointError

if TYPE_CHECKING:
    import torch

STATE_FILE = "trainer_state.json"
LATEST_FILE = "latest"
CHECKPOINTS = "checkpoints"
FORMAT = 1
_STEP_DIR = re.compile(r"^step-(\d+)$")


def step_name(step: int) -> str:
    return f"step-{step:06d}"


# --- trees of tensors and JSON values -----------------------------------------------------------


def _encode(obj: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    import numpy as np
    import torch

    if isinstance(obj, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = obj.detach().cpu().contiguous()
        return {"__tensor__": name}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": obj.dtype.str}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors, f"{where}.{k}") for k, v in obj.items()}
        for k in obj:
            if not isinstance(k, (str, int, float, bool)) or k is None:
                raise CheckpointError(f"cannot store {where}: dict key {k!r} of type {type(k).__name__}")
        return {"__dict__": [[k, _encode(v, tensors, f"{where}[{k!r}]")] for k, v in obj.items()]}
    raise CheckpointError(f"cannot store {where}: values of type {type(obj).__name__} are not supported")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    import numpy as np

    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return np.asarray(obj["__ndarray__"], dtype=np.dtype(obj["dtype"]))
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__dict__" in obj:
        return {k: _decode(v, tensors) for k, v in obj["__dict__"]}
    return {k: _decode(v, tensors) for k, v in obj.items()}


def save_tree(directory: Path, name: str, obj: Any) -> None:
    """Write ``obj`` (nested dicts/lists/tuples of tensors, arrays and JSON values) as
    ``name.json`` plus ``name.safetensors`` for its tensors."""
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {}
    tree = _encode(obj, tensors, name)
    if tensors:
        save_file(tensors, str(directory / f"{name}.safetensors"))
    _write_json(directory / f"{name}.json", {"format": FORMAT, "tree": tree})


def load_tree(directory: Path, name: str) -> Any:
    """Read what :func:`save_tree` wrote; CheckpointError names the file on any problem."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta = read_json(directory / f"{name}.json")
    tensors: dict[str, Any] = {}
    tensor_file = directory / f"{name}.safetensors"
    if tensor_file.is_file():
        try:
            tensors = load_file(str(tensor_file))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{tensor_file}: unreadable: {exc}") from None
    try:
        return _decode(meta["tree"], tensors)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{directory / name}.json: malformed state ({type(exc).__name__}: {exc})") from None


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, allow_nan=True) + "\n", encoding="utf-8")


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None


# --- random number generators ---------------------------------------------------------------------


def capture_rng() -> dict[str, Any]:
    """This process's Python, NumPy, torch (CPU and every CUDA device) RNG states."""
    import numpy as np
    import torch

    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], where: str = "rng state") -> None:
    """Restore :func:`capture_rng`'s output; CheckpointError names ``where`` and the field."""
    import numpy as np
    import torch

    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: malformed RNG state (a {type(state).__name__}, not an object)")
    setters = {"python": random.setstate, "numpy": np.random.set_state, "torch": torch.set_rng_state}
    if "cuda" in state and torch.cuda.is_available():
        setters["cuda"] = torch.cuda.set_rng_state_all
    for field, setter in setters.items():
        if field not in state:
            raise CheckpointError(f"{where}: field {field!r} is missing")
        try:
            setter(state[field])
        except (TypeError, ValueError, RuntimeError, IndexError, KeyError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(f"{where}: field {field!r} is malformed ({reason})") from None


#: the fields of trainer_state.json a resume reads, and what each must be
_STATE_FIELDS = {"step": "count", "epoch": "count", "batch_in_epoch": "count", "micro_step": "count",
                 "world_size": "positive", "trainable": "names", "sharded_optimizer": "flag"}  # fmt: skip


def check_trainer_state(state: Any, path: Path) -> dict[str, Any]:
    """``trainer_state.json``'s content if every field a resume reads has the right type;
    otherwise a CheckpointError naming the file and the field (not a TypeError later)."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: malformed (a JSON {type(state).__name__}, not an object)")
    for field, kind in _STATE_FIELDS.items():
        if field not in state:
            if field == "sharded_optimizer":
                continue  # older checkpoints lack it
            raise CheckpointError(f"{path}: field {field!r} is missing")
        value = state[field]
        ok = {
            "count": isinstance(value, int) and not isinstance(value, bool) and value >= 0,
            "positive": isinstance(value, int) and not isinstance(value, bool) and value >= 1,
            "names": isinstance(value, list) and all(isinstance(v, str) for v in value),
            "flag": isinstance(value, bool),
        }[kind]
        if not ok:
            expected = {"count": "a non-negative integer", "positive": "a positive integer",
                        "names": "a list of parameter names", "flag": "true or false"}[kind]  # fmt: skip
            raise CheckpointError(f"{path}: field {field!r} must be {expected}, got {value!r:.60}")
    return state


# --- folders ----------------------------------------------------------------------------------------


def fsync_tree(directory: Path) -> None:
    """Flush every file of ``directory`` to disk (a rename is only as durable as what it names)."""
    for path in directory.iterdir():
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())


def staging_dir(root: Path, name: str) -> Path:
    """A fresh, empty ``root/.tmp-name`` (a leftover from a killed run is removed)."""
    tmp = root / f".tmp-{name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def publish_dir(tmp: Path, final: Path) -> None:
    """Rename a complete staging folder to ``final``, replacing an older folder of that name."""
    fsync_tree(tmp)
    if final.exists():
        trash = final.parent / f".trash-{final.name}-{os.getpid()}"
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)


def write_latest(root: Path, name: str) -> None:
    """Point ``root/latest`` at checkpoint ``name``, atomically."""
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".latest.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(name + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, root / LATEST_FILE)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def is_complete(checkpoint: Path) -> bool:
    return (checkpoint / STATE_FILE).is_file()


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and path.is_dir() and is_complete(path):
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint ``root/latest`` names, or (pointer missing or stale) the newest complete one."""
    pointer = root / LATEST_FILE
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if candidate.name and is_complete(candidate):
            return candidate
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def prune(root: Path, keep_last: int | None, protect: Path) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints (never ``protect``). Each is renamed
    to ``.trash-*`` first, so a kill during deletion never leaves a half-deleted checkpoint."""
    if keep_last is None:
        return []
    removed = []
    for _, path in list_checkpoints(root)[:-keep_last]:
        if path.resolve() == protect.resolve():
            continue
        trash = root / f".trash-{path.name}-{os.getpid()}"
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
        removed.append(path)
    return removed


def clean_leftovers(root: Path) -> None:
    """Remove staging and trash folders a killed run left behind."""
    if not root.is_dir():
        return
    for path in root.iterdir():
        if path.name.startswith((".tmp-", ".trash-", ".latest.")):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def resolve_resume(resume: str | Path, output_dir: Path) -> Path | None:
    """The checkpoint to continue from. ``resume``: a checkpoint folder, a run's output folder or
    its ``checkpoints`` folder (their latest checkpoint), or ``"auto"`` (this run's latest, if any)."""
    if str(resume) == "auto":
        return latest_checkpoint(output_dir / CHECKPOINTS)
    path = Path(resume).expanduser()
    if not path.exists():
        raise CheckpointError(f"--resume {path}: no such folder")
    if is_complete(path):
        return path
    for root in (path / CHECKPOINTS, path):
        found = latest_checkpoint(root)
        if found is not None:
            return found
    raise CheckpointError(f"--resume {path}: not a checkpoint (no {STATE_FILE}) and holds no complete checkpoint")
