"""SAE steering on the residual stream: a forward hook on one decoder layer of any supported causal LM.

The edit is ``x + (decode(edited) − decode(original))``: only the change in feature space
is added, so the SAE's reconstruction error never enters the residual stream, and an edit
that changes nothing adds exactly zero. When the SAE's decoder is affine (no output
normalization or reshaping, as for residual-stream SAEs), that difference is computed as
``(edited − original) @ W_dec``: one matmul instead of two decodes.
"""

from __future__ import annotations

import torch
from torch import nn

from hfself.arch import inspect_model, residual_of, with_residual


class SAEDimensionError(ValueError):
    pass


class SAESteering:
    """Attaches an SAE to the output of decoder layer ``layer`` and edits its features.

    ``edit(features) -> features`` is called on (B, T, d_sae) activations. While
    ``recording``, each forward's newest-position activations are kept (see :meth:`recorded`).
    """

    def __init__(self, model: nn.Module, sae, layer: int | None = None):
        self.model, self.sae = model, sae
        self.arch = inspect_model(model)
        self.arch.require_one_residual_stream("anima", model)
        self.layer = self.arch.num_layers // 2 if layer is None else layer
        if not 0 <= self.layer < self.arch.num_layers:
            raise ValueError(f"layer {self.layer} out of range for a {self.arch.num_layers}-layer model")
        d_in = sae.cfg.d_in
        if d_in != self.arch.hidden_size:
            raise SAEDimensionError(f"the SAE reads d_in={d_in} activations but the model's residual stream "
                                    f"({self.arch.model_type}) has hidden_size={self.arch.hidden_size}")
        self.module = self.arch.layers[self.layer].layer
        cfg = sae.cfg
        self.affine_decoder = (getattr(cfg, "normalize_activations", "none") == "none"
                               and getattr(cfg, "reshape_activations", "none") == "none")
        self.edits: list = []
        self._recorded: list[torch.Tensor] = []  # per forward while recording: (B, d_sae) at the newest position
        self.recording = False
        self._handle = None

    @property
    def attached(self) -> bool:
        return self._handle is not None

    def attach(self) -> None:
        if self._handle is None:
            self._handle = self.module.register_forward_hook(self._hook)

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def recorded(self) -> torch.Tensor | None:
        """(forwards, B, d_sae): each forward's newest-position activations since recording started."""
        return torch.stack(self._recorded) if self._recorded else None

    def start_recording(self) -> None:
        self._recorded.clear()
        self.recording = True

    def _hook(self, module, inputs, output):
        x = residual_of(output)  # (B, T, d_model)
        sae_dtype = self.sae.W_dec.dtype
        features = self.sae.encode(x.to(sae_dtype))  # (B, T, d_sae)
        if self.recording:  # the newest position of each row: real under left padding, one per generated token
            self._recorded.append(features[:, -1].detach().float())  # (B, d_sae)
        edited = features
        for edit in self.edits:
            edited = edit(edited)
        if edited is features:
            return output
        if self.affine_decoder:
            delta = (edited - features) @ self.sae.W_dec  # (B, T, d_model); the bias cancels
        else:
            delta = self.sae.decode(edited) - self.sae.decode(features)  # (B, T, d_model)
        return with_residual(output, x + delta.to(x.dtype))
