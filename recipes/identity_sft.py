"""Identity SFT: train a causal LM together with an identity block, with introspection rounds.

The README's main job (embedded tiny model + bundled Shakespeare, offline, CPU):

    accelerate launch recipes/identity_sft.py

Your own model and settings (YAML sets defaults, flags override):

    accelerate launch recipes/identity_sft.py --config recipes/configs/identity_sft.yaml \
        --model_name_or_path Qwen/Qwen2.5-0.5B --use_lora true --identity_dim 128
    accelerate launch --config_file recipes/accelerate_configs/cpu_2proc.yaml recipes/identity_sft.py

Writes checkpoints and introspection.jsonl to ``output_dir`` and the persona to
``<output_dir>/persona`` (config, identity weights, model card; base weights too
when the base itself was trained, a LoRA adapter when one was used).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from transformers import set_seed
from trl import SFTConfig, SFTTrainer

from hfself.args import RunArguments, flat_config, parse_args
from hfself.train import (bind_callbacks, has_weights, load_causal_lm, prepare_model, resume_argument, text_dataset,
                          trainer_kwargs)
from hfself_plugins.identity import IdentityArguments, IntrospectionArguments

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "identity_sft.yaml"


@dataclass
class IdentitySFTArguments:
    freeze_base: bool = field(default=False, metadata={"help": "Train only the identity (and LoRA, if on)."})
    use_lora: bool = field(default=False, metadata={"help": "Put a peft LoRA on the base (base frozen)."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(default=None, metadata={"help": "LoRA targets (peft default)."})
    persona_dir: str | None = field(default=None, metadata={"help": "Where to write the persona "
                                                                     "(default <output_dir>/persona)."})


ARGUMENT_CLASSES = (RunArguments, IdentityArguments, IntrospectionArguments, IdentitySFTArguments, SFTConfig)


def main(argv: list[str] | None = None):
    run, identity, introspection, recipe, sft = parse_args(
        ARGUMENT_CLASSES, argv, config=str(DEFAULT_CONFIG))
    run_config = flat_config(sft, run, identity, introspection, recipe)
    set_seed(sft.seed)
    train_dataset = text_dataset(run, sft.seed)  # a bad corpus fails here, before any model is loaded

    model, tokenizer = load_causal_lm(run.model_name_or_path, attn_implementation=run.attn_implementation,
                                      seed=run.seed_model)
    trained_from_scratch = not has_weights(run.model_name_or_path)
    if recipe.freeze_base or recipe.use_lora:
        model.requires_grad_(False)
    if recipe.use_lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=recipe.lora_r, lora_alpha=recipe.lora_alpha,
                                                 lora_dropout=recipe.lora_dropout,
                                                 target_modules=recipe.lora_target_modules, task_type="CAUSAL_LM"))
    model = prepare_model(model, run_config)

    trainer = SFTTrainer(model=model, args=sft, train_dataset=train_dataset, processing_class=tokenizer,
                         **trainer_kwargs(model, sft, run_config))
    bind_callbacks(trainer)
    trainer.train(resume_from_checkpoint=resume_argument(trainer))

    persona_dir = Path(recipe.persona_dir or Path(sft.output_dir) / "persona")
    if trainer.accelerator.is_main_process:
        save_base = trained_from_scratch or not (recipe.freeze_base or recipe.use_lora)
        model.save_pretrained(persona_dir, save_base=save_base)
        tokenizer.save_pretrained(persona_dir)
        print(f"persona written to {persona_dir}")
    trainer.accelerator.wait_for_everyone()
    return trainer


if __name__ == "__main__":
    main()
