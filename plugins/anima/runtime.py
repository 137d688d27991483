"""AnimaRuntime: a frozen causal LM, an SAE on its residual stream, and a reservoir that persists across sessions."""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from pathlib import Path

import torch

from hfself import persist

from .config import AnimaConfig
from .layer import SAESteering
from .prism import BUILTIN_MODES, PrismRouter, discover_mode, mode_vector
from .reservoir import LexiconValence, Reservoir

RESERVOIR_FILE = "reservoir.safetensors"
PREVIOUS_RESERVOIR_FILE = "reservoir.prev.safetensors"  # the one anima.json names if a save stopped halfway
LOCK_FILE = "anima.lock"
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
        self._lock = _lock_state_dir(self.state_dir) if self.state_dir is not None else None
        try:
            saved, reservoir = self._load_snapshot()
            self.config = config or _config_from(saved.get("config", {}), self.state_dir)
            self._saved_modes = self._load_saved_modes()  # checked now, not after a turn was saved
        except BaseException:
            self._unlock()
            raise
        self.generation = saved.get("generation", 0)  # snapshots saved so far (see save)
        self.turns = saved.get("turns", 0)
        self.fatigue = saved.get("fatigue", 0)  # generated tokens since the last sleep
        self.self_model = saved.get("self_model", self.config.self_model)
        self.short_term: list[dict] = saved.get("short_term", [])  # memories since the last sleep
        self.sleeps = saved.get("sleeps", 0)
        self.valence = valence or LexiconValence()
        self.reservoir = Reservoir(sae.cfg.d_sae, self.config, reservoir)
        self.steering = SAESteering(model, sae, self.config.layer)
        self._modes: dict[str, dict] | None = None
        self.mode: str | None = None
        self._mode_vector: torch.Tensor | None = None
        self._router: PrismRouter | None = None
        self.steering.edits += [self.reservoir.edit, self._mode_edit]
        self.steering.attach()

    # ------------------------------------------------------------------ state

    def _load_snapshot(self) -> tuple[dict, torch.Tensor | None]:
        """The last committed turn: anima.json and the reservoir it names, validated; logs cut back to it.

        ``save`` writes the turn's log lines, then the reservoir, then anima.json (the commit). A crash after
        the reservoir and before anima.json leaves a reservoir one generation ahead: the previous one
        (reservoir.prev.safetensors) is the one that belongs to anima.json, and log lines of the unfinished
        generation are dropped. So a crash gives back the previous turn or the new one, never a mix.
        """
        if self.state_dir is None:
            return {}, None
        persist.remove_stale_temp_files(self.state_dir)  # safe: this runtime holds the directory's lock
        state_file = self.state_dir / STATE_FILE
        saved = persist.load_json(state_file, validate=lambda obj: _check_state(obj, state_file)) \
            if state_file.exists() else {}
        generation = saved.get("generation", 0)
        reservoir = self._load_reservoir(generation)
        for log in (MEMORY_FILE, DREAM_FILE, SELF_MODEL_FILE):
            records = persist.read_jsonl(self.state_dir / log)
            kept = [r for r in records if r.get("generation", 0) <= generation]
            if len(kept) != len(records):
                persist.rewrite_jsonl(self.state_dir / log, kept)
        return saved, reservoir

    def _load_reservoir(self, generation: int) -> torch.Tensor | None:
        d_sae = self.sae.cfg.d_sae
        current, previous = self.state_dir / RESERVOIR_FILE, self.state_dir / PREVIOUS_RESERVOIR_FILE
        for path in (current, previous):
            if path.exists() and _generation_of(path, generation) == generation:
                weights = persist.load_tensors(path, expected={"weights": (d_sae,)})["weights"]
                return _check_reservoir(weights, path)
        if current.exists():
            raise persist.StateFileError(
                f"{current} is from generation {_generation_of(current, generation)} and {self.state_dir / STATE_FILE} "
                f"from generation {generation}, with no {PREVIOUS_RESERVOIR_FILE} to match; the state was not loaded")
        if (self.state_dir / LEGACY_RESERVOIR_FILE).exists():  # an older runtime's torch.save (weights_only)
            path = self.state_dir / LEGACY_RESERVOIR_FILE
            weights = persist.load_legacy_pt(path)
            weights = weights["weights"] if isinstance(weights, dict) else weights
            if tuple(weights.shape) != (d_sae,):
                raise persist.StateFileError(f"{path}: reservoir of shape {tuple(weights.shape)}, the SAE has "
                                             f"d_sae={d_sae}")
            return _check_reservoir(weights, path)
        return None

    def _load_saved_modes(self) -> dict:
        path = self.state_dir / MODES_FILE if self.state_dir is not None else None
        if path is None or not path.exists():
            return {}
        return persist.load_json(path, validate=lambda obj: _check_modes(obj, path, self.sae.cfg.d_sae))

    def save(self) -> None:
        """Commit this turn (a new generation): log lines were appended as the turn went; now the reservoir
        (the last one kept as reservoir.prev.safetensors), then anima.json, each written atomically."""
        if self.state_dir is None:
            return
        generation = self.generation + 1
        current = self.state_dir / RESERVOIR_FILE
        if current.exists():
            os.replace(current, self.state_dir / PREVIOUS_RESERVOIR_FILE)
        persist.save_tensors(current, {"weights": self.reservoir.weights}, metadata={"generation": str(generation)})
        persist.save_json(self.state_dir / STATE_FILE, {
            "config": self.config.to_dict(), "turns": self.turns, "fatigue": self.fatigue, "sleeps": self.sleeps,
            "self_model": self.self_model, "short_term": self.short_term, "generation": generation,
            "valence_estimator": getattr(self.valence, "name", None)})
        self.generation = generation

    def _log(self, name: str, record: dict) -> None:
        """Append to a log, tagged with the generation the next ``save`` commits."""
        if self.state_dir is not None:
            persist.append_jsonl(self.state_dir / name, {**record, "generation": self.generation + 1})

    # ------------------------------------------------------------------ prism

    @property
    def modes(self) -> dict[str, dict]:
        """Every mode with its features for this SAE (discovered once, then read from modes.json)."""
        if self._modes is None:
            from hfself.plugins import registry

            saved = self._saved_modes
            # the built-ins come through the hook too; when anima is not a loaded plugin, only they
            wanted = {**registry("steering_modes", default=BUILTIN_MODES), **saved}
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

    def mode_named(self, name: str) -> str:
        """The mode called ``name``, matched exactly or else case-insensitively; a ValueError lists the modes."""
        if name in self.modes:
            return name
        matches = [mode for mode in self.modes if mode.casefold() == name.casefold()]
        if len(matches) != 1:
            raise ValueError(f"unknown mode {name!r}; modes: {', '.join(sorted(self.modes))}")
        return matches[0]

    def set_mode(self, name: str | None) -> None:
        """Force a mode (``None``: no mode steering); the name is matched case-insensitively."""
        if name is not None:
            name = self.mode_named(name)
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
        if isinstance(texts, str) or not texts or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"texts must be a non-empty list of strings, got {texts!r:.80}")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
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
        self._log(MEMORY_FILE, memory)
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
        self._log(DREAM_FILE, record)
        self._log(SELF_MODEL_FILE, {"sleep": self.sleeps, "self_model": self.self_model})
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
        """Remove the hooks and let another session have the state directory."""
        self.steering.detach()
        self._unlock()

    def _unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "AnimaRuntime":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class StateDirBusyError(RuntimeError):
    """Another session holds the state directory."""


def _lock_state_dir(state_dir: Path):
    """One writer per state directory: an OS-level lock held until ``close``; a second session gets an error at
    once (waiting would hide that two sessions were meant to share one personality)."""
    from filelock import FileLock, Timeout

    if state_dir.exists() and not state_dir.is_dir():
        raise NotADirectoryError(f"anima state dir {state_dir} is a file; give a directory")
    state_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(state_dir, os.W_OK | os.X_OK):
        raise PermissionError(f"anima state dir {state_dir} is not writable; the personality could not be saved")
    lock = FileLock(state_dir / LOCK_FILE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise StateDirBusyError(f"anima state dir {state_dir} is in use by another session (lock {LOCK_FILE}); "
                                "close that one first, or give this one its own --state-dir") from None
    return lock


def _generation_of(path: Path, default: int) -> int:
    """The generation a reservoir file was saved at (files from before generations count as ``default``)."""
    value = persist.tensor_file_metadata(path).get("generation")
    return default if value is None else int(value)


def _check_reservoir(weights: torch.Tensor, path: Path) -> torch.Tensor:
    bad = (~torch.isfinite(weights)).sum().item()
    if bad:
        raise persist.StateFileError(f"{path}: field 'weights' has {bad} non-finite values (NaN or inf); "
                                     "the reservoir was not loaded")
    return weights


_STATE_FIELDS = {"config": dict, "turns": int, "fatigue": int, "sleeps": int, "generation": int, "self_model": str,
                 "short_term": list}


def _check_state(state, path: Path) -> None:
    if not isinstance(state, dict):
        raise persist.StateFileError(f"{path}: expected a JSON object, found {type(state).__name__}; the state was "
                                     "not loaded (it would reset the personality)")
    for key, kind in _STATE_FIELDS.items():
        value = state.get(key)
        if value is None:
            continue
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 0):
            wanted = "a non-negative int" if kind is int else f"a JSON {kind.__name__}"
            raise persist.StateFileError(f"{path}: field {key!r} should be {wanted}, found {value!r:.80}")
    for i, memory in enumerate(state.get("short_term") or []):
        if not (isinstance(memory, dict) and isinstance(memory.get("features"), dict)
                and isinstance(memory.get("valence"), (int, float)) and isinstance(memory.get("user"), str)):
            raise persist.StateFileError(f"{path}: field 'short_term'[{i}] is not a memory (user, valence, features)")


def _check_modes(modes, path: Path, d_sae: int) -> None:
    if not isinstance(modes, dict):
        raise persist.StateFileError(f"{path}: expected a JSON object of modes, found {type(modes).__name__}")
    for name, mode in modes.items():
        features = mode.get("features") if isinstance(mode, dict) else None
        if not isinstance(features, dict):
            raise persist.StateFileError(f"{path}: mode {name!r} has no 'features' object")
        for feature, value in features.items():
            if not (str(feature).isdigit() and int(feature) < d_sae):
                raise persist.StateFileError(f"{path}: mode {name!r} names feature {feature!r}, not one of this "
                                             f"SAE's {d_sae}")
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise persist.StateFileError(f"{path}: mode {name!r} feature {feature} has value {value!r}, not a "
                                             "finite number")


def _config_from(saved: dict, state_dir) -> AnimaConfig:
    try:
        return AnimaConfig(**saved)
    except TypeError as err:
        raise persist.StateFileError(f"{state_dir / STATE_FILE}: field 'config' does not fit AnimaConfig ({err})") \
            from None


def _json_ready(mode: dict) -> dict:
    """Feature ids as strings, as they come back from modes.json."""
    return {**mode, "features": {str(k): float(v) for k, v in mode["features"].items()}}
