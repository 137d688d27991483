"""Is an identity a good way to give a real model a persona? Six methods side by side on SmolLM2-135M-Instruct.

    python benchmarks/bench_persona.py                    # cpu-real: about 35 minutes on a 2-core CPU
    python benchmarks/run_all.py --preset cpu-real --record

On the bundled persona ``hfself:wren`` (the main job's data), with the same steps, batch and seed for every trained
method, each at a learning rate that suits it:

* ``identity``: the main job (identity block only, base frozen);
* ``lora``: peft LoRA r=8 on q_proj/v_proj, no identity;
* ``lora+identity``: both;
* ``full``: every weight of the base;
* ``system prompt``: no training, the persona card as the system prompt;
* ``steering``: no training, a difference-of-means activation addition (the mean residual at a middle layer with
  the persona's system prompt minus without it, over the training questions) added at every position, its scale
  chosen on training questions (never the held-out ones).

Each is scored by hfself's evals: held-out adherence (the persona card's marker rule), degenerate answers,
capability (the bundled multiple-choice task) as a share of the base's, perplexity on held-out everyday prose ÷ the
base's, trainable parameters, train seconds, and adherence with the identity turned off for the identity methods.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from harness import Report, add_record_flag, result_path, single  # noqa: E402

from hfself import IdentityConfig, IdentityForCausalLM  # noqa: E402
from hfself.named_models import SMOLLM2_ID  # noqa: E402
from hfself.train import load_causal_lm, sft_dataset, training_dataset  # noqa: E402
from hfself.training_data import persona_card, questions  # noqa: E402
from hfself_plugins.evals import EvalArguments  # noqa: E402
from hfself_plugins.evals import analysis  # noqa: E402

PERSONA = "hfself:wren"
LEARNING_RATES = {"identity": 2e-3, "lora": 1e-3, "lora+identity": 2e-3, "full": 2e-5}  # each what suits it
STEERING_SCALES = (2.0, 4.0, 8.0, 16.0)


def trained(method: str, args) -> tuple[torch.nn.Module, object, int, float]:
    """(model, tokenizer, trainable parameters, train seconds) of a trained method."""
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    from hfself.args import RunArguments

    set_seed(args.seed)
    model, tokenizer = load_causal_lm(args.model)
    if method != "full":
        model.requires_grad_(False)
    if "lora" in method:
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    if "identity" in method:
        model = IdentityForCausalLM.from_base(model, IdentityConfig(identity_dim=64, identity_hidden_dim=256))
    run = RunArguments(model_name_or_path=args.model, dataset_name=PERSONA)
    data = sft_dataset(training_dataset(run, args.seed), tokenizer, 256)
    sft = SFTConfig(output_dir=str(Path(args.work_dir) / method.replace("+", "_")), max_steps=args.steps,
                    per_device_train_batch_size=args.batch_size, learning_rate=LEARNING_RATES[method],
                    lr_scheduler_type="cosine", warmup_steps=max(1, args.steps // 10), logging_steps=10,
                    save_strategy="no", report_to="none", seed=args.seed, max_length=256, bf16=False,
                    activation_checkpointing=False, dataloader_pin_memory=False, disable_tqdm=True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    started = time.perf_counter()
    SFTTrainer(model=model, args=sft, train_dataset=data, processing_class=tokenizer).train()
    return model.eval(), tokenizer, trainable, time.perf_counter() - started


@contextmanager
def steered(model, layer: int, vector: torch.Tensor, scale: float):
    """Add ``scale * vector`` to the residual stream after decoder layer ``layer``, at every position."""
    def hook(module, inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden + scale * vector.to(hidden.dtype)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = model.model.layers[layer].register_forward_hook(hook)
    try:
        yield model
    finally:
        handle.remove()


@torch.no_grad()
def steering_vector(model, tokenizer, layer: int, system_prompt: str, asked: list[str]) -> torch.Tensor:
    """Mean residual after ``layer`` at the last prompt token, with the persona's system prompt minus without."""
    from hfself.text import encode_prompt

    def mean_state(system):
        states = []
        for question in asked:
            ids = torch.tensor([encode_prompt(tokenizer, question, system_prompt=system)])
            hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1]  # (1, T, d)
            states.append(hidden[0, -1])
        return torch.stack(states).mean(0)

    return mean_state(system_prompt) - mean_state(None)


def steering(base, tokenizer, card: dict, eval_args, args) -> dict:
    """The steering-vector method: its vector from 16 training questions, its scale the one of
    :data:`STEERING_SCALES` with the most adherence and no degenerate answer on 8 of them."""
    from hfself.args import RunArguments
    from hfself.text import answer_questions

    train = training_dataset(RunArguments(model_name_or_path=args.model, dataset_name=PERSONA), args.seed)
    calibration = [example[0]["content"] for example in train.select(range(16))["messages"]]
    layer = base.config.num_hidden_layers // 2
    vector = steering_vector(base, tokenizer, layer, card["system_prompt"], calibration)
    best, best_key = STEERING_SCALES[0], (-1.0, 0.0)
    for scale in STEERING_SCALES:
        with steered(base, layer, vector, scale):
            answers = answer_questions(base, tokenizer, calibration[:8], 24)
        hits = sum(analysis.carries_persona(a, card["markers"]) for a in answers) / len(answers)
        clean = not any(map(analysis.is_degenerate, answers))
        key = (hits if clean else -1.0, -scale)  # ties: the gentler scale
        if key > best_key:
            best, best_key = scale, key
    with steered(base, layer, vector, best):
        return {**score(base, tokenizer, eval_args), "scale": best, "layer": layer}


def score(model, tokenizer, eval_args, system_prompt: str | None = None) -> dict:
    """Adherence, degenerate share, capability accuracy and perplexity of one method."""
    from hfself.text import answer_questions

    asked = questions(PERSONA)
    markers = persona_card(PERSONA)["markers"]
    answers = answer_questions(model, tokenizer, asked, eval_args.answer_max_new_tokens, system_prompt=system_prompt)
    texts = analysis.heldout_texts(eval_args)
    nll, counts = analysis.summed_nll(model, tokenizer, texts, eval_args.max_length)
    return {"adherence": sum(analysis.carries_persona(a, markers) for a in answers) / len(answers),
            "degenerate": sum(map(analysis.is_degenerate, answers)) / len(answers),
            "capability": analysis.measure_capability(model, tokenizer, eval_args)["accuracy"],
            "nll": sum(nll) / sum(counts), "answers": dict(zip(asked, answers))}


def markdown(methods: dict) -> str:
    base = methods["base"]
    lines = ["| method | trainable params | train s | held-out adherence | degenerate | capability ÷ base | "
             "perplexity ÷ base | adherence, identity off |", "|---|---|---|---|---|---|---|---|"]
    for name, m in methods.items():
        retention = m["capability"] / base["capability"] if base["capability"] else float("nan")
        ppl = float(torch.tensor(m["nll"] - base["nll"]).exp())
        off = f"{m['adherence_identity_off']:.2f}" if "adherence_identity_off" in m else "–"
        lines.append(f"| {name} | {m.get('trainable', 0):,} | {m.get('train_seconds', 0):.0f} | {m['adherence']:.2f} | "
                     f"{m['degenerate']:.2f} | {retention:.3f} | {ppl:.3f} | {off} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_record_flag(parser)
    parser.add_argument("--model", default=SMOLLM2_ID)
    parser.add_argument("--steps", type=int, default=60, help="training steps of every trained method (the main job's)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--methods", nargs="+",
                        default=["system prompt", "steering", "identity", "lora", "lora+identity", "full"])
    parser.add_argument("--capability_task", default=None, help="multiple-choice JSONL (default: the bundled one)")
    parser.add_argument("--work_dir", default="outputs/bench_persona")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    eval_args = EvalArguments(persona_data=PERSONA, heldout_corpus="everyday", max_length=256, heldout_texts=16,
                              answer_max_new_tokens=40, capability_task=args.capability_task)
    card = persona_card(PERSONA)
    report = Report("persona", vars(args), args.seed, "cpu")
    base, tokenizer = load_causal_lm(args.model)
    base.eval()
    methods = {"base": score(base, tokenizer, eval_args)}
    for method in args.methods:
        print(f"method: {method}", flush=True)
        if method == "system prompt":
            methods[method] = score(base, tokenizer, eval_args, system_prompt=card["system_prompt"])
        elif method == "steering":
            methods[method] = steering(base, tokenizer, card, eval_args, args)
        else:
            model, tok, trainable, seconds = trained(method, args)
            methods[method] = {**score(model, tok, eval_args), "trainable": trainable, "train_seconds": seconds}
            if "identity" in method:
                with model.identity_disabled() as bare:
                    methods[method]["adherence_identity_off"] = score(bare, tok, eval_args)["adherence"]
            del model
        m = methods[method]
        print(f"  adherence {m['adherence']:.2f}, degenerate {m['degenerate']:.2f}, capability {m['capability']:.3f}"
              f" (base {methods['base']['capability']:.3f})", flush=True)
    for name, m in methods.items():
        if name == "base":
            continue
        report.add(single(f"{name}: held-out adherence (base {methods['base']['adherence']:.2f})", m["adherence"],
                          limit=1.0, limit_note="every held-out answer carries the persona"))
        report.add(single(f"{name}: capability ÷ base", m["capability"] / methods["base"]["capability"], limit=1.0,
                          limit_note="no capability lost"))
    report.extra = {"methods": methods, "markdown": markdown(methods)}
    print(report.extra["markdown"])
    report.write(result_path(args, "persona", args.out))


if __name__ == "__main__":
    main()
