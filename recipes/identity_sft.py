"""Identity SFT: train a causal LM together with an identity block, with introspection rounds.

The README's main job (embedded tiny model + bundled Shakespeare, offline, CPU):

    accelerate launch recipes/identity_sft.py

Your own model and settings (YAML sets defaults, flags override):

    accelerate launch recipes/identity_sft.py --config recipes/configs/identity_sft.yaml \
        --model_name_or_path Qwen/Qwen2.5-0.5B --use_peft true --identity_dim 128
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
from hfself.train import (bind_callbacks, has_weights, load_run_model, prepare_model, resume_argument, text_dataset,
                          trainer_kwargs)
from hfself_plugins.identity import IdentityArguments, IntrospectionArguments

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "identity_sft.yaml"


@dataclass
class IdentitySFTArguments:
    freeze_base: bool = field(default=False, metadata={"help": "Train only the identity (and LoRA, if on)."})
    persona_dir: str | None = field(default=None, metadata={"help": "Where to write the persona "
                                                                     "(default <output_dir>/persona)."})


ARGUMENT_CLASSES = (RunArguments, IdentityArguments, IntrospectionArguments, IdentitySFTArguments, SFTConfig)


def main(argv: list[str] | None = None):
    run, identity, introspection, recipe, sft = parse_args(
        ARGUMENT_CLASSES, argv, config=str(DEFAULT_CONFIG))
    run_config = flat_config(sft, run, identity, introspection, recipe)
    set_seed(sft.seed)
    train_dataset = text_dataset(run, sft.seed)  # a bad corpus fails here, before any model is loaded

    model, tokenizer = load_run_model(run)
    trained_from_scratch = not has_weights(run.model_name_or_path)
    if recipe.freeze_base or run.use_peft:
        model.requires_grad_(False)
    if run.use_peft:  # trl.ModelConfig's LoRA flags: --lora_r, --lora_alpha, --lora_target_modules, ...
        from peft import get_peft_model
        from trl import get_peft_config

        model = get_peft_model(model, get_peft_config(run))
    model = prepare_model(model, run_config)

    trainer = SFTTrainer(model=model, args=sft, train_dataset=train_dataset, processing_class=tokenizer,
                         **trainer_kwargs(model, sft, run_config))
    bind_callbacks(trainer)
    trainer.train(resume_from_checkpoint=resume_argument(trainer))

    persona_dir = Path(recipe.persona_dir or Path(sft.output_dir) / "persona")
    if trainer.accelerator.is_main_process:
        save_base = trained_from_scratch or not (recipe.freeze_base or run.use_peft)
        model.save_pretrained(persona_dir, save_base=save_base)
        tokenizer.save_pretrained(persona_dir)
        print(f"persona written to {persona_dir}")
    trainer.accelerator.wait_for_everyone()
    return trainer


if __name__ == "__main__":
    main()
