"""Training data in the formats people have, ready for TRL's SFTTrainer.

Sources (:func:`load_training_data`): a bundled corpus (``shakespeare``, ``python``, ``neutral``), a bundled
persona (``hfself:wren``), a local ``.jsonl``/``.json``/``.parquet``/``.csv``/``.txt`` file, a folder written by
``Dataset.save_to_disk`` or holding data files, or a Hub id.

Formats (:func:`dataset_format`), as TRL names them: *conversational* (``messages``: a list of
``{"role", "content"}``; ShareGPT's ``conversations`` of ``{"from", "value"}`` is converted), *prompt-completion*
(``prompt`` + ``completion``, plain or conversational; TRL puts the loss on the completion) and *language
modeling* (``text``). Conversational data is tokenized here with the loss on the assistant turns only
(:func:`tokenize_conversations`), for any chat template that renders earlier turns unchanged, with or without
``{% generation %}`` markers.
"""

from __future__ import annotations

import json
from pathlib import Path

from hfself.data import DATA_DIR, corpus_text, text_chunks

PERSONAS_DIR = DATA_DIR / "personas"
CORPORA = ("shakespeare", "python", "neutral", "everyday")
DATA_FILE_TYPES = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}


class DataFormatError(ValueError):
    """Training data hfself cannot read or cannot put the loss on."""


# ---------------------------------------------------------------------- bundled personas


def persona_names() -> list[str]:
    return sorted(p.name for p in PERSONAS_DIR.iterdir() if (p / "card.json").is_file())


def persona_dir(name: str) -> Path:
    """The folder of a bundled persona (``hfself:wren`` or ``wren``): card.json, train.jsonl, heldout.jsonl."""
    short = str(name).removeprefix("hfself:")
    path = PERSONAS_DIR / short
    if not (path / "card.json").is_file():
        raise DataFormatError(f"unknown bundled persona {name!r}; hfself has {', '.join(persona_names())}")
    return path


def persona_card(name: str) -> dict:
    """A bundled persona's card: name, summary, system_prompt and the adherence markers."""
    return json.loads((persona_dir(name) / "card.json").read_text(encoding="utf-8"))


def is_bundled_persona(name) -> bool:
    short = str(name or "").removeprefix("hfself:")
    return str(name or "").startswith("hfself:") and (PERSONAS_DIR / short / "card.json").is_file()


# ---------------------------------------------------------------------- loading


def load_training_data(source: str, split: str = "train", text_column: str = "text", chunk_chars: int = 512):
    """A ``datasets.Dataset`` from any source above, its data column named as TRL expects."""
    from datasets import Dataset, load_dataset, load_from_disk

    source = str(source)
    if source in CORPORA:
        return Dataset.from_dict({"text": text_chunks(corpus_text(source), chunk_chars)})
    if is_bundled_persona(source):
        return load_dataset("json", data_files=str(persona_dir(source) / f"{split}.jsonl"), split="train")
    if source.startswith("hfself:"):
        raise DataFormatError(f"unknown bundled data {source!r}; hfself has "
                              f"{', '.join(f'hfself:{n}' for n in persona_names())} and the corpora {CORPORA}")
    path = Path(source).expanduser()
    if path.is_file():
        kind = DATA_FILE_TYPES.get(path.suffix.lower())
        if kind is None:
            raise DataFormatError(f"{path}: unknown data file type {path.suffix!r}; use one of "
                                  f"{', '.join(DATA_FILE_TYPES)}")
        if kind == "text":
            return Dataset.from_dict({"text": text_chunks(corpus_text(str(path)), chunk_chars)})
        ds = load_dataset(kind, data_files=str(path), split="train")
    elif path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            ds = load_from_disk(str(path))
            ds = ds[split] if hasattr(ds, "keys") else ds
        else:
            ds = load_dataset(str(path), split=split)
    elif source.startswith(("/", ".", "~")) or Path(source).suffix.lower() in DATA_FILE_TYPES:
        raise DataFormatError(f"training data {source!r}: no such file or folder")
    else:
        ds = load_dataset(source, split=split)  # a Hub id
    return with_trl_columns(ds, text_column, source)


def with_trl_columns(ds, text_column: str = "text", source: str = "the dataset"):
    """``text_column`` renamed to what its contents are (``messages`` for chats, else ``text``), ShareGPT
    converted to ``messages``; a dataset in none of TRL's formats is refused, naming its columns."""
    from trl.data_utils import is_conversational_from_value, maybe_convert_to_chatml

    columns = ds.column_names
    if text_column != "text" and text_column in columns:
        first = ds[0][text_column]
        target = "messages" if isinstance(first, list) else "text"
        if target != text_column:
            if target in columns:
                ds = ds.remove_columns(target)
            ds = ds.rename_column(text_column, target)
    elif text_column != "text":
        raise DataFormatError(f"{source}: no column {text_column!r}; it has {columns}")
    if len(ds) and is_conversational_from_value(ds[0]):
        roles = {"human": "user", "gpt": "assistant"}  # ShareGPT's names; chat templates know TRL's

        def to_messages(example):
            example = maybe_convert_to_chatml(example)
            return {"messages": [{**m, "role": roles.get(m["role"], m["role"])} for m in example["messages"]]}

        ds = ds.map(to_messages, remove_columns=["conversations"])
    dataset_format(ds, source)  # refuses what TRL cannot train on
    return ds


def dataset_format(ds, source: str = "the dataset") -> str:
    """``"conversational"``, ``"prompt_completion"`` or ``"text"``."""
    columns = set(ds.column_names)
    if "messages" in columns:
        first = ds[0]["messages"] if len(ds) else []
        if not (isinstance(first, list) and all(isinstance(m, dict) and {"role", "content"} <= m.keys()
                                                for m in first)):
            raise DataFormatError(f"{source}: 'messages' must be a list of {{'role', 'content'}} dicts")
        return "conversational"
    if {"prompt", "completion"} <= columns:
        return "prompt_completion"
    if "text" in columns:
        return "text"
    raise DataFormatError(f"{source}: no training column in {sorted(columns)}; hfself reads TRL's formats: "
                          "'messages' (chat), 'prompt' + 'completion', or 'text' (name yours with --text_column)")


def check_has_text(ds, source: str) -> None:
    """Refuse data with nothing to train on."""
    if len(ds) == 0:
        raise DataFormatError(f"the training data ({source}) is empty: there is nothing to train on")
    kind = dataset_format(ds, source)
    sample = ds.select(range(min(len(ds), 1000)))
    column = {"conversational": "messages", "prompt_completion": "completion", "text": "text"}[kind]
    if not any(str(v).strip() for v in sample[column]):
        raise DataFormatError(f"the training data ({source}) has no text to train on")


# ---------------------------------------------------------------------- conversations


def render_chat(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    """``messages`` through the tokenizer's chat template (a template-less tokenizer gets ``role: content``
    lines, the shape TRL's collators expect of plain text)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join(lines) + ("\nassistant:" if add_generation_prompt else "\n")


def chat_prompt(tokenizer, question: str, system_prompt: str | None = None) -> str:
    """One user turn (and an optional system prompt), ready for generation, in the model's own chat format."""
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else [])
    return render_chat(tokenizer, [*messages, {"role": "user", "content": question}], add_generation_prompt=True)


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns (each with its end-of-turn).

    A turn's span is what rendering it adds after the generation prompt of the turns before it; the template must
    render those earlier turns unchanged (every mainstream template does), else the conversation is refused.
    """
    text = render_chat(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render_chat(tokenizer, messages[:i], add_generation_prompt=True) if i else ""
        through = render_chat(tokenizer, messages[: i + 1])
        if not (through.startswith(before) and text.startswith(through)):
            raise DataFormatError(
                "this chat template renders earlier turns differently once later turns follow (it is not "
                "prefix-preserving), so the assistant tokens cannot be found; give a template with "
                "{% generation %} markers, or prompt/completion columns")
        spans.append((len(before), len(through)))
    return text, spans


def tokenize_conversations(ds, tokenizer, max_length: int | None = None):
    """Pre-tokenize a conversational dataset: ``input_ids`` and ``assistant_masks`` (1 on assistant tokens), which
    SFTTrainer turns into labels with the loss on the assistant turns only."""

    def tokenize(example):
        text, spans = assistant_spans(tokenizer, example["messages"])
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        mask = [int(any(start <= s < end for start, end in spans)) for s, _ in encoded["offset_mapping"]]
        ids = encoded["input_ids"]
        if max_length:
            ids, mask = ids[:max_length], mask[:max_length]
        return {"input_ids": ids, "assistant_masks": mask}

    if not getattr(tokenizer, "is_fast", False):
        raise DataFormatError("assistant-only loss needs a fast tokenizer (character offsets)")
    out = ds.map(tokenize, remove_columns=ds.column_names, desc="tokenizing conversations")
    empty = sum(1 for m in out["assistant_masks"] if 1 not in m)
    if empty == len(out):
        raise DataFormatError("no conversation has an assistant turn within max_length: nothing to train on")
    return out.filter(lambda m: 1 in m, input_columns="assistant_masks") if empty else out


def questions(source: str, limit: int | None = None) -> list[str]:
    """Questions to ask a model: the first user turn of each example of a conversational dataset (a bundled
    persona's held-out split for ``hfself:<name>``), ``prompt`` or ``question`` columns, or a ``.txt`` file of one
    question a line."""
    path = Path(str(source)).expanduser()
    if path.suffix.lower() == ".txt" and path.is_file():
        found = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        ds = load_training_data(source, split="heldout") if is_bundled_persona(source) else load_training_data(source)
        if "messages" in ds.column_names:
            found = [next(m["content"] for m in msgs if m["role"] == "user") for msgs in ds["messages"]]
        else:
            column = next((c for c in ("question", "prompt", "text") if c in ds.column_names), None)
            if column is None:
                raise DataFormatError(f"{source}: no messages, question or prompt column")
            found = [q if isinstance(q, str) else next(m["content"] for m in q if m["role"] == "user")
                     for q in ds[column]]
    return found[:limit] if limit else found
