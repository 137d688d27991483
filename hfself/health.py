"""TrainingHealthCallback: say so when a run diverges, while it still can be stopped."""

from __future__ import annotations

import logging
import math

from transformers import TrainerCallback

logger = logging.getLogger("hfself")


class TrainingHealthCallback(TrainerCallback):
    """Warn (once per kind) when the logged training loss rises well above where it started, when the gradient
    norm grows far past its first value, or when either stops being finite. A pretrained model destroyed by too
    high a learning rate shows exactly this; the warning names the flags that usually fix it.

    ``loss_rise``: warn when the loss exceeds its first logged value by this factor (after ``patience`` logs);
    ``grad_growth``: warn when the gradient norm exceeds its first logged value by this factor.
    """

    def __init__(self, loss_rise: float = 1.2, grad_growth: float = 10.0, patience: int = 2):
        self.loss_rise, self.grad_growth, self.patience = loss_rise, grad_growth, patience
        self.first: dict[str, float] = {}
        self.logs = 0
        self.warned: set[str] = set()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs or not state.is_world_process_zero:
            return
        self.logs += 1
        advice = (f"the run may be destroying the model (learning_rate {args.learning_rate:g}); lower "
                  "--learning_rate, or train less of it (--freeze_base true: the identity only; --use_peft true)")
        for key, factor in (("loss", self.loss_rise), ("grad_norm", self.grad_growth)):
            value = logs.get(key)
            if value is None:
                continue
            value = float(value)
            if not math.isfinite(value):
                self._warn(key, f"step {state.global_step}: {key} is {value}; {advice}")
                continue
            first = self.first.setdefault(key, value)
            if self.logs > self.patience and first > 0 and value > factor * first:
                self._warn(key, f"step {state.global_step}: {key} {value:.3g} is {value / first:.1f}x its first "
                                f"logged value {first:.3g}; {advice}")

    def _warn(self, kind: str, message: str) -> None:
        if kind not in self.warned:
            self.warned.add(kind)
            logger.warning("training diverges: %s", message)
