"""QOnlyCallback (keeps fused K/V frozen) and DreamCallback (the dream loop with a replay buffer)."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from transformers import TrainerCallback

from hfself import persist
from hfself.sharding import is_sharded, sharded_generation_kwargs
from hfself.train import checkpoint_dir_being_saved, checkpoint_to_restore, log_from_event

from .config import DreamArguments
from .layer import QOnlyTraining
from .listening import DREAM_PROMPTS

DREAM_STATE = "dream_state.json"
DREAM_LOG = "dreams.jsonl"


class QOnlyCallback(TrainerCallback):
    """After every optimizer step, write fused projections' K/V slices back (see QOnlyTraining)."""

    def __init__(self, q_only: QOnlyTraining):
        self.q_only = q_only

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.q_only.restore_frozen()


class ReplayBuffer:
    """The dreams training samples from: token ids with their text, score and step, oldest leave first.

    It also remembers what it held after each of its last few rounds (:meth:`as_of`), so that a batch draws from
    the buffer as of a fixed step, whenever the DataLoader happens to collate it.
    """

    KEPT_ROUNDS = 4

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.items: list[dict] = []
        self.rounds: list[tuple[int, list[dict]]] = []  # (step, items after that round's add), the last few

    def add(self, items: list[dict], step: int = 0) -> None:
        self.items = (self.items + items)[-self.capacity:] if self.capacity > 0 else []
        self.rounds = (self.rounds + [(step, self.items)])[-self.KEPT_ROUNDS:]

    def as_of(self, step: int) -> list[dict]:
        """The items after the last round at or before ``step`` (none before the first round)."""
        for round_step, items in reversed(self.rounds):
            if round_step <= step:
                return items
        return [] if self.rounds else self.items  # a buffer restored without its rounds: what it holds

    def __len__(self) -> int:
        return len(self.items)


class ReplayCollator:
    """Wrap a data collator: each example is replaced by a buffered dream with probability ``ratio``.

    Runs where the DataLoader collates, so ``dataloader_num_workers`` must be 0
    (workers would hold a stale copy of the buffer). accelerate's DataLoader
    collates one batch ahead, so the batch of step ``s`` may be collated before
    or after the dream round of step ``s - 1``: it draws from the buffer as of
    step ``s - 2`` (:meth:`ReplayBuffer.as_of`), with a generator seeded by the
    rank's seed and the batch's index. Each batch is then the same in a run and
    in its resumes (:attr:`batches` is set from the resumed step).
    """

    def __init__(self, collator, buffer: ReplayBuffer, ratio: float, seed: int = 0, accumulation_steps: int = 1):
        self.collator, self.buffer, self.ratio = collator, buffer, ratio
        self.seed, self.accumulation_steps = seed, accumulation_steps
        self.batches = 0  # batches collated so far (set on resume from the optimizer step)
        self.replayed = 0

    def __call__(self, features: list[dict]):
        index, self.batches = self.batches, self.batches + 1
        step = index // self.accumulation_steps + 1  # the optimizer step this batch belongs to
        pool = self.buffer.as_of(max(step - 2, 0))  # what was there before training counts from the start
        if pool and self.ratio > 0:
            rng = random.Random(f"{self.seed}:{index}")
            features = [self._dream_example(f, rng.choice(pool)) if rng.random() < self.ratio else f
                        for f in features]
        return self.collator(features)

    def _dream_example(self, like: dict, dream: dict) -> dict:
        ids = list(dream["input_ids"])
        example = {"input_ids": ids}
        for key in like:
            if key.endswith("mask"):
                example[key] = [1] * len(ids)
            elif key == "position_ids":
                example[key] = list(range(len(ids)))
            elif key == "labels":  # a dream is trained on in full
                example[key] = list(ids)
            elif key != "input_ids":
                raise ValueError(f"dream replay cannot fill the dataset column {key!r}; "
                                 "keep only input_ids, labels and masks in the training set")
        self.replayed += 1
        return example


class DreamCallback(TrainerCallback):
    """Every ``dream_interval`` steps, dream: generate scenarios, filter, score, keep the best for replay.

    The main process generates ``dream_num`` scenarios from the dream prompts
    (or from BOS), drops those shorter than ``dream_min_tokens`` or more
    repetitive than ``dream_max_repeat``, scores the rest by the model's mean
    log-probability of its own tokens, and keeps the best ``dream_keep``; the
    kept scenarios are broadcast, so every rank's buffer is the same. Training
    examples are replaced by buffered scenarios with probability
    ``dream_replay_ratio`` (the callback wraps the trainer's collator in
    :meth:`bind`). Logs ``dream/*`` metrics and ``<output_dir>/dreams.jsonl``;
    its buffer and sampler state are saved in checkpoints.

        cb = DreamCallback(DreamArguments(dream_interval=50))
        trainer = SFTTrainer(..., callbacks=[cb]); cb.bind(trainer); trainer.train()
    """

    checkpoint_files = (DREAM_STATE,)  # in every checkpoint (hfself.train.resolve_checkpoint)

    def __init__(self, args: DreamArguments | None = None, seed: int = 0):
        self.args = args or DreamArguments()
        self.buffer = ReplayBuffer(self.args.dream_buffer_size)
        self.rounds = 0
        self.seed = seed
        self.collator: ReplayCollator | None = None
        self._trainer = None

    def bind(self, trainer) -> "DreamCallback":
        if trainer.args.dataloader_num_workers > 0:
            raise ValueError("the dream replay buffer lives in the training process; set dataloader_num_workers: 0")
        self._trainer = trainer
        rank = trainer.args.process_index
        self.collator = ReplayCollator(trainer.data_collator, self.buffer, self.args.dream_replay_ratio,
                                       seed=self.seed + 1000 * rank,
                                       accumulation_steps=trainer.args.gradient_accumulation_steps)
        trainer.data_collator = self.collator
        return self

    # ------------------------------------------------------------------ the round

    def prompts(self) -> list[str]:
        return list(DREAM_PROMPTS if self.args.dream_prompts is None else self.args.dream_prompts)

    @torch.no_grad()
    def dream(self, model, tokenizer, step: int = 0, is_main: bool = True) -> dict:
        """One dream round now; returns its record (kept scenarios, counts, scores)."""
        from accelerate.utils import broadcast_object_list

        payload = [None]
        if is_main or is_sharded(model):  # a sharded forward needs every rank; rank 0's scenarios are used by all
            payload = [self._generate(model, tokenizer)]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            broadcast_object_list(payload, from_process=0)
        candidates = payload[0]
        kept = self.select(candidates)
        self.buffer.add([{**c, "step": step} for c in kept], step)
        self.rounds += 1
        return {"step": step, "round": self.rounds, "generated": len(candidates), "kept": len(kept),
                "mean_score": sum(c["score"] for c in kept) / len(kept) if kept else None,
                "buffer": len(self.buffer), "scenarios": [{"text": c["text"], "score": c["score"]} for c in kept]}

    def _generate(self, model, tokenizer) -> list[dict]:
        prompts = self.prompts()
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        if prompts:
            prompt = prompts[self.rounds % len(prompts)]
            enc = tokenizer([prompt] * self.args.dream_num, return_tensors="pt").to(device)
        else:  # undirected: from the BOS (or EOS) token alone
            start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
            enc = {"input_ids": torch.full((self.args.dream_num, 1), start, device=device)}
            enc["attention_mask"] = torch.ones_like(enc["input_ids"])
        out = model.generate(**enc, max_new_tokens=self.args.dream_max_new_tokens, do_sample=True,
                             temperature=self.args.dream_temperature, pad_token_id=tokenizer.pad_token_id,
                             output_scores=True, return_dict_in_generate=True, **sharded_generation_kwargs(model))
        model.train(was_training)
        prompt_len = enc["input_ids"].shape[1]
        new = out.sequences[:, prompt_len:]  # (N, T_new)
        logprobs = torch.stack(out.scores, dim=1).float().log_softmax(-1)  # (N, T_new, V)
        token_logprobs = logprobs.gather(-1, new.unsqueeze(-1)).squeeze(-1)  # (N, T_new)
        candidates = []
        for i in range(new.shape[0]):
            ids = new[i].tolist()
            if tokenizer.eos_token_id in ids:  # stop at the first end of text
                ids = ids[:ids.index(tokenizer.eos_token_id)]
            n = len(ids)
            score = token_logprobs[i, :n].mean().item() if n else float("-inf")
            full = enc["input_ids"][i].tolist() + ids
            candidates.append({"input_ids": full, "n_new": n, "text": tokenizer.decode(full, skip_special_tokens=True),
                               "score": score})
        return candidates

    def select(self, candidates: list[dict]) -> list[dict]:
        """Drop short, repetitive and duplicate scenarios; keep the best-scoring ``dream_keep``."""
        seen = {tuple(item["input_ids"]) for item in self.buffer.items}
        good = []
        for c in candidates:
            new_ids = c["input_ids"][-c["n_new"]:] if c["n_new"] else []
            if c["n_new"] < self.args.dream_min_tokens or tuple(c["input_ids"]) in seen:
                continue
            if 1 - len(set(new_ids)) / len(new_ids) > self.args.dream_max_repeat:
                continue
            seen.add(tuple(c["input_ids"]))
            good.append(c)
        return sorted(good, key=lambda c: c["score"], reverse=True)[:self.args.dream_keep]

    # ------------------------------------------------------------------ TrainerCallback

    def on_train_begin(self, args, state, control, **kwargs):
        checkpoint = checkpoint_to_restore(args, state, DREAM_STATE)
        if checkpoint is not None:
            self.load_state(checkpoint, args.process_index)
        if self.collator is not None:
            self.collator.batches = state.global_step * args.gradient_accumulation_steps

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        interval = self.args.dream_interval
        if interval > 0 and state.global_step % interval == 0:
            self._round(args, state, model, processing_class)
        self.on_epoch_end(args, state, control)

    def on_epoch_end(self, args, state, control, **kwargs):
        directory = checkpoint_dir_being_saved(args, state, control)  # before trainer_state.json is written
        if directory is not None:  # every rank writes its own sampler state; the buffer is the same on all ranks
            self.save_state(directory, args.process_index)

    def _round(self, args, state, model, processing_class) -> None:
        record = self.dream(model, processing_class, step=state.global_step, is_main=state.is_world_process_zero)
        if state.is_world_process_zero:
            persist.append_jsonl(Path(args.output_dir) / DREAM_LOG, record)
        if self._trainer is not None:
            metrics = {"dream/kept": record["kept"], "dream/buffer": record["buffer"],
                       "dream/replayed": self.collator.replayed if self.collator else 0}
            if record["mean_score"] is not None:
                metrics["dream/mean_score"] = record["mean_score"]
            log_from_event(self._trainer, metrics)

    # ------------------------------------------------------------------ state

    def save_state(self, directory: Path, rank: int = 0) -> None:
        state = {"rounds": self.rounds, "buffer": self.buffer.items,
                 "buffer_rounds": [[step, items] for step, items in self.buffer.rounds],
                 "replayed": self.collator.replayed if self.collator else 0}
        name = DREAM_STATE if rank == 0 else f"dream_state_rank{rank}.json"
        persist.save_json(directory / name, state)

    def load_state(self, directory: Path, rank: int = 0) -> None:
        path = directory / (DREAM_STATE if rank == 0 else f"dream_state_rank{rank}.json")
        if not path.exists():
            path = directory / DREAM_STATE
        state = persist.load_json(path)
        self.rounds = state["rounds"]
        self.buffer.items = state["buffer"]
        self.buffer.rounds = [(step, items) for step, items in state.get("buffer_rounds", [])]
        if self.collator is not None:
            self.collator.replayed = state.get("replayed", 0)
