"""State files: safetensors for tensors, JSON for the rest, written atomically.

Every write goes to a temporary file in the same directory, is fsynced and then
``os.replace``-d over the target, so a crash mid-write leaves the previous good
file in place. Reads validate and raise :class:`StateFileError` naming the file
and what is wrong. Nothing here ever unpickles; legacy ``.pt`` files are read
with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

PathLike = str | os.PathLike
_UMASK = os.umask(0o022)  # read once at import (setting it is the only way to read it), then put back
os.umask(_UMASK)


class StateFileError(RuntimeError):
    """A state file is missing, corrupt, truncated or does not match what was expected."""


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes 0600; give what open() would (a teammate can read a persona)
            os.fchmod(fd, _file_mode(path))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _file_mode(path: Path) -> int:
    """The existing file's permissions, else what a plain ``open()`` gives: 0o666 less the umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o666 & ~_UMASK


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_tensors(path: PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Atomically write a safetensors file (tensors are made contiguous and moved to CPU)."""
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, save(cpu, metadata=metadata))


def load_tensors(path: PathLike, expected: dict[str, tuple[int, ...]] | None = None,
                 device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a safetensors file; with ``expected`` (name -> shape) check names and shapes."""
    path = Path(path)
    if not path.exists():
        raise StateFileError(f"state file {path} does not exist")
    try:
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as err:
        raise StateFileError(f"state file {path} is corrupt or truncated ({err}); it was not loaded") from err
    if expected is not None:
        missing = sorted(set(expected) - set(tensors))
        if missing:
            raise StateFileError(f"state file {path} lacks tensors {missing}")
        for name, shape in expected.items():
            if tuple(tensors[name].shape) != tuple(shape):
                raise StateFileError(
                    f"state file {path}: tensor {name!r} has shape {tuple(tensors[name].shape)}, expected {tuple(shape)}"
                )
    return tensors


def save_json(path: PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8"))


def load_json(path: PathLike, validate: Callable[[Any], None] | None = None) -> Any:
    """Read a JSON file; a broken one raises :class:`StateFileError` naming it."""
    path = Path(path)
    if not path.exists():
        raise StateFileError(f"state file {path} does not exist")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StateFileError(f"state file {path} is not valid JSON ({err}); it was not loaded") from err
    if validate is not None:
        validate(obj)
    return obj


def append_jsonl(path: PathLike, record: dict) -> None:
    """Append one JSON line (a log, not state: appends are not atomic replaces). A torn last line, left by a
    crash mid-append, is cut off first, so the new record starts on a line of its own."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        end = f.seek(0, os.SEEK_END)
        if end:
            f.seek(end - 1)
            if f.read(1) != b"\n":  # a torn record that never finished: drop it
                f.truncate(_end_of_last_line(f, end))
        f.write((json.dumps(record, default=str) + "\n").encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def _end_of_last_line(f, end: int, block: int = 1 << 16) -> int:
    """Offset just past the last newline before ``end`` (0 when there is none)."""
    while end > 0:
        start = max(0, end - block)
        f.seek(start)
        newline = f.read(end - start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


def rewrite_jsonl(path: PathLike, records: list[dict]) -> None:
    """Atomically replace a JSONL file with ``records``."""
    atomic_write_bytes(path, "".join(json.dumps(r, default=str) + "\n" for r in records).encode("utf-8"))


def remove_stale_temp_files(directory: PathLike) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` files an interrupted atomic write left behind. Only for a directory whose
    writer holds it exclusively (a lock), or a live write's temp file could go."""
    stale = [p for p in Path(directory).glob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def tensor_file_metadata(path: PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file (empty when it has none)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise StateFileError(f"state file {path} is corrupt or truncated ({err}); it was not loaded") from err


def read_jsonl(path: PathLike) -> list[dict]:
    """Read a JSONL file, skipping a torn last line left by a crash."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if n == len(lines) - 1:
                break
            raise StateFileError(f"{path} line {n + 1} is not valid JSON ({err})") from err
    return records


def load_legacy_pt(path: PathLike) -> Any:
    """Read a legacy PyTorch file without unpickling arbitrary objects."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError / RuntimeError variants
        raise StateFileError(f"legacy file {path} could not be read safely ({err})") from err


def dedupe_shared(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop second names of tied tensors (safetensors refuses shared storage)."""
    seen, out = set(), {}
    for name, tensor in state_dict.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key in seen:
            continue
        seen.add(key)
        out[name] = tensor
    return out


def resolve_dir(name_or_path: PathLike, revision: str | None = None, token: str | None = None) -> Path:
    """A local directory as is, or a Hub repo id downloaded (snapshot) to the local cache."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(name_or_path), revision=revision, token=token))
