"""TRL's parser (HfArgumentParser + YAML), shared by every recipe.

``--config file.yaml`` sets defaults; command-line flags override them (``trl.TrlParser``;
``env:`` in the YAML sets environment variables). A YAML key or flag that no dataclass
field knows is an error naming the closest valid one.
``plugins: [...]`` enables plugins for the run (see :class:`RunArguments`).
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from trl import ModelConfig

from hfself.data import DEFAULT_MODEL_ID


@dataclass
class RunArguments(ModelConfig):
    """What every recipe has: the model (``trl.ModelConfig``: its id, dtype, attention, ``use_peft`` and the LoRA
    shape), the data, and which plugins act."""

    model_name_or_path: str = field(
        default=DEFAULT_MODEL_ID,
        metadata={"help": f"Hub id or local directory of a causal LM. Default: {DEFAULT_MODEL_ID}, the embedded tiny "
                          "Llama pretrained on Shakespeare and Python (a directory with a config and no weights "
                          "gives a seeded random init)."},
    )
    dtype: str | None = field(default="auto", metadata={"help": "auto (the checkpoint's own), bfloat16, float16 "
                                                                "or float32.",
                                                        "choices": ["auto", "bfloat16", "float16", "float32"]})
    plugins: list[str] = field(default_factory=list, metadata={"help": "Plugins enabled for this run."})
    callbacks: list[str] = field(default_factory=list,
                                 metadata={"help": "Extra TrainerCallbacks by registered name."})
    optimizer: str | None = field(default=None,
                                  metadata={"help": "Optimizer by registered name (default: Trainer's own)."})
    corpus: str = field(default="shakespeare",
                        metadata={"help": "'shakespeare', 'python', 'neutral' or a text file (see dataset_name)."})
    dataset_name: str | None = field(default=None, metadata={
        "help": "Training data, overriding corpus: a bundled persona (hfself:wren), a .jsonl/.json/.parquet/.csv/"
                ".txt file, a datasets folder, or a Hub id; TRL's formats: messages (loss on assistant turns), "
                "prompt + completion (loss on the completion), or text."})
    dataset_split: str = field(default="train", metadata={"help": "Split of dataset_name."})
    text_column: str = field(default="text", metadata={
        "help": "The data column of dataset_name when it is not TRL's name (a list of messages or plain text)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Cap on training examples."})
    chunk_chars: int = field(default=512, metadata={"help": "Characters per example when chunking a corpus."})
    seed_model: int = field(default=0, metadata={"help": "Seed for random init when the model has no weights."})

    def __post_init__(self):
        super().__post_init__()
        # TRL turns a one-item list into a string, which peft reads as a regex to fullmatch: "q_proj" alone would
        # match no module. A plain name stays a list; "all-linear" and real regexes stay strings.
        target = self.lora_target_modules
        if isinstance(target, str) and target != "all-linear" and not set(target) & set(".*+?[](){}|^$\\"):
            self.lora_target_modules = [target]


# Flags hfself once had under another name: an old YAML or command line gets the new name, not a guess.
RENAMED = {"use_lora": "use_peft"}


class ConfigError(ValueError):
    pass


def _field_names(dataclass_types) -> list[str]:
    return [f.name for dc in dataclass_types for f in dataclasses.fields(dc) if f.init]


def load_yaml(path: str | Path, dataclass_types) -> dict[str, Any]:
    """Read a recipe YAML and reject unknown keys."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of argument names to values, got {type(data).__name__}")
    check_keys(data, dataclass_types, source=str(path))
    return data


def check_keys(data: dict, dataclass_types, source: str = "config") -> None:
    valid = [*_field_names(dataclass_types), "env"]  # env: environment variables, set by TrlParser
    for key in data:
        if key in RENAMED and key not in valid:
            raise ConfigError(f"{source}: {key!r} is now {RENAMED[key]!r}")
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{source}: unknown key {key!r}{hint}")


def parse_args(dataclass_types, args: list[str] | None = None, config: str | None = None) -> tuple:
    """Parse ``--config file.yaml`` plus flags into instances of ``dataclass_types`` (``trl.TrlParser``).

    ``config`` is the YAML used when the arguments name none. On top of TrlParser: an unknown YAML key or flag is
    an error naming the closest valid one, abbreviated flags are refused, and values that would train nothing
    are refused before any work.
    """
    from trl import TrlParser

    args = list(sys.argv[1:] if args is None else args)
    if "--config" in args:
        config = args[args.index("--config") + 1]
    elif config:
        args = ["--config", str(config), *args]
    if config:
        load_yaml(config, dataclass_types)  # unknown keys: our error, with a did-you-mean, before TrlParser's
    parser = TrlParser(dataclass_types, allow_abbrev=False)  # --max_step is a typo, not --max_steps
    fields = {f.name for dc in dataclass_types for f in dataclasses.fields(dc)}
    if "bf16" in fields:
        parser.set_defaults(bf16=bf16_supported())  # TRL's None would mean "on", which fails on CPU
    if "dataloader_pin_memory" in fields:
        parser.set_defaults(dataloader_pin_memory=accelerator_available())  # pinning without a GPU only warns
    check_flags([a for a in args if a != "--config"], dataclass_types)
    parsed = parser.parse_args_and_config(args=args)
    check_values(parsed)
    return tuple(parsed)


def check_flags(args: list[str], dataclass_types) -> None:
    """Refuse a flag no dataclass field knows, naming the closest valid one (argparse would only list it)."""
    valid = _field_names(dataclass_types)
    known = {*valid, *(f"no_{name}" for name in valid), "help"}  # HfArgumentParser adds --no_<flag> for bools
    for arg in args:
        if arg.startswith("--"):
            name = arg[2:].split("=", 1)[0]
            if name in RENAMED and name not in known:
                raise ConfigError(f"--{name} is now --{RENAMED[name]}")
            if name not in known and name.replace("-", "_") not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f"; did you mean --{close[0]}?" if close else ""
                raise ConfigError(f"unknown flag --{name}{hint}")


def check_values(parsed) -> None:
    """Values that would make a run do nothing, refused before any work."""
    for inst in parsed:
        max_steps = getattr(inst, "max_steps", None)
        if max_steps is not None and (max_steps == 0 or max_steps < -1):
            raise ConfigError(f"max_steps {max_steps} would train nothing; give a positive number of steps, or -1 "
                              "to train for num_train_epochs")


def accelerator_available() -> bool:
    """Whether a CUDA or XPU device is there to pin memory for."""
    import torch

    return torch.cuda.is_available() or bool(getattr(torch, "xpu", None) and torch.xpu.is_available())


def bf16_supported() -> bool:
    """Whether bf16 mixed precision works here (CUDA with bf16, or Apple MPS)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def from_run_config(dataclass_type, run_config: dict[str, Any], exclude: tuple[str, ...] = ()):
    """An instance of ``dataclass_type`` from the keys of a flat run config that it has fields for."""
    names = {f.name for f in dataclasses.fields(dataclass_type) if f.init} - set(exclude)
    return dataclass_type(**{k: v for k, v in run_config.items() if k in names})


def flat_config(*instances) -> dict[str, Any]:
    """Merge dataclass instances into one dict (later instances win), as run-time hooks see it."""
    out: dict[str, Any] = {}
    for inst in instances:
        out.update({k: v for k, v in inst.to_dict().items()} if hasattr(inst, "to_dict") else dataclasses.asdict(inst))
    return out
