"""Attention probe: how much attention labelled spans of a conversation receive from the response.

A conversation is a list of segments ``{"label": ..., "text": ...}`` joined
into one text. For every layer l and head h the probe reports

    mass[span][l, h] = mean over conversations and response positions q of
                       sum over key positions k in span of A[l, h, q, k]

where A is the model's attention (rows sum to 1). Measured before and after
training, the difference shows where W_q learned to look.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from hfself import persist
from hfself.plotting import pyplot, save_figure
from hfself.arch import unwrap_model

QUERY_LABEL = "response"


def segment_labels(tokenizer, segments: list[dict]) -> tuple[list[int], list[str | None]]:
    """Token ids of the joined segments and the label of each token (by its first character)."""
    text = "".join(s["text"] for s in segments)
    starts, bounds = 0, []
    for s in segments:
        bounds.append((starts, starts + len(s["text"]), s["label"]))
        starts += len(s["text"])
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    labels = []
    for begin, end in enc["offset_mapping"]:
        # tokenizers that fold a leading space into a token start on the space: label by the first non-space char
        pos = begin + len(text[begin:end]) - len(text[begin:end].lstrip()) if end > begin else begin
        labels.append(next((label for lo, hi, label in bounds if lo <= pos < hi), None))
    return enc["input_ids"], labels


def span_attention_mass(attentions, query_mask: torch.Tensor, key_masks: dict[str, torch.Tensor]) -> dict:
    """Attention mass per span, per layer and head.

    :param attentions: one (B, H, T, T) tensor per layer.
    :param query_mask: (B, T) bool, the response positions whose attention is read.
    :param key_masks: label -> (B, T) bool, the positions of each span.
    :return: label -> (L, H) tensor, the mean over batch and query positions of the summed mass.
    """
    attn = torch.stack([a.float() for a in attentions])  # (L, B, H, T, T)
    q = query_mask.to(attn.dtype)  # (B, T)
    n_queries = q.sum()
    if n_queries == 0:
        raise ValueError("no response positions to read attention from")
    out = {}
    for label, keys in key_masks.items():
        to_span = (attn * keys.to(attn.dtype)[None, :, None, None, :]).sum(-1)  # (L, B, H, T)
        out[label] = (to_span * q[None, :, None, :]).sum(dim=(1, 3)) / n_queries  # (L, H)
    return out


@contextlib.contextmanager
def eager_attention(model):
    """Temporarily switch to eager attention, the implementation that returns attention weights."""
    lm = unwrap_model(model)
    before = lm.config._attn_implementation
    if before != "eager":
        lm.set_attn_implementation("eager")
    try:
        yield
    finally:
        if before != "eager":
            lm.set_attn_implementation(before)


class AttentionProbe:
    """Measure span attention mass of a model on fixed conversations.

        probe = AttentionProbe(conversations, spans=["direction", "own_idea"])
        before = probe.measure(model, tokenizer)
        ... train ...
        report = probe.report(before, probe.measure(model, tokenizer), "outputs/probe")
    """

    def __init__(self, conversations: list[list[dict]], spans: list[str] | None = None,
                 query_label: str = QUERY_LABEL):
        if not conversations:
            raise ValueError("the probe needs at least one conversation")
        found = {s["label"] for conv in conversations for s in conv}
        if query_label not in found:
            raise ValueError(f"no segment labelled {query_label!r} (the response) in the probe conversations")
        self.conversations = conversations
        self.spans = spans or sorted(found - {query_label})
        self.query_label = query_label

    @torch.no_grad()
    def measure(self, model, tokenizer) -> dict:
        """{"layers", "heads", "mass": {span: [[L x H]]}} averaged over the conversations."""
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        total: dict[str, torch.Tensor] = {}
        with eager_attention(model):
            for conv in self.conversations:
                ids, labels = segment_labels(tokenizer, conv)
                input_ids = torch.tensor([ids], device=device)
                attentions = model(input_ids=input_ids, output_attentions=True).attentions
                masks = {label: torch.tensor([[lab == label for lab in labels]], device=device)
                         for label in [*self.spans, self.query_label]}
                mass = span_attention_mass(attentions, masks.pop(self.query_label), masks)
                for label, value in mass.items():
                    total[label] = total.get(label, 0) + value.cpu()
        model.train(was_training)
        mass = {label: (value / len(self.conversations)).tolist() for label, value in total.items()}
        first = next(iter(total.values()))
        return {"layers": first.shape[0], "heads": first.shape[1], "mass": mass}

    def report(self, before: dict, after: dict, out_dir: str | Path) -> dict:
        """Write probe.json, one heatmap PNG per span and summary.md; return the summary."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        summary = compare(before, after)
        persist.save_json(out / "probe.json", {"before": before, "after": after, "summary": summary})
        for span in summary:
            plot_span(before, after, span, out / f"attention_{span}.png")
        lines = ["| span | mean before | mean after | change | heads up |", "|---|---|---|---|---|"]
        for span, s in summary.items():
            lines.append(f"| {span} | {s['mean_before']:.4f} | {s['mean_after']:.4f} | {s['delta']:+.4f} "
                         f"| {s['heads_increased']}/{s['heads_total']} |")
        persist.atomic_write_bytes(out / "summary.md", ("\n".join(lines) + "\n").encode())
        return summary


def compare(before: dict, after: dict) -> dict:
    """Per span: mean mass before/after, the change, how many (layer, head) pairs gained, the top gainer."""
    summary = {}
    for span in before["mass"]:
        b, a = torch.tensor(before["mass"][span]), torch.tensor(after["mass"][span])
        diff = a - b  # (L, H)
        top = int(diff.argmax())
        summary[span] = {"mean_before": b.mean().item(), "mean_after": a.mean().item(),
                         "delta": diff.mean().item(), "heads_increased": int((diff > 0).sum()),
                         "heads_total": diff.numel(), "top_head": {"layer": top // diff.shape[1],
                                                                   "head": top % diff.shape[1],
                                                                   "delta": diff.flatten()[top].item()}}
    return summary


def plot_span(before: dict, after: dict, span: str, path: Path) -> None:
    """Three heatmaps (layer x head): before, after, after - before."""
    plt = pyplot()
    b, a = torch.tensor(before["mass"][span]), torch.tensor(after["mass"][span])
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    vmax = max(b.max().item(), a.max().item())
    for ax, data, title, kw in ((axes[0], b, "before", dict(vmin=0, vmax=vmax, cmap="viridis")),
                                (axes[1], a, "after", dict(vmin=0, vmax=vmax, cmap="viridis")),
                                (axes[2], a - b, "after − before",
                                 dict(cmap="coolwarm", vmin=-(a - b).abs().max().item(),
                                      vmax=(a - b).abs().max().item()))):
        im = ax.imshow(data.numpy(), aspect="auto", **kw)
        layers, heads = data.shape
        ax.set_yticks(range(layers))  # integer ticks: one row per layer, one column per head
        ax.set_xticks(range(heads))
        ax.set(title=f"{span}: {title}", xlabel="head", ylabel="layer")
        fig.colorbar(im, ax=ax, label="attention mass" if "−" not in title else "change in attention mass")
    save_figure(fig, path)
