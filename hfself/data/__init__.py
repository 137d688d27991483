"""Package data: the embedded default model (a tiny Llama pretrained on the Shakespeare and Python corpora)
and small corpora."""

from __future__ import annotations

import sysconfig
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL = str(DATA_DIR / "default_model")
# How configs and cards name the embedded default: the same on every machine (its directory is not), and never a
# Hub id (a colon cannot be in one).
DEFAULT_MODEL_ID = "hfself:default"
CORPORA_DIR = DATA_DIR / "corpora"

# Modules of the running interpreter's standard library used as the "python" corpus.
STDLIB_MODULES = ("textwrap.py", "heapq.py", "bisect.py", "string.py", "functools.py", "json/__init__.py",
                  "json/decoder.py", "json/encoder.py", "fractions.py", "statistics.py", "shlex.py", "glob.py")


def resolve_model(name_or_path: str) -> str:
    """The directory of an ``hfself:`` id (:mod:`hfself.named_models`); any other Hub id or path as given."""
    if str(name_or_path) == DEFAULT_MODEL_ID:
        return DEFAULT_MODEL
    if str(name_or_path).startswith("hfself:"):
        from hfself.named_models import resolve

        return resolve(name_or_path)
    return str(name_or_path)


def is_default_model(name_or_path: str | None) -> bool:
    if not name_or_path:
        return False
    return str(name_or_path) == DEFAULT_MODEL_ID or Path(name_or_path).resolve() == Path(DEFAULT_MODEL).resolve()


def corpus_text(name: str) -> str:
    """Text of a bundled corpus ("shakespeare"; "neutral": plain everyday sentences written for hfself,
    one per line; "everyday": paragraphs of plain prose written for hfself, held out from every bundled training
    set) or of the Python standard library ("python")."""
    if name == "shakespeare":
        return (CORPORA_DIR / "tinyshakespeare.txt").read_text(encoding="utf-8")
    if name in ("neutral", "everyday"):  # everyday: plain prose that no bundled training set holds (evals)
        return (CORPORA_DIR / f"{name}.txt").read_text(encoding="utf-8")
    if name == "python":
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        return "\n\n".join((stdlib / m).read_text(encoding="utf-8") for m in STDLIB_MODULES if (stdlib / m).exists())
    path = Path(name)
    if not path.is_file():
        raise ValueError(f"unknown corpus {name!r}: use 'shakespeare', 'python', 'neutral', 'everyday' or a path "
                         "to a text file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"corpus {path} is not UTF-8: byte {data[err.start]:#04x} at offset {err.start} "
                         f"({err.reason}); convert it, e.g. iconv -f latin1 -t utf-8") from None
    if not text.strip():
        raise ValueError(f"corpus {path} is empty: there is nothing to train on")
    return text


def text_chunks(text: str, chunk_chars: int = 512, max_chunks: int | None = None) -> list[str]:
    """Split text into chunks of about ``chunk_chars`` characters on line boundaries."""
    chunks, current = [], []
    size = 0
    for line in text.splitlines(keepends=True):
        current.append(line)
        size += len(line)
        if size >= chunk_chars:
            chunks.append("".join(current))
            current, size = [], 0
            if max_chunks is not None and len(chunks) >= max_chunks:
                return chunks
    if current:
        chunks.append("".join(current))
    return chunks
