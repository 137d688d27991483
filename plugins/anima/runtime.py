"""AnimaRuntime: a frozen causal LM, an SAE on its residual stream, and a reservoir that persists across sessions."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch

from hfself import persist

from .config import AnimaConfig
from .layer import SAESteering
from .reservoir import LexiconValence, Reservoir

RESERVOIR_FILE = "reservoir.safetensors"
LEGACY_RESERVOIR_FILE = "reservoir.pt"
STATE_FILE = "anima.json"
MEMORY_FILE = "memories.jsonl"


class AnimaRuntime:
    """Talk to a model through Anima; the reservoir learns from every turn and is saved to ``state_dir``.

        runtime = AnimaRuntime(model, tokenizer, load_sae("my_sae"), state_dir="anima_state")
        print(runtime.respond("Hello, friend."))
        runtime.close()                                   # hooks removed; the model is the base again

    A second runtime on the same ``state_dir`` starts with the same reservoir (the personality).
    ``valence``: any ``callable(text) -> float in [−1, 1]``; the default is :class:`LexiconValence`.
    """

    def __init__(self, model, tokenizer, sae, state_dir: str | Path | None = None,
                 config: AnimaConfig | None = None, valence=None):
        self.model, self.tokenizer, self.sae = model.eval(), tokenizer, sae
        self.state_dir = Path(state_dir) if state_dir is not None else None
        saved = self._load_state()
        self.config = config or (AnimaConfig(**saved["config"]) if saved else AnimaConfig())
        self.turns = saved["turns"] if saved else 0
        self.valence = valence or LexiconValence()
        self.reservoir = Reservoir(sae.cfg.d_sae, self.config, self._load_reservoir())
        self.steering = SAESteering(model, sae, self.config.layer)
        self.steering.edits.append(self.reservoir.edit)
        self.steering.attach()

    # ------------------------------------------------------------------ state

    def _load_state(self) -> dict | None:
        if self.state_dir is None or not (self.state_dir / STATE_FILE).exists():
            return None
        return persist.load_json(self.state_dir / STATE_FILE)

    def _load_reservoir(self) -> torch.Tensor | None:
        if self.state_dir is None:
            return None
        d_sae = self.sae.cfg.d_sae
        if (self.state_dir / RESERVOIR_FILE).exists():
            return persist.load_tensors(self.state_dir / RESERVOIR_FILE, expected={"weights": (d_sae,)})["weights"]
        if (self.state_dir / LEGACY_RESERVOIR_FILE).exists():  # an older runtime's torch.save (weights_only)
            weights = persist.load_legacy_pt(self.state_dir / LEGACY_RESERVOIR_FILE)
            weights = weights["weights"] if isinstance(weights, dict) else weights
            if tuple(weights.shape) != (d_sae,):
                raise persist.StateFileError(f"{self.state_dir / LEGACY_RESERVOIR_FILE}: reservoir of shape "
                                             f"{tuple(weights.shape)}, the SAE has d_sae={d_sae}")
            return weights
        return None

    def save(self) -> None:
        """Write reservoir.safetensors and anima.json atomically (a crash mid-save keeps the last good files)."""
        if self.state_dir is None:
            return
        persist.save_tensors(self.state_dir / RESERVOIR_FILE, {"weights": self.reservoir.weights})
        persist.save_json(self.state_dir / STATE_FILE, {"config": self.config.to_dict(), "turns": self.turns,
                                                        "valence_estimator": getattr(self.valence, "name", None)})

    # ------------------------------------------------------------------ talking

    @torch.no_grad()
    def respond(self, text: str, max_new_tokens: int = 32, do_sample: bool = False, seed: int = 0) -> str:
        """Generate a reply through the steered model; then learn from the turn and save."""
        torch.manual_seed(seed)
        device = next(self.model.parameters()).device
        enc = self.tokenizer(text, return_tensors="pt").to(device)
        self.steering.start_recording()
        try:
            out = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=do_sample,
                                      pad_token_id=self.tokenizer.pad_token_id)
        finally:
            self.steering.recording = False
        reply = self.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        valence = float(self.valence(f"{text} {reply}"))
        self.reservoir.update(self.steering.recorded_mean(), valence)
        self.turns += 1
        if self.state_dir is not None:
            persist.append_jsonl(self.state_dir / MEMORY_FILE, {"turn": self.turns, "user": text, "reply": reply,
                                                                "valence": valence})
        self.save()
        return reply

    @contextmanager
    def disabled(self):
        """The bare model inside the block (hook removed, then restored)."""
        self.steering.detach()
        try:
            yield self.model
        finally:
            self.steering.attach()

    def close(self) -> None:
        self.steering.detach()
