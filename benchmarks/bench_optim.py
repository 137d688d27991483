"""APOLLO vs AdamW: optimizer-state bytes, step time and final loss after a fixed budget, same run.

    python benchmarks/bench_optim.py                      # CPU-small (27M-parameter Llama, bundled Shakespeare)
    python benchmarks/bench_optim.py --device cuda --preset 350m --steps 500

Every optimizer trains the same freshly seeded model on the same batches;
the final loss is measured on held-out windows. Each optimizer runs at every
learning rate of ``--lr_grid`` and is compared at its best. Prints JSON and writes
outputs/benchmarks/optim_<device>_<preset>.json with ratios against AdamW
(state and time: lower is better; loss: ~1 means as good). Targets from the
issue: apollo_mini state <= 1/8 of AdamW's, loss within 2%. The state is
reported under both group policies ("linear": the paper's, embeddings stay
on AdamW; "all_2d": embeddings projected too). If the CC-BY-NC apollo-torch
package is installed (extra ``apollo-torch``), it is timed too, for
comparison only.

With ``--record`` the JSON goes to the tracked benchmarks/results/ instead.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from types import SimpleNamespace

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from hfself.data import DEFAULT_MODEL, corpus_text
from hfself_plugins.optim import build_optimizer
from results_path import add_record_flag, result_path

PRESETS = {
    "small": dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8,
                  num_key_value_heads=8, vocab_size=4096, tie_word_embeddings=True),
    "350m": dict(hidden_size=1024, intermediate_size=2736, num_hidden_layers=24, num_attention_heads=16,
                 num_key_value_heads=16, vocab_size=4096, tie_word_embeddings=True),
}
OPTIMIZERS = ["adamw", "apollo_adamw", "apollo_mini"]


def batches(args, device):
    tok = AutoTokenizer.from_pretrained(DEFAULT_MODEL)
    ids = torch.tensor(tok(corpus_text("shakespeare"))["input_ids"])
    split = int(0.9 * len(ids))
    g = torch.Generator().manual_seed(0)

    def windows(data, n):
        starts = torch.randint(0, len(data) - args.seq_len - 1, (n, args.batch_size), generator=g)
        return [torch.stack([data[s:s + args.seq_len] for s in row]).to(device) for row in starts]

    return windows(ids[:split], args.steps), windows(ids[split:], args.eval_batches)


def state_bytes(optimizer) -> int:
    return sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
               if torch.is_tensor(v))


def run(name, args, device, train, held_out, run_config, lr):
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**PRESETS[args.preset], max_position_embeddings=args.seq_len)).to(device)
    model.train()
    hp = SimpleNamespace(learning_rate=lr, weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999,
                         adam_epsilon=1e-8)
    if name == "apollo_torch":
        optimizer = apollo_torch_optimizer(model, lr)
    else:
        optimizer = build_optimizer(name, model, hp, run_config)
    times, losses = [], []
    for step, batch in enumerate(train):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        held = statistics.mean(model(input_ids=b, labels=b).loss.item() for b in held_out)
    return {"state_bytes": state_bytes(optimizer), "step_s_median": statistics.median(times[args.warmup:]),
            "train_loss_last10": statistics.mean(losses[-10:]), "held_out_loss": held,
            "groups": getattr(optimizer, "hfself_groups", None)}


def apollo_torch_optimizer(model, lr):
    from apollo_torch import APOLLOAdamW  # CC-BY-NC: comparison only

    from hfself_plugins.optim import classify_parameters

    groups = classify_parameters(model)
    return APOLLOAdamW([{"params": [p for _, p in groups["apollo"]], "rank": 1, "proj": "random",
                         "scale_type": "tensor", "scale": 128, "update_proj_gap": 200, "proj_type": "std"},
                        {"params": [p for k in ("decay", "no_decay") for _, p in groups[k]]}], lr=lr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_record_flag(parser)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the timing")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--eval_batches", type=int, default=8)
    parser.add_argument("--lr_grid", default="1e-3,3e-3",
                        help="learning rates tried for every optimizer; each is compared at its best")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    train, held_out = batches(args, device)

    grid = [float(x) for x in args.lr_grid.split(",")]
    sweep, results = {}, {}
    for name in OPTIMIZERS + ["apollo_torch"]:
        for lr in grid:
            try:
                r = run(name, args, device, train, held_out, {}, lr)
            except ImportError:
                results["apollo_torch"] = "not installed (optional extra 'apollo-torch', CC-BY-NC)"
                break
            sweep.setdefault(name, {})[lr] = r
            print(name, lr, json.dumps({k: v for k, v in r.items() if k != "groups"}), flush=True)
        if name in sweep:
            best = min(sweep[name], key=lambda lr: sweep[name][lr]["held_out_loss"])
            results[name] = {**sweep[name][best], "lr": best}
    # state under the all_2d policy (embeddings projected too): a few steps are enough to allocate it
    few = argparse.Namespace(**{**vars(args), "steps": args.warmup + 1})
    all_2d = {name: run(name, few, device, train[:few.steps], held_out[:1], {"apollo_modules": "all_2d"},
                        grid[0])["state_bytes"] for name in OPTIMIZERS}

    base = results["adamw"]
    ratios = {name: {"state_bytes": r["state_bytes"] / base["state_bytes"],
                     "step_time": r["step_s_median"] / base["step_s_median"],
                     "held_out_loss": r["held_out_loss"] / base["held_out_loss"]}
              for name, r in results.items() if isinstance(r, dict)}
    for name in OPTIMIZERS:
        ratios[name]["state_bytes_all_2d"] = all_2d[name] / all_2d["adamw"]
    report = {
        "benchmark": "optim", "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor()
        or platform.machine(), "preset": args.preset, "parameters": sum(p.numel() for p in LlamaForCausalLM(
            LlamaConfig(**PRESETS[args.preset])).parameters()),
        "settings": {k: v for k, v in vars(args).items() if k != "out"}, "results": results,
        "lr_sweep": {name: {str(lr): {k: v for k, v in r.items() if k != "groups"} for lr, r in by_lr.items()}
                     for name, by_lr in sweep.items()},
        "ratios_vs_adamw": ratios,
        "targets": {"apollo_mini_state_le_1/8": ratios["apollo_mini"]["state_bytes"] <= 1 / 8,
                    "apollo_mini_loss_within_2pct": abs(ratios["apollo_mini"]["held_out_loss"] - 1) <= 0.02,
                    "apollo_adamw_loss_within_2pct": abs(ratios["apollo_adamw"]["held_out_loss"] - 1) <= 0.02},
        "torch": torch.__version__,
    }
    print(json.dumps({"ratios_vs_adamw": ratios, "targets": report["targets"]}, indent=2))
    out = result_path(args, f"optim_{device.type}_{args.preset}.json", args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
