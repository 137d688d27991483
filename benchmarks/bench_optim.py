"""APOLLO vs AdamW (and apollo-torch, if installed): optimizer-state bytes, opt.step time and held-out loss after
a fixed budget, same run.

    python benchmarks/bench_optim.py                      # CPU-small: a 12M-parameter Llama, bundled Shakespeare
    python benchmarks/bench_optim.py --device cuda --preset 350m --steps 500

Every optimizer trains its own copy of the same freshly seeded model on the same batches, all of them in lockstep
(each step runs every optimizer once, in alternating order), with the paper's schedule: linear warm-up over
``--warmup_share`` of the steps, then cosine decay to 10%. Each is run at every learning rate of ``--lr_grid``
and compared at its best held-out loss. Rows, against AdamW at its best:

- ``opt.step`` time per step (median and IQR over steps); APOLLO does AdamW's work on a rank-r projection plus
  the projection itself (a matmul as large as the gradient at rank 256), so its limit is apollo-torch's time
  on the same steps (rows "÷ apollo-torch's");
- optimizer-state bytes, beside the analytic value (2·r·max(m, n) floats per projected matrix, Adam's 2·numel
  for the rest);
- held-out loss.

The CC-BY-NC apollo-torch package (extra ``apollo-torch``) is compared for both variants at the same rank,
scale, projection gap and eps, when installed. Writes outputs/benchmarks/optim_<device>_<preset>.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
from types import SimpleNamespace

import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from harness import Report, add_record_flag, compare, result_path, single, spread, timed
from hfself.data import DEFAULT_MODEL, corpus_text
from hfself_plugins.optim import VARIANTS, build_optimizer, classify_parameters

PRESETS = {
    "small": dict(hidden_size=384, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=6,
                  num_key_value_heads=6, vocab_size=4096, tie_word_embeddings=True),
    "350m": dict(hidden_size=1024, intermediate_size=2736, num_hidden_layers=24, num_attention_heads=16,
                 num_key_value_heads=16, vocab_size=4096, tie_word_embeddings=True),
}
OPTIMIZERS = ["adamw", "apollo_adamw", "apollo_mini", "apollo_adamw_cached"]
REFERENCE = {"apollo_torch_channel": "apollo_adamw", "apollo_torch_mini": "apollo_mini"}


def batches(args, device):
    tok = AutoTokenizer.from_pretrained(DEFAULT_MODEL)
    ids = torch.tensor(tok(corpus_text("shakespeare"))["input_ids"])
    split = int(0.9 * len(ids))
    g = torch.Generator().manual_seed(args.seed)

    def windows(data, n):
        starts = torch.randint(0, len(data) - args.seq_len - 1, (n, args.batch_size), generator=g)
        return [torch.stack([data[s:s + args.seq_len] for s in row]).to(device) for row in starts]

    return windows(ids[:split], args.steps), windows(ids[split:], args.eval_batches)


def state_bytes(optimizer) -> int:
    return sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
               if torch.is_tensor(v))


def analytic_state_bytes(model, name: str) -> int:
    """What the state must hold: Adam moments (float32) of each projected matrix's (r, max(m, n)) projection, of
    every other parameter in full; plus the cached projection (r, min(m, n)) when kept."""
    variant = VARIANTS.get(name.removesuffix("_cached"))
    groups = classify_parameters(model)
    total = 0
    for group, params in groups.items():
        for _, p in params:
            if variant is not None and group == "apollo":
                rank = min(variant["rank"], *p.shape)
                total += 2 * rank * max(p.shape) + (rank * min(p.shape) if name.endswith("_cached") else 0)
            else:
                total += 2 * p.numel()
    return 4 * total


def schedule(optimizer, steps: int, warmup_share: float):
    """The paper's schedule: linear warm-up, then cosine decay to 10% of the peak."""
    warmup = max(1, round(steps * warmup_share))

    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_optimizer(name: str, model, lr: float, eps: float):
    if name in REFERENCE:
        return apollo_torch_optimizer(model, VARIANTS[REFERENCE[name]], lr, eps)
    hp = SimpleNamespace(learning_rate=lr, weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=eps)
    return build_optimizer(name.removesuffix("_cached"), model, hp,
                           {"apollo_cache_projection": name.endswith("_cached")})


def apollo_torch_optimizer(model, variant: dict, lr: float, eps: float):
    from apollo_torch import APOLLOAdamW  # CC-BY-NC: comparison only, never a dependency

    groups = classify_parameters(model)
    return APOLLOAdamW([{"params": [p for _, p in groups["apollo"]], "rank": variant["rank"], "proj": "random",
                         "scale_type": variant["scale_type"], "scale": variant["scale"], "update_proj_gap": 200,
                         "proj_type": "std"},
                        {"params": [p for k in ("decay", "no_decay") for _, p in groups[k]]}], lr=lr, eps=eps)


class Run:
    """One optimizer at one learning rate on its own copy of the model."""

    def __init__(self, name, lr, args, device):
        torch.manual_seed(args.seed)
        self.name, self.lr, self.device = name, lr, device
        self.model = LlamaForCausalLM(LlamaConfig(**PRESETS[args.preset], max_position_embeddings=args.seq_len))
        self.model.to(device).train()
        self.optimizer = make_optimizer(name, self.model, lr, args.eps)
        self.scheduler = schedule(self.optimizer, args.steps, args.warmup_share)
        self.step_s: list[float] = []

    def step(self, batch) -> None:
        self.model(input_ids=batch, labels=batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.step_s.append(timed(self.optimizer.step, self.device))
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    @torch.no_grad()
    def held_out_loss(self, held_out) -> float:
        self.model.eval()
        return statistics.mean(self.model(input_ids=b, labels=b).loss.item() for b in held_out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_record_flag(parser)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--skip", type=int, default=5, help="first steps left out of the timing")
    parser.add_argument("--warmup_share", type=float, default=0.1)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--seq_len", type=int, default=64)
    parser.add_argument("--eval_batches", type=int, default=8)
    parser.add_argument("--eps", type=float, default=1e-8, help="Adam eps of every optimizer, apollo-torch's too")
    parser.add_argument("--lr_grid", default="1e-3,3e-3",
                        help="learning rates tried for every optimizer; each is compared at its best")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    train, held_out = batches(args, device)
    grid = [float(x) for x in args.lr_grid.split(",")]
    names = list(OPTIMIZERS)
    if importlib.util.find_spec("apollo_torch") is not None:
        names += list(REFERENCE)
    else:
        print("apollo-torch is not installed (optional extra 'apollo-torch', CC-BY-NC): not compared")

    runs = [Run(name, lr, args, device) for name in names for lr in grid]
    for index, batch in enumerate(tqdm(train, desc=f"{len(runs)} optimizer runs in lockstep")):
        for run in runs if index % 2 == 0 else runs[::-1]:
            run.step(batch)
    losses = {(run.name, run.lr): run.held_out_loss(held_out) for run in tqdm(runs, desc="held-out loss")}
    best = {name: min((r for r in runs if r.name == name), key=lambda r: losses[(r.name, r.lr)]) for name in names}

    report = Report("optim", vars(args), args.seed, str(device),
                    extra={"parameters": sum(p.numel() for p in runs[0].model.parameters()),
                           "held_out_loss": {f"{n} lr={lr}": v for (n, lr), v in losses.items()},
                           "best_lr": {n: r.lr for n, r in best.items()}})
    adamw = best["adamw"]
    for name in names[1:]:
        run = best[name]
        steps = slice(args.skip, None)
        report.add(compare(f"{name} opt.step time ÷ AdamW's", adamw.step_s[steps], run.step_s[steps], unit="s",
                           higher_is_better=False,
                           notes=f"median step {spread(run.step_s[steps])['median'] * 1e3:.1f} ms vs "
                                 f"{spread(adamw.step_s[steps])['median'] * 1e3:.1f} ms"))
        if name not in REFERENCE:
            measured = state_bytes(run.optimizer) / state_bytes(adamw.optimizer)
            analytic = analytic_state_bytes(run.model, name) / analytic_state_bytes(adamw.model, "adamw")
            report.add(single(f"{name} state bytes ÷ AdamW's", measured, limit=analytic,
                              limit_note="analytic: moments of the projection"))
        report.add(single(f"{name} held-out loss ÷ AdamW's", losses[(name, run.lr)] / losses[("adamw", adamw.lr)],
                          limit=1.0, notes=f"lr {run.lr:g} vs {adamw.lr:g}"))
    steps = slice(args.skip, None)
    for reference, ours in (("apollo_torch_channel", "apollo_adamw"), ("apollo_torch_channel", "apollo_adamw_cached"),
                            ("apollo_torch_mini", "apollo_mini")):
        if reference in best:  # same rank, scale, gap and eps; the reference keeps its projection in memory
            report.add(compare(f"{ours} opt.step time ÷ apollo-torch's", best[reference].step_s[steps],
                               best[ours].step_s[steps], unit="s", limit=1.0, higher_is_better=False,
                               limit_note="the reference implementation"))
    return report.write(result_path(args, f"optim_{device.type}_{args.preset}.json", args.out))


if __name__ == "__main__":
    main()
