"""Rebuild the embedded default (hfself/data/default_model): tokenizer + tiny config.

Run once by maintainers; the result ships as package data. Deterministic:
the tokenizer is a byte-level BPE trained on the bundled Shakespeare corpus
plus the Python standard-library sources of the interpreter running it.

    python scripts/build_default_model.py
"""

import sysconfig
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, PreTrainedTokenizerFast

DATA = Path(__file__).resolve().parents[1] / "hfself" / "data"
OUT = DATA / "default_model"
VOCAB_SIZE = 4096
SPECIALS = ["<|endoftext|>", "<|pad|>"]


def training_texts():
    yield (DATA / "corpora" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in sorted(["json/__init__.py", "collections/__init__.py", "functools.py", "textwrap.py",
                        "heapq.py", "bisect.py", "string.py", "dataclasses.py", "pathlib.py", "random.py"]):
        path = stdlib / name
        if path.exists():
            yield path.read_text(encoding="utf-8")


def build_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(training_texts(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|pad|>", unk_token=None, model_max_length=1024)


def build_config(tokenizer) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=352, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(OUT)
    build_config(tokenizer).save_pretrained(OUT)
    print(f"wrote {OUT}: vocab {len(tokenizer)}")
