"""AnimaRuntime: a frozen causal LM, an SAE on its residual stream, and a reservoir that persists across sessions."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch

from hfself import persist

from .config import AnimaConfig
from .layer import SAESteering
from .prism import BUILTIN_MODES, PrismRouter, discover_mode, mode_vector
from .reservoir import LexiconValence, Reservoir

RESERVOIR_FILE = "reservoir.safetensors"
LEGACY_RESERVOIR_FILE = "reservoir.pt"
STATE_FILE = "anima.json"
MEMORY_FILE = "memories.jsonl"
MODES_FILE = "modes.json"
DREAM_FILE = "dreams.jsonl"
SELF_MODEL_FILE = "self_models.jsonl"


class AnimaRuntime:
    """Talk to a model through Anima; the reservoir learns from every turn and is saved to ``state_dir``.

        runtime = AnimaRuntime(model, tokenizer, load_sae("my_sae"), state_dir="anima_state")
        print(runtime.respond("Hello, friend."))
        runtime.close()                                   # hooks removed; the model is the base again

    A second runtime on the same ``state_dir`` starts with the same reservoir (the personality).
    ``valence``: any ``callable(text) -> float in [−1, 1]``; the default is :class:`LexiconValence`.

    Prism: ``runtime.set_mode("System")`` forces a mode, ``respond(text, mode="auto")`` routes
    each turn by intent, ``set_mode(None)`` turns steering by mode off. The built-in modes
    (Anima, System, Dream) and the modes plugins register are discovered for this SAE on first
    use and kept in ``modes.json``.
    """

    def __init__(self, model, tokenizer, sae, state_dir: str | Path | None = None,
                 config: AnimaConfig | None = None, valence=None):
        self.model, self.tokenizer, self.sae = model.eval(), tokenizer, sae
        if tokenizer.pad_token is None:  # batched prompts are left-padded
            tokenizer.pad_token = tokenizer.eos_token
        self.state_dir = Path(state_dir) if state_dir is not None else None
        saved = self._load_state() or {}
        self.config = config or AnimaConfig(**saved.get("config", {}))
        self.turns = saved.get("turns", 0)
        self.fatigue = saved.get("fatigue", 0)  # generated tokens since the last sleep
        self.self_model = saved.get("self_model", self.config.self_model)
        self.short_term: list[dict] = saved.get("short_term", [])  # memories since the last sleep
        self.sleeps = saved.get("sleeps", 0)
        self.valence = valence or LexiconValence()
        self.reservoir = Reservoir(sae.cfg.d_sae, self.config, self._load_reservoir())
        self.steering = SAESteering(model, sae, self.config.layer)
        self._modes: dict[str, dict] | None = None
        self.mode: str | None = None
        self._mode_vector: torch.Tensor | None = None
        self._router: PrismRouter | None = None
        self.steering.edits += [self.reservoir.edit, self._mode_edit]
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
        persist.save_json(self.state_dir / STATE_FILE, {
            "config": self.config.to_dict(), "turns": self.turns, "fatigue": self.fatigue, "sleeps": self.sleeps,
            "self_model": self.self_model, "short_term": self.short_term,
            "valence_estimator": getattr(self.valence, "name", None)})

    # ------------------------------------------------------------------ prism

    @property
    def modes(self) -> dict[str, dict]:
        """Every mode with its features for this SAE (discovered once, then read from modes.json)."""
        if self._modes is None:
            from hfself.plugins import registry

            saved = {}
            if self.state_dir is not None and (self.state_dir / MODES_FILE).exists():
                saved = persist.load_json(self.state_dir / MODES_FILE)
            wanted = {**BUILTIN_MODES, **registry("steering_modes"), **saved}
            self._modes = {name: _json_ready(mode if "features" in mode else
                                             discover_mode(self.steering, self.tokenizer, mode))
                           for name, mode in wanted.items()}
            if self.state_dir is not None and self._modes != saved:
                persist.save_json(self.state_dir / MODES_FILE, self._modes)
        return self._modes

    def add_mode(self, name: str, mode: dict) -> dict:
        """Add (discovering if needed) and save a mode; returns it with its features."""
        mode = _json_ready(mode if "features" in mode else discover_mode(self.steering, self.tokenizer, mode))
        self.modes[name] = mode
        self._router = None
        if self.state_dir is not None:
            persist.save_json(self.state_dir / MODES_FILE, self.modes)
        return mode

    def set_mode(self, name: str | None) -> None:
        """Force a mode (``None``: no mode steering)."""
        if name is not None and name not in self.modes:
            raise ValueError(f"unknown mode {name!r}; modes: {sorted(self.modes)}")
        self.mode = name
        self.steer_with(None if name is None else mode_vector(self.modes[name], self.sae.cfg.d_sae))

    def steer_with(self, vector: torch.Tensor | None) -> None:
        """Add a (d_sae,) vector to the features at every position (None: nothing); set_mode uses it."""
        self._mode_vector = None if vector is None else vector.to(device=self.sae.W_dec.device,
                                                                  dtype=self.sae.W_dec.dtype)

    def route(self, text: str) -> str:
        """The mode whose description best matches the text's intent."""
        if self._router is None:
            self._router = PrismRouter(self.modes)
        return self._router.route(text)

    def _mode_edit(self, features: torch.Tensor) -> torch.Tensor:
        if self._mode_vector is None:
            return features
        return features + self._mode_vector

    # ------------------------------------------------------------------ talking

    @torch.no_grad()
    def _generate(self, prompts: list[str], max_new_tokens: int, do_sample: bool,
                  streamer=None) -> list[tuple[str, torch.Tensor]]:
        """Per prompt: (reply, (generated tokens, d_sae) activations at each generating step), left-padded."""
        device = next(self.model.parameters()).device
        side, self.tokenizer.padding_side = self.tokenizer.padding_side, "left"
        try:
            enc = self.tokenizer(prompts, return_tensors="pt", padding=True).to(device)
        finally:
            self.tokenizer.padding_side = side
        self.steering.start_recording()
        try:
            out = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=do_sample,
                                      pad_token_id=self.tokenizer.pad_token_id, streamer=streamer)
        finally:
            self.steering.recording = False
        recorded = self.steering.recorded()  # (forwards, B, d_sae)
        results = []
        for row, new in enumerate(out[:, enc["input_ids"].shape[1]:]):
            eos = (new == self.tokenizer.eos_token_id).nonzero()
            length = int(eos[0]) + 1 if len(eos) else len(new)  # what this row generated, its EOS included
            results.append((self.tokenizer.decode(new[:length], skip_special_tokens=True), recorded[:length, row]))
        return results

    def prompt_for(self, text: str, cot: bool = False) -> str:
        """The self_model as the system prompt (the tokenizer's chat template when it has one).

        ``cot``: ask for a step-by-step answer (an instruction in the prompt; nothing is hidden).
        """
        if cot:
            text = f"{text}\nThink it through step by step before you answer."
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "system", "content": self.self_model}, {"role": "user", "content": text}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return f"{self.self_model}\n\n{text}\n"

    @torch.no_grad()
    def respond(self, text: str, max_new_tokens: int = 32, do_sample: bool = False, seed: int = 0,
                mode: str | None = "keep", streamer=None, cot: bool = False, learn: bool = True) -> str:
        """Generate a reply through the steered model; then learn from the turn, maybe sleep, and save.

        ``mode``: "keep" (the current one), "auto" (routed from the text), a mode name, or None.
        ``streamer``: a transformers streamer (e.g. ``TextStreamer``) that prints tokens as they come.
        ``learn=False``: reply only (no reservoir update, memory, fatigue or save).
        """
        return self.respond_batch([text], max_new_tokens, do_sample, seed, mode, streamer, cot, learn)[0]

    @torch.no_grad()
    def respond_batch(self, texts: list[str], max_new_tokens: int = 32, do_sample: bool = False, seed: int = 0,
                      mode: str | None = "keep", streamer=None, cot: bool = False, learn: bool = True) -> list[str]:
        """Replies to several prompts in one left-padded batch, from the current state; then learns from each
        turn in order. With the same state, each reply equals the one ``respond`` gives alone.
        ``mode="auto"`` routes the whole batch by its first text."""
        if mode != "keep":
            self.set_mode(self.route(texts[0]) if mode == "auto" else mode)
        torch.manual_seed(seed)
        results = self._generate([self.prompt_for(t, cot) for t in texts], max_new_tokens, do_sample, streamer)
        if learn:
            for text, (reply, activations) in zip(texts, results):
                self._learn(text, reply, activations)
            self.save()
        return [reply for reply, _ in results]

    def _learn(self, text: str, reply: str, activations: torch.Tensor) -> None:
        """One turn: reservoir update at the turn's valence, a short-term memory, fatigue; sleep when tired."""
        mean = activations.mean(0)  # (d_sae,) over the generating steps
        valence = float(self.valence(f"{text} {reply}"))
        self.reservoir.update(mean, valence)
        self.turns += 1
        self.fatigue += len(activations)
        top = torch.topk(mean, k=min(self.config.memory_features, mean.numel()))
        memory = {"turn": self.turns, "user": text, "reply": reply, "valence": valence, "mode": self.mode,
                  "features": {str(i): round(v, 6) for i, v in zip(top.indices.tolist(), top.values.tolist())}}
        self.short_term.append(memory)
        if self.state_dir is not None:
            persist.append_jsonl(self.state_dir / MEMORY_FILE, memory)
        if self.fatigue >= self.config.fatigue_threshold:
            self.sleep()

    # ------------------------------------------------------------------ metabolism

    @torch.no_grad()
    def sleep(self, seed: int = 0) -> dict:
        """Consolidate the charged short-term memories, dream in Dream mode, rewrite the self_model, rest.

        Memories with |valence| ≥ ``adrenaline_threshold`` are replayed into the reservoir (their
        kept features, at their valence); the others are let go. The dream and the new self_model
        are appended to dreams.jsonl and self_models.jsonl.
        """
        kept = [m for m in self.short_term if abs(m["valence"]) >= self.config.adrenaline_threshold]
        d_sae = self.sae.cfg.d_sae
        for memory in kept:
            replay = torch.zeros(d_sae)
            for feature, value in memory["features"].items():
                replay[int(feature)] = value
            self.reservoir.update(replay, memory["valence"])
        previous_mode = self.mode
        if "Dream" in self.modes:
            self.set_mode("Dream")
        torch.manual_seed(seed + self.sleeps)
        fragments = "; ".join(m["user"] for m in kept) or "nothing that stayed"
        [(dream, _)] = self._generate([f"{self.self_model}\nI dream of {fragments}.\n"],
                                      self.config.dream_max_new_tokens, do_sample=True)
        self.set_mode(previous_mode)
        old_self = self.self_model
        [(rewritten, _)] = self._generate([f"{old_self}\nToday I remember {fragments}. I dreamt: {dream.strip()}\n"
                                           f"So now I am"], self.config.dream_max_new_tokens, do_sample=True)
        self.self_model = f"I am {' '.join(rewritten.split())}".strip()
        self.sleeps += 1
        record = {"sleep": self.sleeps, "turn": self.turns, "fatigue": self.fatigue, "consolidated": len(kept),
                  "let_go": len(self.short_term) - len(kept), "dream": dream, "self_model_before": old_self,
                  "self_model": self.self_model}
        if self.state_dir is not None:
            persist.append_jsonl(self.state_dir / DREAM_FILE, record)
            persist.append_jsonl(self.state_dir / SELF_MODEL_FILE,
                                 {"sleep": self.sleeps, "self_model": self.self_model})
        self.fatigue, self.short_term = 0, []
        self.save()
        return record

    def status(self) -> dict:
        return {"turns": self.turns, "fatigue": self.fatigue, "fatigue_threshold": self.config.fatigue_threshold,
                "sleeps": self.sleeps, "mode": self.mode, "self_model": self.self_model,
                "short_term_memories": len(self.short_term), "reservoir_norm": float(self.reservoir.weights.norm())}

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


def _json_ready(mode: dict) -> dict:
    """Feature ids as strings, as they come back from modes.json."""
    return {**mode, "features": {str(k): float(v) for k, v in mode["features"].items()}}
