"""The glyph codec: Spiralformer's 64-symbol vocabulary, and a transformers tokenizer over it.

A glyph sequence is a list of symbols ("🌱regen", "…"); as text, the symbols are
separated by single spaces. Every glyph belongs to one category; the probe's
"holism" counts how many categories a response uses.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from transformers import PreTrainedTokenizer

GLYPHS: dict[str, list[str]] = {
    "special": ["<PAD>", "<BOS>", "<EOS>", "<SEP>"],
    "silence": ["…", "○", "⋯", "·", "◌", "〰"],
    "repair": ["🔧", "⚡fix", "🩹", "♻️", "🔁", "🛠️", "🧯", "🔌"],
    "condition": ["☀️pwr", "☀️low", "💧08", "💧50", "💧90", "🌲44", "🌲10", "🌱regen", "🌡️hot", "🌡️cold",
                  "📶low", "📶high", "⏱️slow", "⚠️err"],
    "question": ["❓time", "❓change", "❓self", "❓loss", "❓growth", "❓other"],
    "nature": ["🌊", "🌱", "🌳", "🍂", "🌙", "☀️", "🌬️", "🪨", "🔥", "💧", "🌀", "⭐", "🕊️", "🌾", "🏔️", "🌈"],
    "mood": ["😌calm", "🤔wonder", "😟tense", "✨awe"],
    "relation": ["⟶", "∞", "⇌", "∴", "❤️", "🫧"],
}
VOCAB: list[str] = [g for group in GLYPHS.values() for g in group]
CATEGORY: dict[str, str] = {g: name for name, group in GLYPHS.items() for g in group}
SILENCE = tuple(GLYPHS["silence"])
assert len(VOCAB) == len(set(VOCAB)) == 64


class GlyphError(ValueError):
    """A symbol that is not in the glyph vocabulary."""


class GlyphCodec:
    """Glyphs <-> ids. ``encode(["🌱regen", "…"])`` -> ``[ids]``; ``decode`` is its inverse."""

    def __init__(self, vocab: list[str] | None = None):
        self.vocab = list(vocab or VOCAB)
        self.ids = {g: i for i, g in enumerate(self.vocab)}
        self.pad_id, self.bos_id, self.eos_id, self.sep_id = (self.ids[t] for t in GLYPHS["special"])
        self.silence_ids = [self.ids[g] for g in SILENCE if g in self.ids]

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, glyphs: list[str] | str) -> list[int]:
        symbols = glyphs.split() if isinstance(glyphs, str) else glyphs
        unknown = [g for g in symbols if g not in self.ids]
        if unknown:
            raise GlyphError(f"unknown glyph {unknown[0]!r} (of {len(unknown)} unknown); the vocabulary is "
                             f"hfself_plugins.spiral.codec.VOCAB ({len(self.vocab)} glyphs)")
        return [self.ids[g] for g in symbols]

    def decode(self, ids, skip_special: bool = False) -> list[str]:
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.vocab):
                raise GlyphError(f"id {i} is outside the {len(self.vocab)}-glyph vocabulary")
            if not (skip_special and CATEGORY.get(self.vocab[i]) == "special"):
                out.append(self.vocab[i])
        return out


class GlyphTokenizer(PreTrainedTokenizer):
    """A transformers tokenizer over the glyph vocabulary (space-separated glyphs; saves ``vocab.json``)."""

    vocab_files_names = {"vocab_file": "vocab.json"}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file: str | None = None, **kwargs):
        vocab = json.loads(Path(vocab_file).read_text(encoding="utf-8")) if vocab_file else VOCAB
        self.codec = GlyphCodec(vocab)
        for key, token in (("pad_token", "<PAD>"), ("bos_token", "<BOS>"), ("eos_token", "<EOS>"),
                           ("sep_token", "<SEP>")):
            kwargs.setdefault(key, token)
        super().__init__(**kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self.codec)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.codec.ids)

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        symbols = text.split()
        self.codec.encode(symbols)  # raises GlyphError naming an unknown symbol
        return symbols

    def _convert_token_to_id(self, token: str) -> int:
        return self.codec.encode([token])[0]

    def _convert_id_to_token(self, index: int) -> str:
        return self.codec.decode([index])[0]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return " ".join(tokens)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        path = Path(save_directory) / f"{filename_prefix + '-' if filename_prefix else ''}vocab.json"
        os.makedirs(save_directory, exist_ok=True)
        path.write_text(json.dumps(self.codec.vocab, ensure_ascii=False), encoding="utf-8")
        return (str(path),)
