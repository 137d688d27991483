"""From a recipe's arguments to Trainer/SFTTrainer keyword arguments.

Models are loaded here (Hub id, local directory, or the embedded default,
``hfself:default``), then each enabled plugin may wrap them (``hfself_prepare_model``)
and contribute callbacks (``hfself_trainer_callbacks``); named callbacks and
optimizers come from the registries.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from functools import partial
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, TrainingArguments

from hfself import plugins
from hfself.data import resolve_model

logger = logging.getLogger("hfself")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")

# DeepSpeed (the deepspeed extra, part of dev) warns "unable to detect" a GPU on every run of a machine that has
# none; on such a machine its CPU accelerator is the only one, so say so (a DS_ACCELERATOR already set wins).
if not (torch.cuda.is_available() or (getattr(torch, "xpu", None) and torch.xpu.is_available())
        or torch.backends.mps.is_available()):
    os.environ.setdefault("DS_ACCELERATOR", "cpu")


def has_weights(name_or_path: str) -> bool:
    """False only for a local directory holding a config but no weights (a random init would be built)."""
    path = Path(resolve_model(name_or_path))
    return not path.is_dir() or any((path / f).exists() for f in WEIGHT_FILES)


def require_weights(name_or_path: str, needed_by) -> None:
    """Refuse to load ``needed_by`` (a saved persona) onto a config-only base, which would be a random init."""
    if not has_weights(name_or_path):
        raise FileNotFoundError(
            f"{needed_by} needs the weights of its base {name_or_path}, but that directory holds a config and no "
            f"weights ({', '.join(WEIGHT_FILES)}); loading it would silently give a random init. Save the persona "
            "with save_base=True, or pass base_model=... with the trained base.")


def load_causal_lm(name_or_path: str, dtype: torch.dtype | str | None = None,
                   attn_implementation: str | None = None, seed: int = 0, device_map=None, **from_pretrained):
    """Load (model, tokenizer); a config-only directory gives a seeded random init. ``from_pretrained`` keyword
    arguments (``revision``, ``quantization_config``) go to ``AutoModelForCausalLM.from_pretrained``."""
    from hfself.named_models import id_of

    named = id_of(name_or_path)
    name_or_path = resolve_model(name_or_path)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    revision = {"revision": from_pretrained["revision"]} if from_pretrained.get("revision") else {}
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if has_weights(name_or_path):
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype or "auto", device_map=device_map,
                                                     **kwargs, **from_pretrained)
    else:
        config = AutoConfig.from_pretrained(name_or_path)
        torch.manual_seed(seed)
        if isinstance(dtype, str):
            dtype = None if dtype == "auto" else getattr(torch, dtype)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, **kwargs)
        model.config.name_or_path = str(name_or_path)
    if named:  # personas and cards name it by its id, not by this machine's path
        model.config.name_or_path = tokenizer.name_or_path = named
    return model, tokenizer


def load_run_model(run):
    """(model, tokenizer) as a recipe's :class:`~hfself.args.RunArguments` (a ``trl.ModelConfig``) describes:
    id, revision, dtype, attention, and TRL's 4/8-bit quantization when asked for."""
    from trl import get_quantization_config

    quantization = get_quantization_config(run)
    extra, device_map = {}, None
    if quantization is not None:  # a quantized model is placed at load, each process on its own device
        from accelerate import PartialState

        extra["quantization_config"] = quantization
        device_map = {"": PartialState().local_process_index}
    if run.model_revision and run.model_revision != "main":
        extra["revision"] = run.model_revision
    return load_causal_lm(run.model_name_or_path, dtype=run.dtype, attn_implementation=run.attn_implementation,
                          seed=run.seed_model, device_map=device_map, **extra)


def prepare_model(model, run_config: dict[str, Any]):
    """Let each enabled plugin wrap the model, in registration order."""
    enabled = plugins.check_enabled(run_config.get("plugins") or [])
    for _, call in plugins.per_plugin_callers("hfself_prepare_model", only=enabled):
        result = call(model=model, run_config=run_config)
        if result and result[0] is not None:
            model = result[0]
    return model


def trainer_callbacks(model, run_config: dict[str, Any]) -> list:
    """Callbacks from enabled plugins plus those named under ``callbacks:``."""
    enabled = plugins.check_enabled(run_config.get("plugins") or [])
    callbacks = []
    for _, call in plugins.per_plugin_callers("hfself_trainer_callbacks", only=enabled):
        for result in call(model=model, run_config=run_config):
            callbacks.extend(result or [])
    named = plugins.registry("callbacks")
    for name in run_config.get("callbacks") or []:
        if name not in named:
            raise ValueError(f"unknown callback {name!r}; registered: {sorted(named)}")
        callbacks.append(named[name](run_config, model=model))
    return callbacks


def build_optimizer(model, training_args, run_config: dict[str, Any]):
    """The optimizer named by ``optimizer:`` (hfself's registry) or None (Trainer builds its own from ``optim:``).

    One route per run: setting both is an error, and so is ``optim: apollo_*``, which is transformers' route to the
    apollo-torch package, not hfself's APOLLO (``optimizer: apollo_adamw``).
    """
    from hfself.args import ConfigError

    name = run_config.get("optimizer")
    optim = getattr(training_args, "optim", None)
    optim = str(getattr(optim, "value", optim) or "")  # TrainingArguments holds an OptimizerNames enum
    default_optim = {f.name: f.default for f in dataclasses.fields(TrainingArguments)}["optim"]
    if name and optim and optim != default_optim:
        registered = sorted(plugins.registry("optimizers"))
        raise ConfigError(f"set either optimizer: {name} (hfself's optimizers: {registered}) or optim: {optim} "
                          "(transformers' optimizers), not both")
    if not name and optim.startswith("apollo"):
        raise ConfigError(f"optim: {optim} selects the apollo-torch package through transformers; hfself's recipes "
                          f"use their own APOLLO: set optimizer: {optim.replace('_layerwise', '')} instead "
                          "(or, for apollo-torch, build the Trainer yourself)")
    if not name:
        return None
    factories = plugins.registry("optimizers")
    if name not in factories:
        raise ValueError(f"unknown optimizer {name!r}; registered: {sorted(factories)} "
                         "(built-in optimizers come with the 'optim' plugin)")
    return factories[name](model, training_args, run_config=run_config)


def trainer_kwargs(model, training_args, run_config: dict[str, Any]) -> dict[str, Any]:
    """``callbacks`` and ``optimizers`` for Trainer/SFTTrainer from the active plugins."""
    kwargs: dict[str, Any] = {"callbacks": trainer_callbacks(model, run_config)}
    optimizer = build_optimizer(model, training_args, run_config)
    if optimizer is not None:
        kwargs["optimizers"] = (optimizer, None)
    return kwargs


def log_from_event(trainer, metrics: dict) -> None:
    """``trainer.log(metrics)`` from inside a callback event. Trainer's ``on_log`` clears ``should_log``; the flag
    is put back, so the training loss due at this step is still logged, not folded into the next log."""
    should_log = trainer.control.should_log
    trainer.log(metrics)
    trainer.control.should_log = should_log


def bind_callbacks(trainer) -> None:
    """Give callbacks that log through the trainer (``bind(trainer)``) their trainer; the run's README.md card
    becomes hfself's (:func:`write_run_card`)."""
    for callback in trainer.callback_handler.callbacks:
        if hasattr(callback, "bind"):
            callback.bind(trainer)
    trainer.create_model_card = partial(write_run_card, trainer)


def write_run_card(trainer, model_name: str | None = None, dataset_name: str | None = None, tags=None, **_) -> None:
    """The run's ``output_dir/README.md``, in place of Trainer/TRL's: it names the base by Hub id, or a local base by
    its folder alone (TRL's card says "fine-tuned version of [None]" and links nowhere for a local base)."""
    from hfself.wrapper import model_card

    if not trainer.is_world_process_zero():
        return
    config = trainer.model.config
    base = getattr(config, "base_model_name_or_path", None) or getattr(config, "_name_or_path", None)
    tags = [tags] if isinstance(tags, str) else list(tags or [])
    details = [f"- trained with `{type(trainer).__name__}` for {trainer.state.global_step} steps"]
    details += [f"- dataset: {dataset_name}"] if dataset_name else []
    card = model_card(model_name or Path(trainer.args.output_dir).name, base, [*tags, "trl"], details,
                      "A training run of [hfself](https://github.com/hfself/hfself). Its checkpoints are beside this "
                      "card; the recipe saves the trained model to its own folder.",
                      "from transformers import AutoModelForCausalLM\n"
                      "model = AutoModelForCausalLM.from_pretrained(\"<the saved model's directory>\")")
    Path(trainer.args.output_dir).mkdir(parents=True, exist_ok=True)
    card.save(str(Path(trainer.args.output_dir) / "README.md"))


def training_dataset(run_args, split_seed: int = 0):
    """A recipe's training set as read (:func:`hfself.training_data.load_training_data`: ``dataset_name``, else
    ``corpus``), refused before any model is loaded when there is nothing to train on."""
    from hfself.training_data import check_has_text, load_training_data

    source = run_args.dataset_name or run_args.corpus
    ds = load_training_data(source, split=run_args.dataset_split, text_column=run_args.text_column,
                            chunk_chars=run_args.chunk_chars)
    check_has_text(ds, source)
    if run_args.max_train_samples:
        ds = ds.shuffle(seed=split_seed).select(range(min(run_args.max_train_samples, len(ds))))
    return ds


def sft_dataset(ds, tokenizer, max_length: int | None):
    """What SFTTrainer gets: conversational data pre-tokenized with the loss on assistant turns only
    (:func:`hfself.training_data.tokenize_conversations`); prompt-completion and text data as they are (TRL puts the
    loss on the completion, or on every token)."""
    from hfself.training_data import dataset_format, tokenize_conversations

    if dataset_format(ds) == "conversational":
        return tokenize_conversations(ds, tokenizer, max_length)
    return ds


TRAINER_STATE = "trainer_state.json"  # Trainer writes it last: a checkpoint without it is incomplete


def checkpoint_to_restore(args, state, marker: str) -> Path | None:
    """The checkpoint a resumed Trainer run started from; it must hold ``marker``.

    Callbacks that keep their own state call this from ``on_train_begin``:
    ``resume_from_checkpoint`` when given as a path, else
    ``<output_dir>/checkpoint-<global_step>`` (``resume_from_checkpoint=True``).
    A resumed run whose checkpoint lacks ``marker`` is refused: going on would
    silently start that callback afresh.
    """
    if state.global_step == 0:
        return None
    candidates = [Path(c) for c in (args.resume_from_checkpoint,) if isinstance(c, (str, Path)) and Path(c).is_dir()]
    candidates.append(Path(args.output_dir) / f"checkpoint-{state.global_step}")
    for checkpoint in candidates:
        if (checkpoint / marker).exists():
            return checkpoint
    raise FileNotFoundError(f"resuming at step {state.global_step}, but {candidates[0]} has no {marker}: the "
                            "checkpoint was written without this callback's state (an interrupted save, or a run "
                            "without the callback). Resume from an earlier complete checkpoint.")


def checkpoint_dir_being_saved(args, state, control) -> Path | None:
    """The folder Trainer writes right after this event when it is about to save, else None. Callbacks save their
    state there from ``on_step_end``/``on_epoch_end``, before Trainer's ``trainer_state.json`` marks the
    checkpoint as written, so a crash in between leaves an incomplete checkpoint, never a silently partial one."""
    if not control.should_save:
        return None
    return Path(args.output_dir) / f"checkpoint-{state.global_step}"


def resume_argument(trainer, fresh_if_none: bool = False) -> str | None:
    """``trainer.args.resume_from_checkpoint`` resolved by :func:`resolve_checkpoint`, requiring the files the
    trainer's callbacks keep in every checkpoint (their ``checkpoint_files``); stored back in the args, where those
    callbacks look for it. ``fresh_if_none``: "true" without a complete checkpoint starts afresh."""
    required = [f for cb in trainer.callback_handler.callbacks for f in getattr(cb, "checkpoint_files", ())]
    path = resolve_checkpoint(trainer.args.resume_from_checkpoint, trainer.args.output_dir, required, fresh_if_none)
    trainer.args.resume_from_checkpoint = path
    return path


def resolve_checkpoint(resume_from_checkpoint, output_dir, required: list[str] = (),
                       fresh_if_none: bool = False) -> str | None:
    """What to pass to ``Trainer.train(resume_from_checkpoint=...)``.

    ``True``/"true" (any case): the latest *complete* ``checkpoint-N`` in ``output_dir`` (it holds
    ``trainer_state.json`` and every file in ``required``); incomplete ones, left by a crash during a save,
    are skipped with a warning. A path must be complete, or the error names what is missing. ``None``,
    ``False``/"false" or "": start afresh.
    """
    value = resume_from_checkpoint
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in ("", "false")):
        return None
    needed = [TRAINER_STATE, *required]
    if value is True or (isinstance(value, str) and value.strip().lower() == "true"):
        found = [(int(m.group(1)), p) for p in Path(output_dir).glob("checkpoint-*")
                 if p.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", p.name))]
        for _, path in sorted(found, reverse=True):
            missing = [f for f in needed if not (path / f).exists()]
            if not missing:
                return str(path)
            logger.warning("skipping incomplete checkpoint %s (missing %s)", path, ", ".join(missing))
        if fresh_if_none:
            return None
        raise FileNotFoundError(f"--resume_from_checkpoint true: no complete checkpoint-N in {output_dir} "
                                f"(each needs {', '.join(needed)})")
    path = Path(value)
    missing = [f for f in needed if not (path / f).exists()] if path.is_dir() else ["the folder itself"]
    if missing:
        raise FileNotFoundError(f"checkpoint {path} is incomplete (missing {', '.join(missing)}); resume from "
                                "another one, or pass --resume_from_checkpoint true for the latest complete one")
    return str(path)


def warm_up(model, tokenizer, dataset, sft_args, steps: int, learning_rate: float, subdir: str = "warmup") -> None:
    """Train every weight of ``model`` for ``steps`` on ``dataset`` (a ``text`` column), nothing saved.

    Recipes use it on a random-init model (the embedded default) to stand in
    for pretraining, so that a frozen-backbone method has a backbone worth freezing.
    """
    import dataclasses

    from trl import SFTTrainer

    args = dataclasses.replace(sft_args, output_dir=str(Path(sft_args.output_dir) / subdir), max_steps=steps,
                               learning_rate=learning_rate, save_strategy="no", resume_from_checkpoint=None,
                               completion_only_loss=None, push_to_hub=False)
    SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer).train()
