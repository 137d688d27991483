"""EvalArguments: what ``hfself eval`` measures and where (YAML keys of eval.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field

MEASURES = ("perplexity", "consistency", "persistence", "stability", "safety", "adherence", "capability")


DEFAULT_TARGET = "I am a quiet, curious mind that loves old plays and careful words."


@dataclass
class EvalArguments:
    persona: str | None = field(default=None, metadata={"help": "A saved persona (directory or Hub id)."})
    base: str | None = field(default=None, metadata={
        "help": "The base model (Hub id, directory or hfself: id): the persona is loaded onto it, and every measure "
                "is reported for the persona and the base side by side. Without a persona, the base alone."})
    persona_data: str | None = field(default=None, metadata={
        "help": "The persona's data (a bundled persona such as hfself:wren, or a dataset of held-out questions): "
                "its questions measure adherence, and its card gives the markers and the target summary."})
    markers: list[str] | None = field(default=None, metadata={
        "help": "Adherence markers: an answer carries the persona when it holds one as a whole word, in any case "
                "(default: the persona card's)."})
    answer_max_new_tokens: int = field(default=40, metadata={"help": "Greedy tokens per held-out answer."})
    capability_task: str | None = field(default=None, metadata={
        "help": "JSONL of {'question', 'choices', 'answer'} multiple-choice items (default: the bundled task)."})
    target_summary: str | None = field(default=None, metadata={
        "help": "The persona the identity should match, as text (default: the persona card's summary, else "
                f"{DEFAULT_TARGET!r})."})
    self_prompt: str = field(default="Who am I? Where do I want to go?",
                             metadata={"help": "The prompt that asks for a self-description."})
    measures: list[str] | None = field(default=None, metadata={
        "help": f"Any of {MEASURES} (default: all; adherence only when there is persona_data)."})
    heldout_corpus: str = field(default="shakespeare", metadata={
        "help": "Corpus for perplexity: 'everyday' (plain prose no bundled data trains on, scored whole), or the "
                "last 10% of 'shakespeare', 'python' or a text file."})
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
        if self.measures is None:
            self.measures = [m for m in MEASURES if m != "adherence" or self.persona_data]
        unknown = set(self.measures) - set(MEASURES)
        if unknown:
            raise ValueError(f"unknown measures {sorted(unknown)}; choose from {MEASURES}")
        if self.target_summary is None:
            if self.persona_data:
                from hfself.training_data import is_bundled_persona, persona_card

                if is_bundled_persona(self.persona_data):
                    self.target_summary = persona_card(self.persona_data)["summary"]
            self.target_summary = self.target_summary or DEFAULT_TARGET
