"""Identity-conditioned attention over many tiny architectures."""

import json
from pathlib import Path

import pytest
import torch
from tiny_models import IDENTITY_ARCHS, NO_ROPE, VOCAB, sample_ids, tiny_model
from transformers import AutoModelForCausalLM

from hfself import IdentityConfig, IdentityForCausalLM
from hfself.arch import UnsupportedArchitectureError
from hfself.persist import StateFileError
from hfself_plugins.identity import PersonaMismatchError


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _persona(name, **kw):
    kw.setdefault("identity_dim", 16)
    kw.setdefault("init_std", 0.5)
    torch.manual_seed(3)
    return IdentityForCausalLM.from_base(tiny_model(name), IdentityConfig(**kw))


@torch.no_grad()
def _logits(model, ids):
    return model(input_ids=ids).logits


@pytest.mark.parametrize("name", IDENTITY_ARCHS)
def test_off_means_off(name):
    base = tiny_model(name)
    ids = sample_ids()
    ref = _logits(base, ids)
    off = IdentityForCausalLM.from_base(base, IdentityConfig(identity_dim=None))
    assert torch.equal(_logits(off, ids), ref)
    assert _hook_count(base) == 0
    on = IdentityForCausalLM.from_base(base, IdentityConfig(identity_dim=16, init_std=0.5))
    assert _hook_count(base) > 0
    with on.identity_disabled():
        assert torch.equal(_logits(base, ids), ref) and _hook_count(base) == 0
    on.unload()
    assert _hook_count(base) == 0 and torch.equal(_logits(base, ids), ref)


@pytest.mark.parametrize("name", IDENTITY_ARCHS)
def test_on_changes_logits_and_is_causal(name):
    model = _persona(name)
    ids = sample_ids()
    with model.identity_disabled():
        base = _logits(model, ids)
    on = _logits(model, ids)
    assert (on - base).abs().max() > 1e-4
    t = 6
    changed = ids.clone()
    changed[:, t + 1:] = (changed[:, t + 1:] + 17) % 4000 + 2
    on2 = _logits(model, changed)
    assert torch.equal(on2[:, : t + 1], on[:, : t + 1])  # positions <= t never see tokens > t
    assert (on2[:, t + 1:] - on[:, t + 1:]).abs().max() > 0


@pytest.mark.parametrize("name", IDENTITY_ARCHS)
def test_cache_equivalence_and_folding(name):
    model = _persona(name)
    ids = sample_ids(batch=1, length=5)
    kw = dict(max_new_tokens=10, do_sample=False, pad_token_id=1)
    assert torch.equal(model.generate(ids, use_cache=True, **kw), model.generate(ids, use_cache=False, **kw))
    hooked = _logits(model, sample_ids())
    with model.injector.folded():
        assert model.injector._folded  # really folded: the hooks stand aside, the biases hold the identity
        folded = _logits(model, sample_ids())
    torch.testing.assert_close(folded, hooked, rtol=1e-5, atol=1e-5)
    # after folding, every projection has its own bias back (None stays None)
    assert [getattr(t.module, "bias", None) is None for t in model.injector.targets] == \
        [getattr(t.module, "bias", None) is None for t in _persona(name).injector.targets]


@pytest.mark.parametrize("name", IDENTITY_ARCHS)
def test_save_load_round_trip(name, tmp_path):
    model = _persona(name)
    ids = sample_ids()
    expected = _logits(model, ids)
    model.save_pretrained(tmp_path)
    assert {"config.json", "identity.safetensors", "README.md"} <= {p.name for p in tmp_path.iterdir()}
    card = (tmp_path / "README.md").read_text()
    assert "library_name: hfself" in card
    reloaded = IdentityForCausalLM.from_pretrained(tmp_path, base_model=tiny_model(name))
    assert torch.equal(_logits(reloaded, ids), expected)


def test_card_names_a_hub_base_and_never_a_local_path(tmp_path):
    from huggingface_hub import ModelCard

    from hfself.data import DEFAULT_MODEL
    from hfself.train import load_causal_lm

    persona = _persona("llama")
    persona.config.base_model_name_or_path = "Qwen/Qwen2.5-0.5B"
    card = persona.model_card()
    assert card.data.base_model == "Qwen/Qwen2.5-0.5B" and card.data.library_name == "hfself"
    base, _ = load_causal_lm(DEFAULT_MODEL)
    local = IdentityForCausalLM.from_base(base, IdentityConfig(identity_dim=8))
    local.save_pretrained(tmp_path / "persona")
    text = (tmp_path / "persona" / "README.md").read_text()
    loaded = ModelCard.load(tmp_path / "persona" / "README.md")
    assert loaded.data.base_model is None and "embedded default" in text
    assert str(Path(DEFAULT_MODEL).parent) not in text and "None" not in text
    saved = json.loads((tmp_path / "persona" / "config.json").read_text())
    assert saved["base_model_name_or_path"] == "hfself:default"  # the same on every machine
    reloaded = IdentityForCausalLM.from_pretrained(tmp_path / "persona")  # finds the default by its id
    assert torch.equal(reloaded.lm.lm_head.weight, base.lm_head.weight)


def test_a_pushed_config_names_a_local_base_by_its_folder(tmp_path, monkeypatch, caplog):
    """push_to_hub uploads what save_pretrained wrote, with a local base's path cut to its folder name (the
    upload itself is the Hub's; here it copies the folder it was given)."""
    import shutil

    from huggingface_hub import HfApi

    uploaded = tmp_path / "uploaded"
    monkeypatch.setattr(HfApi, "create_repo", lambda self, *a, **k: None)
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, repo_id, folder_path, commit_message:
                        shutil.copytree(folder_path, uploaded) and "ok")
    persona = _persona("llama")
    persona.config.base_model_name_or_path = str(tmp_path / "my-base")
    persona.push_to_hub("me/persona")
    text = (uploaded / "config.json").read_text() + (uploaded / "README.md").read_text()
    assert str(tmp_path) not in text and json.loads((uploaded / "config.json").read_text())[
        "base_model_name_or_path"] == "my-base"
    assert "base_model=" in caplog.text


def test_save_with_base_and_auto_model(tmp_path):
    from transformers import AutoModelForCausalLM


    model = _persona("llama")
    ids = sample_ids()
    expected = _logits(model, ids)
    model.save_pretrained(tmp_path, save_base=True)
    assert (tmp_path / "model.safetensors").exists()
    reloaded = IdentityForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")
    assert torch.equal(_logits(reloaded, ids), expected)
    auto = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")
    assert isinstance(auto, IdentityForCausalLM) and torch.equal(_logits(auto, ids), expected)


def test_identity_moves_attention_weights():
    model = _persona("llama", init_std=0.3)
    ids = sample_ids()
    with torch.no_grad():
        with model.identity_disabled():
            base = model(input_ids=ids, output_attentions=True).attentions
        on = model(input_ids=ids, output_attentions=True).attentions
    shift = max((a - b).abs().sum(-1).max().item() for a, b in zip(base, on))  # L1 change of a row
    assert shift > 0.01


@pytest.mark.parametrize("name", sorted(set(IDENTITY_ARCHS) & NO_ROPE))
def test_key_only_identity_cannot_move_attention_without_rope(name):
    """Q-vs-K note: K bias constant over positions cancels in softmax unless RoPE rotates it."""
    model = _persona(name, inject_q=False, inject_k=True)
    ids = sample_ids()
    with torch.no_grad():
        with model.identity_disabled():
            base = model(input_ids=ids, output_attentions=True).attentions[0]
        on = model(input_ids=ids, output_attentions=True).attentions[0]
    torch.testing.assert_close(on, base, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["llama", "qwen2"])
def test_key_only_identity_moves_attention_with_rope(name):
    """The twin of the note above: RoPE rotates the key bias differently at each position, so it moves attention."""
    model = _persona(name, inject_q=False, inject_k=True, init_std=0.5)
    ids = sample_ids()
    with torch.no_grad():
        with model.identity_disabled():
            base = model(input_ids=ids, output_attentions=True).attentions[0]
        on = model(input_ids=ids, output_attentions=True).attentions[0]
    assert (on - base).abs().max() > 1e-3


def test_gradients_reach_identity_and_lora(tmp_path):
    from peft import LoraConfig, get_peft_model

    base = tiny_model("llama")
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model = IdentityForCausalLM.from_base(lora, IdentityConfig(identity_dim=16, init_std=0.5))
    ids = sample_ids()
    model.train()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert model.identity_block.identity.grad is not None and model.identity_block.qk_proj.grad.abs().sum() > 0
    assert any(p.grad is not None for n, p in model.named_parameters() if "lora_" in n)
    model.eval()
    expected = _logits(model, ids)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    assert not (tmp_path / "model.safetensors").exists()  # base frozen: persona + adapter only
    reloaded = IdentityForCausalLM.from_pretrained(tmp_path, base_model=tiny_model("llama"))
    assert torch.equal(_logits(reloaded, ids), expected)


def test_identity_dim_mismatch_on_load(tmp_path):
    _persona("llama").save_pretrained(tmp_path)
    from hfself_plugins.identity import IdentityConfig as Cfg

    cfg = Cfg.from_pretrained(tmp_path)
    cfg.identity_dim = 32
    with pytest.raises(PersonaMismatchError, match="identity"):
        IdentityForCausalLM.from_pretrained(tmp_path, base_model=tiny_model("llama"), config=cfg)


def test_persona_on_another_base_is_refused(tmp_path):
    _persona("llama").save_pretrained(tmp_path)
    with pytest.raises(PersonaMismatchError, match="trained on base"):
        IdentityForCausalLM.from_pretrained(tmp_path, base_model=tiny_model("gpt2"))


def test_unknown_model_type_is_found_by_structure():
    base = tiny_model("llama")
    base.config.model_type = "mystery_lm"  # nothing is keyed by the type string
    model = IdentityForCausalLM.from_base(base, IdentityConfig(identity_dim=8))
    assert len(model.injector.targets) == 4


def test_model_without_attention_is_refused():
    from transformers import MambaConfig

    base = AutoModelForCausalLM.from_config(MambaConfig(hidden_size=32, num_hidden_layers=2, vocab_size=VOCAB,
                                                        state_size=4))
    with pytest.raises(UnsupportedArchitectureError, match="no self-attention"):
        IdentityForCausalLM.from_base(base, IdentityConfig(identity_dim=8))


def test_corrupt_identity_file_is_clear(tmp_path):
    _persona("llama").save_pretrained(tmp_path)
    path = tmp_path / "identity.safetensors"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises((PersonaMismatchError, StateFileError), match="corrupt or truncated"):
        IdentityForCausalLM.from_pretrained(tmp_path, base_model=tiny_model("llama"))


def test_bad_config_values():
    with pytest.raises(ValueError):
        IdentityConfig(identity_dim=0)
    with pytest.raises(ValueError):
        IdentityConfig(identity_dim=8, inject_q=False, inject_k=False)
    with pytest.raises(ValueError, match="unknown identity block"):
        IdentityForCausalLM.from_base(tiny_model("llama"), IdentityConfig(identity_dim=8, block="nope"))
    with pytest.raises(ValueError, match="not attention layers"):
        IdentityForCausalLM.from_base(tiny_model("llama"), IdentityConfig(identity_dim=8, layers=[5]))


def _identity_grads(name, block, checkpointing):
    model = _persona(name, block=block).train()
    if checkpointing is not None:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": checkpointing})
    ids = sample_ids()
    model(input_ids=ids, labels=ids).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", ["llama", "gpt2", "phi3"])
@pytest.mark.parametrize("block", ["mlp", "diffusion"])
@pytest.mark.parametrize("use_reentrant", [False, True])
def test_gradient_checkpointing_gives_the_same_gradients(name, block, use_reentrant):
    plain = _identity_grads(name, block, None)
    checkpointed = _identity_grads(name, block, use_reentrant)
    assert any(n.startswith("identity_block.") for n in plain)
    assert plain.keys() == checkpointed.keys()
    for n in plain:
        torch.testing.assert_close(checkpointed[n], plain[n], rtol=1e-4, atol=1e-6, msg=n)


def test_personas_never_stack_on_one_base(tmp_path):
    from hfself_plugins.identity import IdentityStackingError

    base, ids = tiny_model("llama"), sample_ids()
    first = IdentityForCausalLM.from_base(base, IdentityConfig(identity_dim=16, init_std=0.5))
    first.save_pretrained(tmp_path)
    on = _logits(first, ids)
    with pytest.raises(IdentityStackingError, match="unload"):
        IdentityForCausalLM.from_base(base, IdentityConfig(identity_dim=16, init_std=0.5))
    with pytest.raises(IdentityStackingError):
        IdentityForCausalLM.from_pretrained(tmp_path, base_model=base)
    assert torch.equal(_logits(first, ids), on)  # the refused second persona left nothing behind
    first.unload()
    second = IdentityForCausalLM.from_pretrained(tmp_path, base_model=base)
    torch.testing.assert_close(_logits(second, ids), on, rtol=0, atol=1e-6)
    with pytest.raises(IdentityStackingError):
        first.injector.attach()  # re-attaching the first persona's hooks on top of the second's is refused too


@pytest.mark.parametrize("name", ["llama", "qwen2", "gpt2", "gpt_neox", "falcon_new", "bloom"])
def test_merge_and_unload_exports_a_plain_transformers_model(name, tmp_path):
    """The identity folded into attention biases: a plain model of the base's class, the persona's logits, loadable
    by transformers alone (a subprocess that never imports hfself)."""
    import subprocess
    import sys

    from safetensors.torch import load_file, save_file

    model = _persona(name)
    base_class = type(model.lm)
    ids = sample_ids()
    expected = _logits(model, ids)
    plain = model.merge_and_unload()
    assert type(plain) is base_class and not _hook_count(plain)
    torch.testing.assert_close(_logits(plain, ids), expected, rtol=1e-5, atol=1e-5)
    plain.save_pretrained(tmp_path)
    save_file({"ids": ids}, tmp_path / "ids.safetensors")
    check = (f"import sys; from safetensors.torch import load_file, save_file; "
             f"from transformers import AutoModelForCausalLM; "
             f"m = AutoModelForCausalLM.from_pretrained({str(tmp_path)!r}, attn_implementation='eager').eval(); "
             f"ids = load_file({str(tmp_path / 'ids.safetensors')!r})['ids']; "
             f"save_file({{'logits': m(input_ids=ids).logits.detach()}}, {str(tmp_path / 'out.safetensors')!r}); "
             f"assert not any(k.startswith(('hfself', 'hfself_plugins')) for k in sys.modules)")
    subprocess.run([sys.executable, "-c", check], check=True)
    torch.testing.assert_close(load_file(tmp_path / "out.safetensors")["logits"], expected, rtol=1e-5, atol=1e-5)


def test_merge_and_unload_merges_lora_too():
    from peft import LoraConfig, get_peft_model

    base = get_peft_model(tiny_model("llama"), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                          init_lora_weights=False))
    torch.manual_seed(3)
    model = IdentityForCausalLM.from_base(base, IdentityConfig(identity_dim=16, init_std=0.5))
    ids = sample_ids()
    expected = _logits(model, ids)
    plain = model.merge_and_unload()
    assert not any("lora_" in n for n, _ in plain.named_parameters()) and plain.config.attention_bias
    torch.testing.assert_close(_logits(plain, ids), expected, rtol=1e-5, atol=1e-5)


def test_merge_and_unload_refuses_what_cannot_carry_a_bias():
    from hfself_plugins.identity import ExportError

    with pytest.raises(ExportError, match="cannot carry the identity"):
        _persona("phi3").merge_and_unload()


def _graph_breaks(model, ids, **kwargs) -> int:
    import torch._dynamo as dynamo

    torch._dynamo.reset()
    return dynamo.explain(model)(input_ids=ids, **kwargs).graph_break_count


@pytest.mark.parametrize("block", ["mlp", "diffusion"])
def test_torch_compile_trains_and_generates_the_same(block):
    """Compiled, a persona gives the same loss, gradients and greedy generation. The MLP block compiles to one
    graph; the diffusion sampler loop breaks the graph a fixed number of times, never once per layer."""
    from tiny_models import CONFIGS

    def persona(layers=2):
        config = CONFIGS["llama"]()
        config.num_hidden_layers = layers
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
        return IdentityForCausalLM.from_base(base, IdentityConfig(identity_dim=8, init_std=0.5, block=block)).train()

    ids = sample_ids()
    breaks = [_graph_breaks(persona(n), ids, labels=ids) for n in (2, 4)]
    with torch.no_grad():
        breaks += [_graph_breaks(persona(n).eval(), ids) for n in (2, 4)]
    if block == "mlp":
        assert breaks == [0, 0, 0, 0]
    else:
        assert breaks[0] == breaks[1] and breaks[2] == breaks[3], breaks

    eager, compiled = persona(), persona()
    compiled.compile(backend="aot_eager")
    for model in (eager, compiled):
        model(input_ids=ids, labels=ids).loss.backward()
    grads = {n: p.grad for n, p in eager.named_parameters() if p.grad is not None}
    assert any(n.startswith("identity_block.") for n in grads)
    for name, param in compiled.named_parameters():
        if name in grads:
            torch.testing.assert_close(param.grad, grads[name], rtol=1e-5, atol=1e-6)

    eager.eval(), compiled.eval()
    compiled.lm.compile(backend="aot_eager")  # generate() steps through the LM's forward
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(compiled.generate(ids[:, :5], **kwargs), eager.generate(ids[:, :5], **kwargs))


@pytest.mark.slow
@pytest.mark.parametrize("block", ["mlp", "diffusion"])
def test_fsdp2_on_two_cpu_ranks_trains_generates_and_saves_whole(tmp_path, block):
    """fully_shard (FSDP2) over the decoder layers and the persona, gloo on 2 CPU processes: the sharded forward
    equals the unsharded one, generate runs on every rank (no hang), the saved persona holds the gathered state and
    reloads unsharded with equal logits and generation; both ranks end identical (tests/fsdp_identity_run.py)."""
    from ddp import run_two_ranks

    ranks = run_two_ranks("fsdp_identity_run.py", [str(tmp_path), block], tmp_path)
    assert ranks["generated"].shape == (2, 9)
    assert (tmp_path / "persona" / "identity.safetensors").exists()


@pytest.mark.slow
@pytest.mark.parametrize("stage,block", [(2, "mlp"), (3, "mlp"), (3, "diffusion")])
def test_deepspeed_zero_on_two_cpu_ranks_trains_introspects_and_saves_whole(tmp_path, stage, block):
    """DeepSpeed ZeRO-2/3 (its CPU accelerator, gloo, 2 processes): a training step, an introspection round (all
    ranks generate under ZeRO-3; the round reaches the fp32 master copy) and a second step equal the same run
    unsharded; generate matches; the saved persona reloads with equal logits (tests/deepspeed_identity_run.py)."""
    pytest.importorskip("deepspeed", reason="the deepspeed extra is not installed")
    from ddp import run_two_ranks

    ranks = run_two_ranks("deepspeed_identity_run.py", [str(tmp_path), str(stage), block], tmp_path,
                          env={"DS_ACCELERATOR": "cpu"})
    assert ranks["generated"].shape == (2, 9)


def test_deepcopy_gives_an_independent_persona():
    """TRL builds reference models with copy.deepcopy: the copy's hooks must read the copy's identity."""
    import copy

    model, ids = _persona("llama"), sample_ids()
    before = _logits(model, ids)
    replica = copy.deepcopy(model)
    with torch.no_grad():
        replica.identity_block.identity.add_(1.0)
    assert torch.equal(_logits(model, ids), before)
    assert not torch.equal(_logits(replica, ids), before)


def test_a_persona_whose_base_weights_are_missing_is_refused_never_a_random_init(tmp_path):
    """Saved without its base (save_base=False) on a config-only base, or saved with it and the file lost: loading
    names what is missing instead of building a random-init base."""
    import shutil

    from hfself.train import load_causal_lm
    from tiny_models import config_only_model

    config_only = config_only_model(tmp_path / "config_only")
    base, _ = load_causal_lm(config_only)
    persona = IdentityForCausalLM.from_base(base, IdentityConfig(identity_dim=8))
    persona.save_pretrained(tmp_path / "without", save_base=False)
    with pytest.raises(FileNotFoundError, match="holds a config and no weights"):
        IdentityForCausalLM.from_pretrained(tmp_path / "without")
    IdentityForCausalLM.from_pretrained(tmp_path / "without", base_model=load_causal_lm(config_only)[0])  # given

    persona.save_pretrained(tmp_path / "with", save_base=True)
    shutil.copytree(tmp_path / "with", tmp_path / "lost")
    (tmp_path / "lost" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors is missing"):
        IdentityForCausalLM.from_pretrained(tmp_path / "lost")
    with pytest.raises(FileNotFoundError, match="model.safetensors is missing"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "lost")


def _wrong_layout_injector(model, retarget):
    """An injector built from discovery's result after ``retarget(layer_info)`` edited it: a mis-measured layout."""
    from hfself.arch import inspect_model
    from hfself_plugins.identity.block import IdentityBlock
    from hfself_plugins.identity.layer import IdentityInjector

    arch = inspect_model(model)
    for layer in arch.attention_layers:
        retarget(layer)
    return IdentityInjector(model, IdentityBlock(IdentityConfig(identity_dim=8), arch), arch), arch


def test_wrapping_checks_the_identity_on_the_model_itself_and_refuses_a_layout_that_moves_v():
    """Whatever discovery or an adapter claims, the wrap-time check runs the model: Q/K units that are really V
    (gpt2's fused c_attn with its key part pointed at the value part) are refused, units that never reach the
    kernel (a "query" on the output projection) too, and the true layout passes. No hook stays behind."""
    from hfself.arch import LayoutError, ProjectionTarget
    from hfself_plugins.identity.layer import verify_effect

    model = tiny_model("gpt2").train()
    hidden = model.config.n_embd
    hooks = _hook_count(model)

    def key_on_value_units(layer):
        layer.targets[0].k_index = torch.arange(2 * hidden, 3 * hidden)  # c_attn is [Q | K | V]

    injector, arch = _wrong_layout_injector(model, key_on_value_units)
    with pytest.raises(LayoutError, match=r"'gpt2' layer 0 .*value entering the attention kernel moved"):
        verify_effect(model, injector, arch)

    def query_on_output_projection(layer):
        out = layer.attention.c_proj
        layer.targets = [ProjectionTarget(out, hidden, q_index=torch.arange(hidden), k_index=None, name="c_proj")]

    injector, arch = _wrong_layout_injector(model, query_on_output_projection)
    with pytest.raises(LayoutError, match="neither the query nor the key entering the attention kernel moved"):
        verify_effect(model, injector, arch)

    injector, arch = _wrong_layout_injector(model, lambda layer: None)
    verify_effect(model, injector, arch)  # what discovery measured holds
    assert _hook_count(model) == hooks and model.training, "the check leaves hooks and modes as it found them"


def test_a_base_that_is_not_causal_is_refused_unless_asked_for(tmp_path):
    """CPM-Ant's default context lets every position see the whole input: a persona on it is refused by name, or
    built with ``allow_non_causal_base=True``, which the saved persona keeps."""
    from catalogue import build

    from hfself_plugins.identity import NonCausalBaseError

    base = build("cpmant")
    hooks = _hook_count(base)
    with pytest.raises(NonCausalBaseError, match="'cpmant'.*not causal.*allow_non_causal_base=True"):
        IdentityForCausalLM.from_base(base, IdentityConfig(identity_dim=8))
    assert _hook_count(base) == hooks
    persona = IdentityForCausalLM.from_base(base, IdentityConfig(identity_dim=8, allow_non_causal_base=True))
    persona.save_pretrained(tmp_path)
    assert IdentityConfig.from_pretrained(tmp_path).allow_non_causal_base
    IdentityForCausalLM.from_pretrained(tmp_path, base_model=build("cpmant"))  # reloads under the same flag

    causal = tiny_model("llama")
    IdentityForCausalLM.from_base(causal, IdentityConfig(identity_dim=8))  # a causal base passes the check


def test_a_base_that_needs_more_than_token_ids_is_refused_by_name():
    """A Gemma-4 assistant (a draft model) runs on its target's shared KV states: hfself refuses it by type, with
    the model's own error, before adding a hook."""
    from catalogue import tiny_config
    from transformers import Gemma4AssistantConfig

    text = tiny_config("gemma4_text").to_dict()
    text.update(hidden_size_per_layer_input=0, vocab_size_per_layer_input=0, enable_moe_block=False,
                use_double_wide_mlp=False, num_kv_shared_layers=text["num_hidden_layers"])
    try:
        config = Gemma4AssistantConfig(text_config=text, backbone_hidden_size=64, num_centroids=16,
                                       centroid_intermediate_top_k=4)
        base = AutoModelForCausalLM.from_config(config).eval()
    except ValueError as err:  # transformers 5.23 refuses a model whose every layer reuses the KV
        pytest.skip(f"this transformers cannot build a tiny Gemma-4 assistant: {err}")
    with pytest.raises(UnsupportedArchitectureError,
                       match=r"'gemma4_assistant' \(text model 'gemma4_text'\).*from input_ids alone.*shared_kv"):
        IdentityForCausalLM.from_base(base, IdentityConfig(identity_dim=8))
    assert _hook_count(base) == 0


def test_a_failure_inside_discovery_is_a_refusal_naming_the_type():
    """An unexpected error while hfself measures a model becomes a refusal that names the type and the error;
    hfself's own errors (personas stacking, a wrong layout) pass as they are."""
    from hfself.arch import LayoutError, refused_on_failure

    model = tiny_model("llama")
    with pytest.raises(UnsupportedArchitectureError, match=r"'llama'.*measuring.*RuntimeError: boom.*register"):
        with refused_on_failure(model, "measuring"):
            raise RuntimeError("boom")
    with pytest.raises(LayoutError, match="^mine$"):
        with refused_on_failure(model, "measuring"):
            raise LayoutError("mine")
