"""Temporal LoRA: one LoRA adapter per domain on a frozen backbone, then calibrate the time mixer.

The README's temporal job (embedded tiny model, bundled Shakespeare + Python standard library, offline, CPU):

    accelerate launch recipes/temporal_lora.py
    hfself temporal hysteresis --model outputs/temporal_lora/model --output_dir outputs/temporal_lora/analysis
    hfself temporal fatigue --model outputs/temporal_lora/model --output_dir outputs/temporal_lora/analysis

Any Hub backbone (its own weights are the frozen "eternity"; no warm-up):

    accelerate launch recipes/temporal_lora.py --model_name_or_path gpt2 --lora_target_modules c_attn

Stages, each a Trainer run that saves checkpoints and resumes (``--resume_from_checkpoint true``):
1. Warm-up, only when the backbone has no weights (the embedded default is a random
   init): ``pretrain_steps`` of ordinary training on all corpora, standing in for pretraining.
2. One adapter per domain, trained alone (one-hot routing) on the first 90% of its corpus.
3. Calibration of the time mixer (backbone and adapters frozen): class-balanced
   cross-entropy toward each text's domain plus a uniform-routing term on neutral text.
4. Router accuracy on the held-out 10% → ``router_eval.json``; the model is saved to
   ``<output_dir>/model`` (config, peft adapters, mixer, tokenizer, model card).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, concatenate_datasets
from transformers import DataCollatorWithPadding, Trainer, set_seed
from trl import SFTConfig, SFTTrainer

from hfself.args import RunArguments, parse_args
from hfself.data import corpus_text, text_chunks
from hfself.train import has_weights, load_run_model, resume_argument, warm_up
from hfself_plugins.temporal import TemporalLoraConfig, TemporalLoraForCausalLM
from hfself_plugins.temporal.analysis import neutral_texts, router_accuracy, split_corpus

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "temporal_lora.yaml"


@dataclass
class TemporalArguments:
    domains: list[str] = field(default_factory=lambda: ["shakespeare", "python"], metadata={
        "help": "One adapter per corpus: 'shakespeare', 'python' or text files (the domain is the file stem)."})
    router_layer: int | None = field(default=None, metadata={
        "help": "The mixer reads the residual stream entering this layer (default: a quarter of the depth)."})
    router_hidden_dim: int = field(default=64, metadata={"help": "Width of the mixer's hidden layer."})
    adapter_steps: int = field(default=150, metadata={"help": "Training steps per domain adapter."})
    calibration_steps: int = field(default=150, metadata={"help": "Training steps of the time mixer."})
    calibration_learning_rate: float = field(default=3e-3, metadata={"help": "Learning rate of the time mixer."})
    pretrain_steps: int = field(default=150, metadata={
        "help": "Warm-up steps for a backbone without weights (random init); 0 to skip."})
    pretrain_learning_rate: float = field(default=3e-3, metadata={"help": "Learning rate of the warm-up."})
    calibration_neutral_fraction: float = field(default=0.2, metadata={
        "help": "Share of the calibration set made of neutral sentences (repeated as needed)."})
    eval_sequences: int = field(default=32, metadata={"help": "Held-out blocks per domain for router accuracy."})


ARGUMENT_CLASSES = (RunArguments, TemporalArguments, SFTConfig)


def domain_name(corpus: str) -> str:
    return Path(corpus).stem if Path(corpus).suffix else corpus


def domain_texts(corpus: str, chunk_chars: int, max_samples: int | None) -> list[str]:
    return text_chunks(split_corpus(corpus_text(corpus), "train"), chunk_chars, max_samples)


def calibration_dataset(tokenizer, temporal: TemporalArguments, run: RunArguments, max_length: int) -> Dataset:
    """Domain-labelled training chunks of every corpus plus neutral sentences (flagged ``neutral``)."""
    parts = []
    for index, corpus in enumerate(temporal.domains):
        texts = domain_texts(corpus, run.chunk_chars, run.max_train_samples)
        parts.append(Dataset.from_dict({"text": texts, "domain_labels": [index] * len(texts),
                                        "neutral": [0] * len(texts)}))
    domain_count = sum(len(p) for p in parts)
    fraction = temporal.calibration_neutral_fraction
    repeats = max(1, round(fraction / (1 - fraction) * domain_count / len(neutral_texts()))) if fraction > 0 else 0
    neutral = neutral_texts() * repeats
    parts.append(Dataset.from_dict({"text": neutral, "domain_labels": [0] * len(neutral), "neutral": [1] * len(neutral)}))
    data = concatenate_datasets(parts)
    return data.map(lambda b: tokenizer(b["text"], truncation=True, max_length=max_length), batched=True,
                    remove_columns=["text"])


def stage_args(sft: SFTConfig, name: str, steps: int, **overrides) -> SFTConfig:
    return dataclasses.replace(sft, output_dir=str(Path(sft.output_dir) / name), max_steps=steps, **overrides)


def main(argv: list[str] | None = None):
    run, temporal, sft = parse_args(ARGUMENT_CLASSES, argv, config=str(DEFAULT_CONFIG))
    set_seed(sft.seed)
    out = Path(sft.output_dir)
    resume = sft.resume_from_checkpoint not in (None, False) and str(sft.resume_from_checkpoint).lower() != "false"

    backbone, tokenizer = load_run_model(run)
    warmed = not has_weights(run.model_name_or_path) and temporal.pretrain_steps > 0
    if warmed:
        mixed = [t for corpus in temporal.domains for t in domain_texts(corpus, run.chunk_chars, run.max_train_samples)]
        warm_up(backbone, tokenizer, Dataset.from_dict({"text": mixed}).shuffle(seed=sft.seed), sft,
                temporal.pretrain_steps, temporal.pretrain_learning_rate)

    # every domain adapter has trl.ModelConfig's LoRA shape (--lora_r, --lora_alpha, --lora_target_modules, ...)
    config = TemporalLoraConfig(domains=[domain_name(c) for c in temporal.domains], lora_r=run.lora_r,
                                lora_alpha=run.lora_alpha, lora_dropout=run.lora_dropout,
                                target_modules=run.lora_target_modules, router_layer=temporal.router_layer,
                                router_hidden_dim=temporal.router_hidden_dim,
                                base_model_name_or_path=run.model_name_or_path)
    model = TemporalLoraForCausalLM.from_base(backbone, config)

    for corpus, name in zip(temporal.domains, model.domains):
        model.set_trainable(name)
        data = Dataset.from_dict({"text": domain_texts(corpus, run.chunk_chars, run.max_train_samples)})
        args = stage_args(sft, f"adapter-{name}", temporal.adapter_steps, resume_from_checkpoint=resume)
        with model.only_domain(name):
            trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
            trainer.train(resume_from_checkpoint=resume_argument(trainer, fresh_if_none=True))

    model.set_trainable("mixer")
    args = stage_args(sft, "calibration", temporal.calibration_steps, learning_rate=temporal.calibration_learning_rate,
                      resume_from_checkpoint=resume, remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=calibration_dataset(tokenizer, temporal, run, sft.max_length),
                      data_collator=DataCollatorWithPadding(tokenizer))
    trainer.train(resume_from_checkpoint=resume_argument(trainer, fresh_if_none=True))
    model.set_trainable("none")

    if trainer.accelerator.is_main_process:
        model.eval()
        evaluation = router_accuracy(model, tokenizer, temporal.domains, n=temporal.eval_sequences,
                                     length=min(64, sft.max_length), seed=sft.seed)
        (out / "router_eval.json").write_text(json.dumps(evaluation, indent=2))
        # a backbone built from a config-only directory (warmed up or not) exists nowhere else: save it
        model.save_pretrained(out / "model", save_base=not has_weights(run.model_name_or_path))
        tokenizer.save_pretrained(out / "model")
        print(f"router accuracy (held-out): {json.dumps(evaluation, indent=2)}")
        print(f"model written to {out / 'model'}")
    trainer.accelerator.wait_for_everyone()
    return model, trainer


if __name__ == "__main__":
    main()
