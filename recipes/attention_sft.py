"""Attention SFT: train only W_q ("context-frozen") with APOLLO, and probe attention before vs after.

The README's attention job (embedded tiny model, bundled data, offline, CPU):

    accelerate launch recipes/attention_sft.py
    accelerate launch --config_file recipes/accelerate_configs/cpu_2proc.yaml recipes/attention_sft.py --use_cpu true

Your own model (its pretrained weights are the "before"; no warm-up stage):

    accelerate launch recipes/attention_sft.py --model_name_or_path Qwen/Qwen2.5-0.5B --optimizer apollo_mini

Stages:
1. Warm-up, only when the model has no weights (the embedded default is a
   random init): ``pretrain_steps`` of ordinary training of all weights on the
   corpus, standing in for pretraining, so that W_q has something to steer.
   The result is saved to ``<output_dir>/before``.
2. The attention probe on held-out "listening" conversations (before).
3. ``train_modules: q_only`` training on the listening conversations (the
   loss is on the response only), with the optimizer named by ``optimizer:``
   and, if ``dream_interval`` > 0, the dream loop. Saved to ``<output_dir>/final``.
4. The probe again (after); ``<output_dir>/probe`` gets probe.json, heatmaps
   and summary.md. Recompute it any time with
   ``hfself attention probe --model <output_dir>/final --before <output_dir>/before``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset
from transformers import set_seed
from trl import SFTConfig, SFTTrainer

from hfself.args import ConfigError, RunArguments, flat_config, parse_args
from hfself.train import (bind_callbacks, has_weights, load_causal_lm, load_run_model, prepare_model,
                          resume_argument, trainer_kwargs, training_dataset, warm_up)
from hfself_plugins.attention import (AttentionArguments, AttentionProbe, DreamArguments, conversation_text,
                                      listening_conversations)
from hfself_plugins.optim import OptimArguments

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "attention_sft.yaml"
PROBE_SEED = 12345  # held-out conversations: a different seed from the training set


@dataclass
class AttentionSFTArguments:
    listening_examples: int = field(default=2000, metadata={"help": "Training conversations to generate."})
    probe_examples: int = field(default=32, metadata={"help": "Held-out conversations the probe reads."})
    pretrain_steps: int = field(default=150, metadata={
        "help": "Warm-up steps on the corpus for a model without weights (random init); 0 to skip."})
    pretrain_learning_rate: float = field(default=3e-3, metadata={"help": "Learning rate of the warm-up."})


ARGUMENT_CLASSES = (RunArguments, AttentionArguments, DreamArguments, OptimArguments, AttentionSFTArguments,
                    SFTConfig)


def listening_dataset(n: int, seed: int) -> Dataset:
    """Prompt/completion pairs: context segments → the response that follows the direction."""
    conversations = listening_conversations(n, seed=seed)
    # the space between prompt and completion goes with the completion, so the prompt ends on a token boundary
    return Dataset.from_dict({"prompt": [conversation_text(c[:-1]).rstrip() for c in conversations],
                              "completion": [" " + c[-1]["text"] for c in conversations]})


def main(argv: list[str] | None = None):
    run, attention, dream, optim, recipe, sft = parse_args(ARGUMENT_CLASSES, argv, config=str(DEFAULT_CONFIG))
    run_config = flat_config(sft, run, attention, dream, optim, recipe)
    set_seed(sft.seed)
    out = Path(sft.output_dir)

    if run.use_peft:
        raise ConfigError("attention_sft trains the attention weights themselves (train_modules); use_peft would put "
                          "a LoRA beside them. Leave use_peft off, or use recipes/identity_sft.py for LoRA training.")
    model, tokenizer = load_run_model(run)
    before_path = run.model_name_or_path
    if not has_weights(run.model_name_or_path) and recipe.pretrain_steps > 0:
        if sft.resume_from_checkpoint and (out / "before").exists():
            model, tokenizer = load_causal_lm(str(out / "before"), attn_implementation=run.attn_implementation)
        else:
            warm_up(model, tokenizer, training_dataset(run, sft.seed), sft, recipe.pretrain_steps,
                    recipe.pretrain_learning_rate)
            if sft.process_index == 0:
                model.save_pretrained(out / "before")
                tokenizer.save_pretrained(out / "before")
        before_path = str(out / "before")

    probe = AttentionProbe(listening_conversations(recipe.probe_examples, seed=PROBE_SEED))
    before = probe.measure(model, tokenizer) if sft.process_index == 0 else None

    model = prepare_model(model, run_config)
    q_only = getattr(model, "hfself_q_only", None)
    if q_only is not None and sft.process_index == 0:
        print(f"q_only: {json.dumps(q_only.summary())}")
    trainer = SFTTrainer(model=model, args=sft, train_dataset=listening_dataset(recipe.listening_examples, sft.seed),
                         processing_class=tokenizer, **trainer_kwargs(model, sft, run_config))
    bind_callbacks(trainer)
    groups = getattr(trainer.optimizer, "hfself_groups", None)
    if groups and sft.process_index == 0:
        print(f"optimizer {run.optimizer}: parameter groups {json.dumps(groups)}")
    trainer.train(resume_from_checkpoint=resume_argument(trainer))

    if trainer.accelerator.is_main_process:
        model.save_pretrained(out / "final")
        tokenizer.save_pretrained(out / "final")
        summary = probe.report(before, probe.measure(model, tokenizer), out / "probe")
        (out / "probe" / "models.json").write_text(json.dumps({"before": before_path, "after": str(out / "final")}))
        print(f"attention probe (response → span), before vs after: {json.dumps(summary, indent=2)}")
    trainer.accelerator.wait_for_everyone()
    return trainer


if __name__ == "__main__":
    main()
