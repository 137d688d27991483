"""RhythmicTrainer: a Trainer that skips batches whose loss is not finite (and counts them)."""

from __future__ import annotations

import torch
from transformers import Trainer


class RhythmicTrainer(Trainer):
    """Trainer for Spiralformer; the model computes the rhythmic (phase-weighted) loss itself.

    A batch whose loss is NaN or inf does not update anything: its loss is replaced by a zero
    that touches every trainable parameter (so DDP still syncs), and ``spiral/skipped_batches``
    is logged. Gradient clipping is TrainingArguments' ``max_grad_norm``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.skipped_batches = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if not torch.isfinite(loss):
            self.skipped_batches += 1
            loss = sum((p * 0).sum() for p in model.parameters() if p.requires_grad)
            self.log({"spiral/skipped_batches": float(self.skipped_batches)})
        return (loss, outputs) if return_outputs else loss
