"""Getting an SAE: a Hub release/id or a local directory (sae-lens), or one trained here on the model's activations."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from hfself.arch import inspect_model, residual_of


def load_sae(spec: str, device: str | torch.device = "cpu"):
    """A local directory saved by sae-lens (cfg.json + sae_weights.safetensors), or ``release:sae_id`` from the Hub."""
    from sae_lens import SAE

    if Path(spec).is_dir():
        return SAE.load_from_disk(spec, device=str(device))
    if ":" not in spec:
        raise ValueError(f"{spec!r} is neither a directory nor 'release:sae_id' "
                         "(e.g. 'gpt2-small-res-jb:blocks.6.hook_resid_pre')")
    release, sae_id = spec.split(":", 1)
    return SAE.from_pretrained(release, sae_id, device=str(device))


@torch.no_grad()
def activations(model: nn.Module, tokenizer, texts: list[str], layer: int, max_length: int = 128,
                batch_size: int = 8) -> torch.Tensor:
    """(N, d_model): the residual stream after decoder layer ``layer`` at every non-padding token of ``texts``."""
    arch = inspect_model(model)
    arch.require_one_residual_stream("anima", model)
    captured = []
    handle = arch.layers[layer].layer.register_forward_hook(lambda m, i, o: captured.append(residual_of(o).detach()))
    device = next(model.parameters()).device
    rows = []
    try:
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True, truncation=True,
                            max_length=max_length).to(device)
            captured.clear()
            model(**enc)
            rows.append(captured[0][enc["attention_mask"].bool()].float().cpu())  # (tokens, d_model)
    finally:
        handle.remove()
    return torch.cat(rows)


def train_sae(model: nn.Module, tokenizer, texts: list[str], layer: int, d_sae: int = 512,
              training_tokens: int = 200_000, batch_tokens: int = 256, lr: float = 1e-3,
              l1_coefficient: float = 1.0, max_length: int = 128, seed: int = 0):
    """Train a standard SAE on the model's layer-``layer`` activations over ``texts`` with sae-lens' SAETrainer.

    The activations are computed once and streamed in shuffled batches; sae-lens shows the progress bar.
    Returns the inference SAE (save it with ``sae.save_model(dir)``).
    """
    from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    torch.manual_seed(seed)
    acts = activations(model, tokenizer, texts, layer, max_length=max_length)  # (N, d_model)
    sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=acts.shape[1], d_sae=d_sae,
                                                        l1_coefficient=l1_coefficient,
                                                        normalize_activations="expected_average_only_in"))
    generator = torch.Generator().manual_seed(seed)

    def batches():
        while True:
            for idx in torch.randperm(len(acts), generator=generator).split(batch_tokens):
                if len(idx) == batch_tokens:
                    yield acts[idx]

    steps = max(1, training_tokens // batch_tokens)
    config = SAETrainerConfig(total_training_samples=steps * batch_tokens, train_batch_size_samples=batch_tokens,
                              lr=lr, lr_end=lr / 10, n_batches_for_norm_estimate=min(100, steps),
                              dead_feature_window=max(10, steps // 4), feature_sampling_window=max(10, steps // 4))
    trained = SAETrainer(cfg=config, sae=sae, data_provider=batches()).fit()
    return _inference_copy(trained)


def _inference_copy(training_sae):
    """The inference SAE class of a trained training SAE, same weights."""
    import tempfile

    from sae_lens import SAE

    with tempfile.TemporaryDirectory() as tmp:
        training_sae.save_model(tmp)
        return SAE.load_from_disk(tmp)
