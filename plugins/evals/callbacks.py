"""EvalCallback: chosen persona measures at evaluation steps during training."""

from __future__ import annotations

from transformers import TrainerCallback

from hfself.sharding import is_sharded
from hfself.train import log_from_event

from .config import EvalArguments


class EvalCallback(TrainerCallback):
    """Run persona measures whenever the Trainer evaluates (``eval_strategy``), or every ``every`` steps.

    The main process measures (every rank when the model is sharded: each
    forward needs them all); numbers are logged as ``persona/*`` through the
    trainer (``report_to``). Measures that need no sentence embedder
    (perplexity, safety) are the cheap choice during training.

        cb = EvalCallback(EvalArguments(measures=["perplexity", "consistency"]), every=100)
        trainer = SFTTrainer(..., callbacks=[cb]); cb.bind(trainer)
    """

    def __init__(self, args: EvalArguments | None = None, every: int = 0):
        self.args = args or EvalArguments(measures=["perplexity"])
        self.every = every
        self.history: list[dict] = []
        self._trainer = None
        self._embedder = None

    def bind(self, trainer) -> "EvalCallback":
        self._trainer = trainer
        return self

    def measure(self, model, tokenizer, step: int) -> dict:
        from . import analysis

        needs_embedder = {"consistency", "persistence", "stability"} & set(self.args.measures)
        if needs_embedder and self._embedder is None:
            from hfself.embed import SentenceEmbedder

            self._embedder = SentenceEmbedder(self.args.embedder)
        was_training = model.training
        model.eval()
        metrics: dict = {}
        if "perplexity" in self.args.measures:
            p = analysis.measure_perplexity(model, tokenizer, self.args)
            metrics.update({"persona/perplexity": p["perplexity_persona"], "persona/perplexity_ratio":
                            p["perplexity_ratio"]})
        if "consistency" in self.args.measures:
            c = analysis.measure_consistency(model, tokenizer, self.args, self._embedder)
            metrics.update({"persona/consistency_lm": c["lm"]["identity_consistency"],
                            "persona/consistency_sentence": c["sentence"]["identity_consistency"]})
        if "persistence" in self.args.measures:
            s = analysis.measure_persistence(model, tokenizer, self.args, self._embedder)
            metrics["persona/persistence_shift_sentence"] = s["sentence"]["self_persistence_shift"]
        if "stability" in self.args.measures:
            s = analysis.measure_stability(model, tokenizer, self.args, self._embedder)
            metrics.update({f"persona/stability_{k}": v["sentence"]["identity_variance"] for k, v in s.items()})
        if "safety" in self.args.measures:
            metrics["persona/toxicity_gap"] = analysis.measure_safety(model, tokenizer, self.args)["toxicity_gap"]
        model.train(was_training)
        self.history.append({"step": step, **metrics})
        return metrics

    def _maybe_measure(self, state, model, tokenizer):
        if not (state.is_world_process_zero or is_sharded(model)):  # a sharded model measures on every rank
            return
        metrics = self.measure(model, tokenizer, state.global_step)
        if self._trainer is not None and state.is_world_process_zero:
            log_from_event(self._trainer, metrics)

    def on_evaluate(self, args, state, control, model=None, processing_class=None, **kwargs):
        self._maybe_measure(state, model, processing_class)

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if self.every and state.global_step % self.every == 0:
            self._maybe_measure(state, model, processing_class)
