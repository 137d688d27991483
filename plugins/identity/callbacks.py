"""IntrospectionCallback: every N optimizer steps, ask the model who it is and pull the identity there."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainerCallback

from hfself import persist
from hfself.arch import unwrap_model
from hfself.sharding import is_sharded, reshard, updating_whole
from hfself.text import encode_prompt
from hfself.train import checkpoint_dir_being_saved, checkpoint_to_restore, log_from_event

CALLBACK_STATE = "introspection_state.safetensors"
CALLBACK_META = "introspection_state.json"
ROUND_INPUTS = "introspection_round_inputs_rank{rank}.safetensors"  # IdentityBlock.round_inputs, per rank
LOG_FILE = "introspection.jsonl"


@dataclass
class IntrospectionArguments:
    """The introspection flags (also recipe YAML keys)."""

    identity_update_interval: int = field(default=50, metadata={"help": "Optimizer steps between introspection rounds."})
    identity_prompt: str = field(default="Who am I? Where do I want to go?", metadata={
        "help": "Prompt of every introspection round (a user turn of the tokenizer's chat template when it has one)."})
    identity_max_new_tokens: int = field(default=32, metadata={"help": "Length of the sampled self-description."})
    identity_lr: float | None = field(default=None,
                                      metadata={"help": "LR of the introspection optimizer (default 0.1 x learning_rate)."})
    identity_loss_scale: float = field(default=1.0, metadata={"help": "Weight of the introspection loss."})
    identity_ema: float = field(default=0.0,
                                metadata={"help": "EMA factor on the identity after each round (0: off)."})
    identity_do_sample: bool = field(default=True, metadata={"help": "Sample (True) or greedy-decode self-descriptions."})
    identity_temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of self-descriptions."})
    identity_cache_implementation: str = field(default="auto", metadata={
        "help": "KV cache of the round's generation: 'static' (preallocated; on CUDA transformers also compiles "
                "the decoding step), 'dynamic', or 'auto': static on an accelerator, dynamic on CPU (where a static "
                "cache measured 11% slower, benchmarks/bench_identity.py). Sharded models and models without a "
                "static cache use 'dynamic'."})

    def __post_init__(self):
        if self.identity_update_interval < 0:
            raise ValueError(f"identity_update_interval must be >= 1 (0 turns introspection off in a recipe), got "
                             f"{self.identity_update_interval}")
        if self.identity_max_new_tokens < 1:
            raise ValueError(f"identity_max_new_tokens must be >= 1, got {self.identity_max_new_tokens}")


class IntrospectionCallback(TrainerCallback):
    """Introspection rounds during training.

    Every ``identity_update_interval`` optimizer steps: generate a
    self-description from ``identity_prompt`` (on the main process, or on every
    rank when the model is sharded; rank 0's token ids are broadcast so every
    rank sees the same text), summarize it with the
    model's own hidden states, take one step of a separate Adam optimizer on the
    identity block toward it, log ``introspection/loss``, ``introspection/drift``
    (cosine of the soul before vs after) and append to
    ``<output_dir>/introspection.jsonl``. Its optimizer and counters are saved in
    each checkpoint and restored on ``resume_from_checkpoint``.

    Usage::

        cb = IntrospectionCallback(IntrospectionArguments(identity_update_interval=20))
        trainer = SFTTrainer(model=identity_model, args=..., callbacks=[cb], ...)
        cb.bind(trainer)   # optional: logs go through trainer.log (report_to)
    """

    checkpoint_files = (CALLBACK_STATE, CALLBACK_META)  # in every checkpoint (hfself.train.resolve_checkpoint)

    def __init__(self, args: IntrospectionArguments | None = None, main_lr: float | None = None):
        self.args = args or IntrospectionArguments()
        if self.args.identity_update_interval < 1:  # a callback that never runs is a mistake, not "off"
            raise ValueError("an IntrospectionCallback needs identity_update_interval >= 1; to train without "
                             "introspection leave the callback out (recipes: --identity_update_interval 0)")
        self.main_lr = main_lr
        self.optimizer: torch.optim.Optimizer | None = None
        self.rounds = 0
        self.history: list[dict] = []
        self._trainer = None
        self._pending: dict | None = None

    def bind(self, trainer) -> "IntrospectionCallback":
        self._trainer = trainer
        return self

    # ------------------------------------------------------------------ optimizer

    def _block(self, model):
        block = getattr(model, "identity_block", None)
        if block is None:
            raise ValueError("IntrospectionCallback needs an IdentityForCausalLM with identity enabled")
        return block

    def ensure_optimizer(self, model, train_args=None) -> torch.optim.Optimizer:
        """The identity optimizer (Adam over the block), made on first use: lr is ``identity_lr`` or
        0.1 x the main learning rate (``main_lr`` or ``train_args.learning_rate``)."""
        if self.optimizer is None:
            lr = self.args.identity_lr or 0.1 * (self.main_lr or train_args.learning_rate)
            self.optimizer = torch.optim.Adam(self._block(model).parameters(), lr=lr)
        return self.optimizer

    # ------------------------------------------------------------------ the round

    def _cache_kwargs(self, model) -> dict:
        wanted = self.args.identity_cache_implementation
        lm = unwrap_model(model)
        if wanted == "auto":
            wanted = "dynamic" if lm.device.type == "cpu" else "static"
        if wanted not in ("static", "dynamic"):
            raise ValueError(f"identity_cache_implementation must be 'auto', 'static' or 'dynamic', got {wanted!r}")
        if is_sharded(model) or not getattr(lm, "_can_compile_fullgraph", False):
            wanted = "dynamic"
        return {"cache_implementation": "static"} if wanted == "static" else {}  # else transformers' own cache

    def introspect(self, model, tokenizer, train_args=None, step: int = 0, is_main: bool = True) -> dict:
        """Run one introspection round now; returns the record that is logged."""
        block = self._block(model)
        optimizer = self.ensure_optimizer(model, train_args)
        device = next(block.parameters()).device
        was_training = model.training
        model.eval()
        prompt = torch.tensor([encode_prompt(tokenizer, self.args.identity_prompt)], device=device)  # chat format
        ids = [None]
        if is_main or is_sharded(model):  # a sharded forward needs every rank; rank 0's text is used by all
            gen = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                                 max_new_tokens=self.args.identity_max_new_tokens,
                                 do_sample=self.args.identity_do_sample, temperature=self.args.identity_temperature,
                                 pad_token_id=tokenizer.pad_token_id, **self._cache_kwargs(model))
            ids = [gen[0, prompt.shape[1]:].tolist()]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.broadcast_object_list(ids, src=0)  # also where accelerate did not start the group
        new_ids = ids[0] or [tokenizer.eos_token_id]
        text = tokenizer.decode(new_ids, skip_special_tokens=True)

        with torch.no_grad():
            input_ids = torch.tensor([new_ids], device=device)
            hidden = model(input_ids=input_ids, output_hidden_states=True).hidden_states[-1]  # (1, T, d_model)
            summary = block.summarize_token_context(hidden.float(), None)[0]  # (d_model,)

        reshard(model)
        with updating_whole(block):
            with torch.no_grad():
                soul_before = block.soul().detach().clone()
            block.train(was_training)
            loss = block.introspection_round(summary, optimizer, self.args.identity_loss_scale, self.args.identity_ema)
            with torch.no_grad():
                drift = torch.nn.functional.cosine_similarity(soul_before, block.soul(), dim=-1).item()
        model.train(was_training)
        model.last_self_description = text
        self.rounds += 1
        record = {"step": step, "round": self.rounds, "text": text, "loss": loss, "drift_cosine": drift}
        self.history.append({k: v for k, v in record.items() if k != "text"})
        return record

    # ------------------------------------------------------------------ TrainerCallback

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.ensure_optimizer(model, args)
        checkpoint = checkpoint_to_restore(args, state, CALLBACK_META)
        if checkpoint is not None:
            self.load_state(checkpoint)
            inputs = checkpoint / ROUND_INPUTS.format(rank=args.process_index)
            if inputs.exists():
                self._block(model).load_round_inputs(persist.load_tensors(inputs))

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        interval = self.args.identity_update_interval
        if interval > 0 and state.global_step % interval == 0:
            self._round(args, state, control, model, processing_class)
        self.on_epoch_end(args, state, control, model)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        directory = checkpoint_dir_being_saved(args, state, control)  # before trainer_state.json is written
        if directory is None:
            return
        if state.is_world_process_zero:
            self.save_state(directory)
        inputs = self._block(model).round_inputs()  # every rank's own
        if inputs:
            persist.save_tensors(directory / ROUND_INPUTS.format(rank=args.process_index), inputs)

    def _round(self, args, state, control, model, processing_class) -> None:
        record = self.introspect(model, processing_class, args, step=state.global_step,
                                 is_main=state.is_world_process_zero)
        if state.is_world_process_zero:
            persist.append_jsonl(Path(args.output_dir) / LOG_FILE, record)
        metrics = {"introspection/loss": record["loss"], "introspection/drift_cosine": record["drift_cosine"],
                   "introspection/round": record["round"]}
        if self._trainer is not None:
            log_from_event(self._trainer, metrics)
        else:
            self._pending = metrics
            control.should_log = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._pending and logs is not None:
            logs.update(self._pending)
            self._pending = None

    # ------------------------------------------------------------------ state

    def save_state(self, directory: Path) -> None:
        tensors, meta = {}, {"rounds": self.rounds, "history": self.history, "param_groups": []}
        if self.optimizer is not None:
            sd = self.optimizer.state_dict()
            for pid, st in sd["state"].items():
                for k, v in st.items():
                    tensors[f"state.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
            meta["param_groups"] = sd["param_groups"]
        persist.save_tensors(directory / CALLBACK_STATE, tensors)
        persist.save_json(directory / CALLBACK_META, meta)

    def load_state(self, directory: Path) -> None:
        meta = persist.load_json(directory / CALLBACK_META)
        tensors = persist.load_tensors(directory / CALLBACK_STATE)
        self.rounds, self.history = meta["rounds"], meta["history"]
        if self.optimizer is not None and meta["param_groups"]:
            state: dict[int, dict] = {}
            for key, value in tensors.items():
                _, pid, name = key.split(".", 2)
                state.setdefault(int(pid), {})[name] = value
            self.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
