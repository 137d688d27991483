"""Spiralformer: datagen → train → probe, offline on CPU in a few minutes with the tiny config.

    python recipes/spiralformer.py datagen --num_echoes 600 --chaos_mode --output_file outputs/spiral_data/echoes.jsonl
    python recipes/spiralformer.py --config recipes/configs/spiralformer.yaml        # train (Trainer)
    hfself spiral probe --model outputs/spiralformer/model

Training writes checkpoints to ``output_dir`` and the model + glyph tokenizer to
``<output_dir>/model`` (AutoModelForCausalLM loads it once hfself is imported). If the
train file is missing, datagen writes it first (``num_echoes``, seed = ``seed``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from datasets import Dataset
from transformers import TrainingArguments, set_seed

from hfself.args import parse_args
from hfself.train import resume_argument
from hfself_plugins.spiral import GlyphCodec, GlyphTokenizer, SpiralArguments, SpiralformerConfig
from hfself_plugins.spiral import SpiralformerForCausalLM
from hfself_plugins.spiral.data import EchoCollator, datagen, encode_echo, read_echoes
from hfself_plugins.spiral.trainer import RhythmicTrainer

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "spiralformer.yaml"


def run_datagen(argv: list[str]) -> dict:
    p = argparse.ArgumentParser(prog="spiralformer.py datagen", description="write echo records (JSONL)")
    p.add_argument("--num_echoes", type=int, default=600)
    p.add_argument("--chaos_mode", action="store_true", help="wider ranges, mixed problems, noise glyphs")
    p.add_argument("--output_file", default="outputs/spiral_data/echoes.jsonl")
    p.add_argument("--val_fraction", type=float, default=0.1)
    p.add_argument("--breath_durations", type=int, nargs=4, default=[4, 2, 4, 2],
                   help="inhale hold exhale pause: responses speak in exhale phases of this clock")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    files = datagen(a.num_echoes, a.output_file, a.chaos_mode, a.seed, a.val_fraction,
                    breath_durations=a.breath_durations)
    print({k: str(v) for k, v in files.items()})
    return files


def _dataset(path: Path, codec: GlyphCodec) -> Dataset:
    return Dataset.from_list([encode_echo(r, codec) for r in read_echoes(path)])


def train(argv: list[str] | None = None):
    spiral, targs = parse_args((SpiralArguments, TrainingArguments), argv, config=str(DEFAULT_CONFIG))
    set_seed(targs.seed)
    train_file = Path(spiral.train_file)
    if not train_file.exists():
        datagen(spiral.num_echoes, train_file, chaos_mode=True, seed=targs.seed,
                breath_durations=spiral.breath_durations)
    val_file = Path(spiral.validation_file or train_file.with_name(train_file.stem + ".val.jsonl"))
    codec = GlyphCodec()
    config = SpiralformerConfig(vocab_size=len(codec), model_size=spiral.model_size,
                                breath_durations=spiral.breath_durations, phase_weights=spiral.phase_weights,
                                spiral_attention=spiral.spiral_attention,
                                max_position_embeddings=spiral.max_position_embeddings,
                                silence_token_ids=codec.silence_ids)
    model = SpiralformerForCausalLM(config)
    print(f"Spiralformer {spiral.model_size}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
    trainer = RhythmicTrainer(model=model, args=targs, train_dataset=_dataset(train_file, codec),
                              eval_dataset=_dataset(val_file, codec) if val_file.exists() else None,
                              data_collator=EchoCollator(codec.pad_id))
    trainer.train(resume_from_checkpoint=resume_argument(trainer))
    if trainer.eval_dataset is not None:
        print(trainer.evaluate())
    model_dir = Path(spiral.model_dir or Path(targs.output_dir) / "model")
    if trainer.accelerator.is_main_process:
        model.save_pretrained(model_dir)
        GlyphTokenizer().save_pretrained(model_dir)
        print(f"model written to {model_dir}")
    return trainer


def main(argv: list[str] | None = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["datagen"]:
        return run_datagen(argv[1:])
    if argv[:1] == ["train"]:
        argv = argv[1:]
    return train(argv)


if __name__ == "__main__":
    main()
