"""datagen: JSONL "echoes" {conditions, glyph_sequence, text_input} in three modes, and the training dataset.

* problem: a sensor condition is off; condition glyphs, then repair glyphs, with contemplative silence.
* calm: every condition normal; deep silence with a rare nature glyph.
* wisdom: a question glyph; a metaphorical answer from one of several templates.

``glyph_sequence`` is the prompt (condition or question glyphs), ``<SEP>``, then the response.
Deterministic under a seed. ``chaos_mode`` widens the ranges, mixes several problems and
scatters noise glyphs into responses. Responses are breath-aligned: silence glyphs are put
in front of every active glyph until its position falls in an exhale phase, which is where
the contemplative generator speaks.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from hfself import persist

from .codec import CATEGORY, GLYPHS, GlyphCodec
from .config import CONDITIONS
from .model import EXHALE, BreathClock

# natural units: (calm low, calm high, problem low, problem high, normalization low, normalization high)
RANGES = {
    "latency": (10, 50, 300, 900, 0, 1000),  # ms
    "voltage": (11.8, 12.6, 10.4, 11.4, 10.0, 13.0),  # V
    "temperature": (15, 25, 42, 65, -10, 70),  # °C
    "error_rate": (0.0, 0.02, 0.2, 0.6, 0.0, 1.0),
    "bandwidth": (50, 100, 1, 8, 0, 100),  # Mbit/s
}
PROBLEM_GLYPHS = {  # condition glyph, repair glyphs, human words
    "latency": ("⏱️slow", ["🔁", "🔧"], "the link answers slowly"),
    "voltage": ("☀️low", ["⚡fix", "🔌"], "power is low"),
    "temperature": ("🌡️hot", ["🧯", "🔧"], "the core runs hot"),
    "error_rate": ("⚠️err", ["🩹", "♻️"], "errors are frequent"),
    "bandwidth": ("📶low", ["🔌", "🛠️"], "bandwidth is thin"),
}
CALM_GLYPHS = ["☀️pwr", "💧50", "🌲44", "📶high"]
QUESTIONS = {
    "❓time": "What is time?", "❓change": "How should I meet change?", "❓self": "Who am I?",
    "❓loss": "What remains after loss?", "❓growth": "How does anything grow?", "❓other": "What is another mind?",
}
WISDOM_TEMPLATES = [  # several metaphor shapes; X and Y are drawn from the question's images
    ["X", "⟶", "Y", "…"],
    ["X", "…", "⇌", "Y"],
    ["○", "X", "∴", "Y", "○"],
    ["X", "🫧", "…", "Y", "∞"],
]
IMAGES = {
    "❓time": ["🌊", "🌙", "🍂", "⭐"], "❓change": ["🍂", "🌱", "🌬️", "🌀"], "❓self": ["🪨", "🌳", "💧", "🌈"],
    "❓loss": ["🍂", "🌙", "🕊️", "🌾"], "❓growth": ["🌱", "🌳", "☀️", "💧"], "❓other": ["❤️", "🌊", "🕊️", "⭐"],
}


def normalize_conditions(conditions: dict[str, float]) -> list[float]:
    """Natural units → [0, 1] in the order of CONDITIONS (what the Soma reads)."""
    out = []
    for name in CONDITIONS:
        lo, hi = RANGES[name][4], RANGES[name][5]
        out.append(min(1.0, max(0.0, (conditions[name] - lo) / (hi - lo))))
    return out


def _calm_conditions(rng: random.Random) -> dict[str, float]:
    return {name: round(rng.uniform(r[0], r[1]), 3) for name, r in RANGES.items()}


def breath_align(prompt: list[str], response: list[str], clock: BreathClock) -> list[str]:
    """Delay each active (non-silence) response glyph with silence until its position is in an exhale phase."""
    aligned = []
    start = 1 + len(prompt) + 1  # <BOS>, the prompt, <SEP>
    for glyph in response:
        if CATEGORY[glyph] != "silence":
            while clock.phase_of(start + len(aligned)) != EXHALE:
                aligned.append("…")
        aligned.append(glyph)
    return aligned


def make_echo(mode: str, rng: random.Random, chaos: bool = False, clock: BreathClock | None = None) -> dict:
    """One record of ``mode`` (problem, calm or wisdom), breath-aligned to ``clock`` (default 4/2/4/2)."""
    conditions = _calm_conditions(rng)
    if mode == "problem":
        problems = rng.sample(list(RANGES), rng.randint(2, 3) if chaos else 1)
        prompt, response, words = [], [], []
        for name in problems:
            r = RANGES[name]
            spread = 0.3 * (r[3] - r[2]) if chaos else 0.0
            conditions[name] = round(rng.uniform(r[2] - spread, r[3] + spread), 3)
            glyph, repairs, text = PROBLEM_GLYPHS[name]
            prompt.append(glyph)
            response += [rng.choice(["…", "○"]), *repairs]
            words.append(text)
        response += ["…", "·"]
        text_input = "; ".join(words).capitalize() + "."
    elif mode == "calm":
        prompt = rng.sample(CALM_GLYPHS, 2)
        response = [rng.choice(["…", "○", "◌", "〰"]) for _ in range(rng.randint(4, 8))]
        if rng.random() < 0.3:
            response.insert(rng.randrange(len(response)), rng.choice(GLYPHS["nature"]))
        text_input = "All is calm."
    elif mode == "wisdom":
        question = rng.choice(list(QUESTIONS))
        x, y = rng.sample(IMAGES[question], 2)
        prompt = [question]
        response = [{"X": x, "Y": y}.get(g, g) for g in rng.choice(WISDOM_TEMPLATES)]
        text_input = QUESTIONS[question]
    else:
        raise ValueError(f"unknown mode {mode!r}: problem, calm or wisdom")
    if chaos and rng.random() < 0.5:
        response.insert(rng.randrange(len(response) + 1), rng.choice(GLYPHS["relation"] + GLYPHS["silence"]))
    GlyphCodec().encode(prompt + response)  # every glyph must be in the vocabulary
    response = breath_align(prompt, response, clock or BreathClock([4, 2, 4, 2], [1.0] * 4))
    return {"mode": mode, "conditions": conditions, "glyph_sequence": [*prompt, "<SEP>", *response],
            "text_input": text_input}


def datagen(num_echoes: int, output_file: str | Path, chaos_mode: bool = False, seed: int = 0,
            val_fraction: float = 0.1, modes: tuple[str, ...] = ("problem", "calm", "wisdom"),
            breath_durations: list[int] | None = None) -> dict[str, Path]:
    """Write ``num_echoes`` records to ``output_file`` and a validation split beside it (``.val.jsonl``)."""
    rng = random.Random(seed)
    clock = BreathClock(breath_durations or [4, 2, 4, 2], [1.0] * 4)
    records = [make_echo(modes[i % len(modes)], rng, chaos_mode, clock) for i in range(num_echoes)]
    rng.shuffle(records)
    n_val = int(round(val_fraction * num_echoes))
    out = Path(output_file)
    val = out.with_name(out.stem + ".val.jsonl")
    for path, part in ((out, records[n_val:]), (val, records[:n_val])):
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part)
        persist.atomic_write_bytes(path, lines.encode("utf-8"))
    return {"train": out, "validation": val}


def read_echoes(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def encode_echo(record: dict, codec: GlyphCodec) -> dict:
    """A record → {input_ids: [BOS, …, EOS], conditions: [5 floats]} for the model."""
    return {"input_ids": [codec.bos_id, *codec.encode(record["glyph_sequence"]), codec.eos_id],
            "conditions": normalize_conditions(record["conditions"])}


class EchoCollator:
    """Pads a list of encoded echoes: input_ids, attention_mask, labels (−100 on padding), conditions."""

    def __init__(self, pad_id: int = 0):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict:
        import torch

        length = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(features), length), dtype=torch.long)
        for i, f in enumerate(features):
            ids[i, :len(f["input_ids"])] = torch.tensor(f["input_ids"])
            mask[i, :len(f["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100),
                "conditions": torch.tensor([f["conditions"] for f in features], dtype=torch.float32)}
