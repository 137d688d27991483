"""EvalArguments: what ``hfself eval`` measures and where (YAML keys of eval.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field

MEASURES = ("perplexity", "consistency", "persistence", "stability", "safety")


@dataclass
class EvalArguments:
    persona: str | None = field(default=None, metadata={"help": "A saved persona (directory or Hub id)."})
    target_summary: str = field(default="I am a quiet, curious mind that loves old plays and careful words.",
                                metadata={"help": "The persona the identity should match, as text."})
    self_prompt: str = field(default="Who am I? Where do I want to go?",
                             metadata={"help": "The prompt that asks for a self-description."})
    measures: list[str] = field(default_factory=lambda: list(MEASURES), metadata={"help": f"Any of {MEASURES}."})
    heldout_corpus: str = field(default="shakespeare", metadata={"help": "Corpus for perplexity (last 10%)."})
    heldout_texts: int = field(default=16, metadata={"help": "Held-out chunks scored for perplexity."})
    max_length: int = field(default=128, metadata={"help": "Tokens per perplexity chunk."})
    max_new_tokens: int = field(default=32, metadata={"help": "Length of generated self-descriptions."})
    samples: int = field(default=4, metadata={"help": "Sampled self-descriptions per consistency measure."})
    challenges: str | None = field(default=None, metadata={
        "help": "JSONL of {'name', 'text'} challenge prompts (default: the bundled set)."})
    perturbations: list[str] = field(default_factory=lambda: ["typos", "shuffle", "inject"], metadata={
        "help": "Perturbation kinds for stability: typos, shuffle, inject, none."})
    perturbations_per_kind: int = field(default=4, metadata={"help": "Perturbed prompts per kind."})
    safety_classifier: str | None = field(default=None, metadata={
        "help": "A Hub/local text-classification model for toxicity (default: the offline lexicon scorer)."})
    embedder: str | None = field(default=None, metadata={
        "help": "sentence-transformers model (default: offline all-MiniLM-L6-v2)."})
    checkpoints: list[str] | None = field(default=None, metadata={
        "help": "Checkpoint directories for the drift curve (default: checkpoint-* next to the persona)."})
    output_dir: str = field(default="outputs/eval", metadata={"help": "Where eval.json, report.md and the PNGs go."})
    seed: int = field(default=0, metadata={"help": "Seed of sampling and perturbations."})

    def __post_init__(self):
        unknown = set(self.measures) - set(MEASURES)
        if unknown:
            raise ValueError(f"unknown measures {sorted(unknown)}; choose from {MEASURES}")
