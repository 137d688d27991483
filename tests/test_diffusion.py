"""The diffusion Identity Block: causal and cache-safe on many architectures, trainable end to end,
seeded, resumable, distributed-safe, distinct across rounds where the MLP block collapses, blendable."""

import json
import subprocess
import sys

import pytest
import torch
from ddp import run_two_ranks
from recipes_path import TINY_IDENTITY, add_recipes_to_path
from tiny_models import sample_ids, tiny_model, tokenizer

from hfself import IdentityConfig, IdentityForCausalLM
from hfself.args import ConfigError
from hfself_plugins.diffusion import DiffusionIdentityBlock
from hfself_plugins.diffusion.analysis import measure_introspection
from hfself_plugins.identity.analysis import blend_sweep
from hfself_plugins.identity.blend import blend_personas, slerp
from hfself_plugins.identity import IntrospectionArguments, PersonaMismatchError

add_recipes_to_path()
import identity_sft  # noqa: E402

ARCHS = ["llama", "gpt2", "qwen2", "gpt_neox"]
FAST = [*TINY_IDENTITY, "--max_steps", "8", "--identity_update_interval", "2", "--identity_max_new_tokens", "6",
        "--max_length", "64", "--per_device_train_batch_size", "4", "--max_train_samples", "64",
        "--logging_steps", "2", "--save_steps", "4", "--warmup_steps", "0", "--identity_block", "diffusion"]


def _persona(name="llama", torch_seed=3, **block_config):
    torch.manual_seed(torch_seed)
    config = IdentityConfig(identity_dim=16, init_std=0.5, block="diffusion", block_config=block_config)
    return IdentityForCausalLM.from_base(tiny_model(name), config)


@torch.no_grad()
def _logits(model, ids):
    return model(input_ids=ids).logits


@pytest.mark.parametrize("name", ARCHS)
def test_causal_cache_equivalent_and_folded(name):
    model = _persona(name)
    assert isinstance(model.identity_block, DiffusionIdentityBlock)
    ids = sample_ids()
    with model.identity_disabled():
        base = _logits(model, ids)
    on = _logits(model, ids)
    assert (on - base).abs().max() > 1e-4
    changed = ids.clone()
    changed[:, 7:] = (changed[:, 7:] + 17) % 4000 + 2
    assert torch.equal(_logits(model, changed)[:, :7], on[:, :7])  # positions <= 6 never see tokens > 6
    prompt = sample_ids(batch=1, length=5)
    kw = dict(max_new_tokens=10, do_sample=False, pad_token_id=1)
    assert torch.equal(model.generate(prompt, use_cache=True, **kw), model.generate(prompt, use_cache=False, **kw))
    with model.injector.folded():
        torch.testing.assert_close(_logits(model, ids), on, rtol=1e-5, atol=1e-5)


def test_lm_loss_reaches_the_denoiser():
    model = _persona()
    model.train()
    ids = sample_ids()
    block = model.identity_block
    optimizer = torch.optim.Adam(block.parameters(), lr=1e-2)
    for _ in range(2):  # the zero-initialized output layer opens the path to the rest after one step
        optimizer.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    grads = {n: p.grad.abs().sum().item() for n, p in block.denoiser.named_parameters()}
    assert grads["output_proj.weight"] > 0 and grads["layers.0.fc_in.weight"] > 0 and grads["input_proj.weight"] > 0
    assert len(block._observed) == 2 * ids.shape[0]  # each training batch's summaries wait for the next round


def _rounds(block, summaries):
    optimizer = torch.optim.Adam(block.parameters(), lr=1e-3)
    for s in summaries:
        block.introspection_round(s, optimizer)
    return block.identity.clone()


def test_fixed_seed_same_identities_and_fresh_noise_per_round():
    summaries = [torch.randn(64, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    a, b = _persona().identity_block, _persona().identity_block
    noise_before = a.noise.clone()
    first = a.latent().detach()
    assert torch.equal(_rounds(a, summaries), _rounds(b, summaries))
    assert int(a.rounds) == 3 and not torch.equal(a.noise, noise_before)
    torch.testing.assert_close(a.identity, a.latent().detach())
    assert not torch.equal(a.identity_ema, a.identity)  # the EMA lags the last identity
    other_seed = _persona(seed=1).identity_block  # same weights, another noise seed
    assert not torch.allclose(other_seed.latent().detach(), first)


def test_dpm_solver_sampler_and_steps():
    block = _persona(sampler="dpm_solver", sample_steps=6).identity_block
    assert type(block.sample_scheduler).__name__ == "DPMSolverMultistepScheduler"
    with torch.no_grad():
        assert torch.equal(block.latent(), block.latent())  # a multistep sampler is reset for every sample
        many = block.sample_identities(4)
    assert many.shape == (4, 16) and torch.isfinite(many).all()


def test_diffusion_keeps_distinct_identities_where_mlp_collapses():
    tok = tokenizer()
    args = IntrospectionArguments(identity_update_interval=1, identity_max_new_tokens=8, identity_lr=2e-4)
    results = {}
    for block in ("mlp", "diffusion"):
        torch.manual_seed(0)
        persona = IdentityForCausalLM.from_base(tiny_model("llama"), IdentityConfig(identity_dim=16, block=block))
        before = {k: v.clone() for k, v in persona.identity_block.state_dict().items()}
        results[block] = measure_introspection(persona, tok, rounds=5, perturbations=1, args=args)
        after = persona.identity_block.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)  # measuring leaves the persona as it was
    mlp, diffusion = (results[b]["diversity"]["identity_diversity"] for b in ("mlp", "diffusion"))
    assert mlp < 0.01, mlp  # one point nudged by small steps: the rounds collapse onto one identity
    assert diffusion > 0.3, diffusion  # fresh noise every round: distinct identities
    assert results["diffusion"]["diversity"]["min_pairwise_distance"] > 0.05
    for r in results.values():
        assert r["cost"]["seconds_per_round"] > 0 and len(r["stability"]["prompts"]) == 3
        assert r["stability"]["mean_distance_to_clean"] >= 0


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_save_load_round_trip(name, tmp_path):
    model = _persona(name)
    _rounds(model.identity_block, [torch.randn(64)])
    ids = sample_ids()
    expected = _logits(model, ids)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["block"] == "diffusion"
    reloaded = IdentityForCausalLM.from_pretrained(tmp_path, base_model=tiny_model(name))
    assert torch.equal(_logits(reloaded, ids), expected)
    for key, value in model.identity_block.state_dict().items():
        assert torch.equal(reloaded.identity_block.state_dict()[key], value), key


def test_unknown_block_option_is_clear():
    with pytest.raises(ConfigError, match="did you mean 'sample_steps'"):
        _persona(sample_step=3)
    with pytest.raises(ValueError, match="unknown sampler"):
        _persona(sampler="euler")


@pytest.mark.slow
def test_recipe_trains_and_resumes_the_diffusion_state(tmp_path):
    """Rounds at steps 3 and 6, checkpoint at 4: the summaries observed at step 4 (inputs of the next round) are in
    the checkpoint, so the resumed run ends bit-identical."""
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    between = ["--identity_update_interval", "3"]
    a = identity_sft.main([*FAST, *between, "--output_dir", str(full)])
    b = identity_sft.main([*FAST, *between, "--output_dir", str(resumed), "--resume_from_checkpoint",
                           str(full / "checkpoint-4")])
    block_a, block_b = a.model.identity_block, b.model.identity_block
    assert int(block_a.rounds) == int(block_b.rounds) == 2
    for key, value in block_a.state_dict().items():
        assert torch.equal(block_b.state_dict()[key], value), key
    texts = lambda d: [json.loads(line)["text"] for line in (d / "introspection.jsonl").read_text().splitlines()]
    assert texts(resumed) == texts(full)[1:]
    reloaded = IdentityForCausalLM.from_pretrained(full / "persona")
    assert isinstance(reloaded.identity_block, DiffusionIdentityBlock) and int(reloaded.identity_block.rounds) == 2


@pytest.mark.slow
def test_ddp_ranks_identical_with_diffusion(tmp_path):
    run_two_ranks("ddp_identity_run.py", [*FAST, "--max_steps", "4", "--output_dir", str(tmp_path)], tmp_path)


def test_blend_api_and_cli(tmp_path):
    a, b = _persona(torch_seed=1), _persona(torch_seed=2)
    b.lm.load_state_dict(a.lm.state_dict())
    _rounds(b.identity_block, [torch.randn(64)])
    tok = tokenizer()
    for model, d in ((a, tmp_path / "a"), (b, tmp_path / "b")):
        model.save_pretrained(d, save_base=True)
        tok.save_pretrained(d)
    with torch.no_grad():
        soul_a, soul_b = a.identity_block.soul(), b.identity_block.soul()
        at_0 = blend_personas(tmp_path / "a", tmp_path / "b", 0.0).identity_block
        at_1 = blend_personas(tmp_path / "a", tmp_path / "b", 1.0).identity_block
        torch.testing.assert_close(at_0.soul(), soul_a, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(at_1.soul(), soul_b, rtol=1e-4, atol=1e-5)
        mid = blend_personas(tmp_path / "a", tmp_path / "b", 0.5).identity_block
        norm = (a.identity_block.noise.norm() + b.identity_block.noise.norm()) / 2
        assert abs(mid.noise.norm() - norm) / norm < 0.2  # slerp keeps the noise on its shell; lerp would shrink it
    sweep = blend_sweep(tmp_path / "a", tmp_path / "b", [0.0, 0.25, 0.5, 0.75, 1.0], tok, max_new_tokens=2)
    to_a, to_b = [p["cos_to_a"] for p in sweep["points"]], [p["cos_to_b"] for p in sweep["points"]]
    assert to_a == sorted(to_a, reverse=True) and to_b == sorted(to_b)  # a smooth drift from A to B
    u, v = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    torch.testing.assert_close(slerp(u, v, 0.5), torch.tensor([2 ** -0.5, 2 ** -0.5]))
    out = tmp_path / "blend"
    proc = subprocess.run([sys.executable, "-m", "hfself.cli", "identity", "blend", "--a", str(tmp_path / "a"),
                           "--b", str(tmp_path / "b"), "--alphas", "0.5", "--max_new_tokens", "4",
                           "--output_dir", str(out), "--save_to", str(tmp_path / "mix")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    curve = json.loads((out / "blend.json").read_text())["points"]
    assert len(curve) == 1 and (out / "blend.png").exists() and "cos(A)" in proc.stdout
    mixed = IdentityForCausalLM.from_pretrained(tmp_path / "mix")
    assert mixed.config.blend["alpha"] == 0.5
    mlp = IdentityForCausalLM.from_base(tiny_model("llama"), IdentityConfig(identity_dim=16))
    mlp.save_pretrained(tmp_path / "mlp", save_base=True)
    with pytest.raises(PersonaMismatchError, match="cannot blend"):
        blend_personas(tmp_path / "a", tmp_path / "mlp", 0.5)
