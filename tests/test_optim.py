"""The optim plugin: APOLLO against its definition, the group policy, Trainer resume and 2-process DDP."""

import math
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset
from ddp import run_two_ranks
from tiny_models import sample_ids, tiny_model
from transformers import Trainer, TrainingArguments, default_data_collator

from hfself import IdentityConfig, IdentityForCausalLM
from hfself_plugins.optim import Apollo, build_optimizer, classify_parameters

ARGS = SimpleNamespace(learning_rate=3e-3, weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8)
OPTIMIZERS = ["adamw", "apollo_adamw", "apollo_mini"]


def _train(model, optimizer, steps=30, seed=0):
    ids = sample_ids(batch=4, length=16, seed=seed)
    losses = []
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def _state_bytes(optimizer):
    return sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_loss_decreases(name):
    model = tiny_model("llama").train()
    losses = _train(model, build_optimizer(name, model, ARGS))
    assert losses[-1] < 0.5 * losses[0], losses


def test_state_size_apollo_vs_adamw():
    sizes, optimizers = {}, {}
    for name in OPTIMIZERS:
        model = tiny_model("llama").train()
        rank = {"apollo_rank": 8} if name == "apollo_adamw" else {}  # apollo_mini keeps its rank 1
        optimizers[name] = build_optimizer(name, model, ARGS, {"apollo_modules": "all_2d", **rank})
        _train(model, optimizers[name], steps=1)
        sizes[name] = _state_bytes(optimizers[name])
    assert sizes["apollo_mini"] < sizes["apollo_adamw"] < sizes["adamw"]
    assert sizes["apollo_mini"] <= sizes["adamw"] / 8
    for group in optimizers["apollo_mini"].param_groups:
        for p in group["params"]:
            if group["name"] == "apollo":  # rank-1 moments: (1, n) or (m, 1)
                assert min(optimizers["apollo_mini"].state[p]["exp_avg"].shape) == 1


def test_first_step_matches_the_algorithm():
    """Tensor-wise scaling by hand: first Adam step normalizes R = P G to ~sign(R), so s = ||sign R|| / ||R||."""
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(6, 10))
    weight.grad = torch.randn(6, 10)
    start, grad = weight.detach().clone(), weight.grad.clone()
    opt = Apollo([{"params": [weight], "rank": 2, "scale_type": "tensor", "scale": 4.0}], lr=0.1, eps=0.0,
                 norm_growth_limit=0)
    opt.step()
    proj = Apollo.projection(grad.shape, 2, opt.state[weight]["proj_seed"], grad.device)
    projected = proj @ grad  # (2, 10): m <= n, rows projected
    s = projected.sign().norm() / projected.norm()
    expected = start - 0.1 * math.sqrt(4.0) * s * grad
    torch.testing.assert_close(weight.detach(), expected, rtol=1e-5, atol=1e-6)


def test_channel_scaling_per_column_and_norm_growth_limit():
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(4, 12))
    opt = Apollo([{"params": [weight], "rank": 4, "scale_type": "channel"}], lr=0.1, eps=0.0, norm_growth_limit=1.01)
    weight.grad = torch.randn(4, 12)
    grad = weight.grad.clone()
    start = weight.detach().clone()
    opt.step()
    proj = Apollo.projection(grad.shape, 4, opt.state[weight]["proj_seed"], grad.device)
    projected = proj @ grad
    s = projected.sign().norm(dim=0) / projected.norm(dim=0)  # one factor per column
    torch.testing.assert_close(weight.detach(), start - 0.1 * grad * s, rtol=1e-5, atol=1e-6)
    first_norm = opt.state[weight]["update_norm"].item()
    weight.grad = 100 * torch.randn(4, 12)
    opt.step()
    assert opt.state[weight]["update_norm"].item() <= 1.01 * first_norm + 1e-6


def test_projection_reseeds_on_schedule_and_is_reproducible():
    def seeds(gap, steps):
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(5, 7))
        opt = Apollo([{"params": [w], "rank": 2}], update_proj_gap=gap)
        out = []
        for _ in range(steps):
            w.grad = torch.randn(5, 7)
            opt.step()
            out.append(opt.state[w]["proj_seed"])
        return out, w.detach()

    (a, wa), (b, wb) = seeds(2, 5), seeds(2, 5)
    assert a == b and torch.equal(wa, wb)
    assert a[0] == a[1] != a[2] == a[3] != a[4]


def test_a_cached_projection_changes_memory_not_the_result():
    """cache_projection keeps the drawn projection between refreshes: the same updates as redrawing it from its
    seed each step, for r·min(m, n) more floats of state."""
    def train(cached):
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(5, 7))
        opt = Apollo([{"params": [w], "rank": 3, "cache_projection": cached}], update_proj_gap=2)
        for step in range(5):
            w.grad = torch.randn(5, 7, generator=torch.Generator().manual_seed(step))
            opt.step()
        return w.detach(), opt.state[w]

    (plain, seed_only), (cached, with_projection) = train(False), train(True)
    assert torch.equal(plain, cached)
    assert "proj" not in seed_only and with_projection["proj"].shape == (3, 5)

    def resumed(steps_cached):  # a run that kept its projection, resumed without keeping it (across a refresh)
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(5, 7))
        opt = Apollo([{"params": [w], "rank": 3, "cache_projection": True}], update_proj_gap=2)
        for step in range(5):
            if step == steps_cached:
                state = opt.state_dict()
                opt = Apollo([{"params": [w], "rank": 3}], update_proj_gap=2)
                opt.load_state_dict(state)
                opt.param_groups[0]["cache_projection"] = False  # load_state_dict restored the saved group's True
            w.grad = torch.randn(5, 7, generator=torch.Generator().manual_seed(step))
            opt.step()
        return w.detach()

    assert torch.equal(resumed(1), plain) and torch.equal(resumed(3), plain)


def test_group_policy_plain_identity_and_peft():
    model = tiny_model("llama")
    groups = {k: [n for n, _ in v] for k, v in classify_parameters(model).items()}
    assert all(n.endswith("_proj.weight") for n in groups["apollo"]) and len(groups["apollo"]) == 2 * 7
    assert groups["decay"] == ["model.embed_tokens.weight", "lm_head.weight"] or "embed_tokens" in groups["decay"][0]
    assert all("norm" in n for n in groups["no_decay"]) and not groups["identity"]
    assert classify_parameters(model, "all_2d")["decay"] == []

    persona = IdentityForCausalLM.from_base(tiny_model("llama"), IdentityConfig(identity_dim=8))
    opt = build_optimizer("apollo_mini", persona, ARGS, {"identity_learning_rate": 1e-2})
    named = {g["name"]: g for g in opt.param_groups}
    assert named["identity"]["lr"] == 1e-2 and named["identity"]["weight_decay"] == 0.0
    assert "rank" not in named["identity"] or named["identity"]["rank"] is None
    assert opt.hfself_groups["identity"]["tensors"] == len(list(persona.identity_block.parameters()))

    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(tiny_model("llama"), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    groups = classify_parameters(lora)
    assert {k: len(v) for k, v in groups.items()} == {"apollo": 8, "decay": 0, "no_decay": 0, "identity": 0}
    _train(lora, build_optimizer("apollo_mini", lora, ARGS), steps=2)


def test_unknown_optimizer_and_bad_groups():
    with pytest.raises(ValueError, match="apollo_mini"):
        build_optimizer("apolo_mini", tiny_model("llama"), ARGS)
    with pytest.raises(ValueError, match="apollo_modules"):
        classify_parameters(tiny_model("llama"), "everything")


def test_plain_trainer_with_optimizer_cls_and_kwargs(tmp_path):
    """``Trainer(optimizer_cls_and_kwargs=(Apollo, {...}))`` as transformers users pick an optimizer: Trainer's two
    groups hold every parameter; matrices are projected (seed-only state), the rest step exactly like AdamW."""
    model = tiny_model("llama").train()
    ids = sample_ids(batch=8, length=16, seed=3)
    data = Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})
    args = TrainingArguments(str(tmp_path), max_steps=3, per_device_train_batch_size=4, report_to=[], use_cpu=True,
                             save_strategy="no", learning_rate=1e-3, weight_decay=0.01)
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=default_data_collator,
                      optimizer_cls_and_kwargs=(Apollo, {"lr": 1e-3, "rank": 4, "scale_type": "channel"}))
    trainer.train()
    optimizer = trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer
    assert isinstance(optimizer, Apollo)
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state[param]
            assert ("proj_seed" in state) == (param.dim() == 2)
            if param.dim() == 2:  # Adam moments of the (r, n) or (m, r) projection only
                assert state["exp_avg"].numel() <= 4 * max(param.shape)

    torch.manual_seed(0)
    vector = torch.nn.Parameter(torch.randn(6))
    twin = torch.nn.Parameter(vector.detach().clone())
    ours = Apollo([{"params": [vector], "rank": 2}], lr=1e-2, weight_decay=0.1)
    reference = torch.optim.AdamW([twin], lr=1e-2, weight_decay=0.1, foreach=False)
    for step in range(3):
        grad = torch.randn(6, generator=torch.Generator().manual_seed(step))
        vector.grad, twin.grad = grad.clone(), grad.clone()
        ours.step()
        reference.step()
    torch.testing.assert_close(vector, twin, rtol=1e-6, atol=1e-7)


def test_recipes_take_one_optimizer_route():
    from hfself.args import ConfigError
    from hfself.train import build_optimizer as recipe_optimizer

    model = tiny_model("llama")
    both = SimpleNamespace(**vars(ARGS), optim="adafactor")
    with pytest.raises(ConfigError, match="either"):
        recipe_optimizer(model, both, {"optimizer": "apollo_mini"})
    apollo_torch = SimpleNamespace(**vars(ARGS), optim="apollo_adamw")
    with pytest.raises(ConfigError, match="optimizer: apollo_adamw"):
        recipe_optimizer(model, apollo_torch, {})
    assert recipe_optimizer(model, SimpleNamespace(**vars(ARGS), optim="adamw_torch_fused"), {}) is None


def _trainer(out, name, resume=None):
    model = tiny_model("llama").train()
    ids = sample_ids(batch=16, length=16, seed=3)
    data = Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})
    args = TrainingArguments(output_dir=str(out), max_steps=6, per_device_train_batch_size=4, save_steps=3,
                             logging_steps=1, learning_rate=3e-3, report_to="none", seed=0, use_cpu=True,
                             gradient_accumulation_steps=2, lr_scheduler_type="constant")
    opt = build_optimizer(name, model, args, {"apollo_update_proj_gap": 2, "apollo_rank": 4})
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=default_data_collator,
                      optimizers=(opt, None))
    trainer.train(resume_from_checkpoint=resume)
    return trainer


@pytest.mark.slow
@pytest.mark.parametrize("name", ["apollo_adamw", "apollo_mini"])
def test_resume_continues_the_same_loss_curve(tmp_path, name):
    full = _trainer(tmp_path / "full", name)
    resumed = _trainer(tmp_path / "resumed", name, resume=str(tmp_path / "full" / "checkpoint-3"))
    losses = lambda t: {e["step"]: e["loss"] for e in t.state.log_history if "loss" in e}
    assert {4, 5, 6} <= set(losses(resumed))  # steps 1-3 come from the checkpoint's history
    for step in (4, 5, 6):
        assert losses(resumed)[step] == pytest.approx(losses(full)[step], rel=1e-5)
    for (n, a), b in zip(full.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=n)
    seeds = lambda t: [s["proj_seed"] for s in t.optimizer.state.values() if "proj_seed" in s]
    assert seeds(full) == seeds(resumed)


@pytest.mark.slow
def test_ddp_two_ranks_identical_with_apollo_q_only_and_dreams(tmp_path):
    """The attention recipe under `accelerate launch` with 2 CPU processes: APOLLO + q_only + dream loop."""
    argv = ["--max_steps", "4", "--pretrain_steps", "2", "--dream_interval", "2", "--dream_num", "4",
            "--dream_max_new_tokens", "8", "--dream_min_tokens", "1", "--dream_replay_ratio", "0.5",
            "--listening_examples", "64", "--probe_examples", "2", "--per_device_train_batch_size", "4",
            "--max_train_samples", "32", "--max_length", "64", "--save_steps", "100", "--output_dir", str(tmp_path)]
    run_two_ranks("ddp_attention_run.py", argv, tmp_path)
    assert len((tmp_path / "dreams.jsonl").read_text().splitlines()) == 2  # main process only
    assert (tmp_path / "probe" / "probe.json").exists()
