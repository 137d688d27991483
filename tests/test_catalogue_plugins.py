"""The other plugins over the same catalogue, smaller matrices: q_only, temporal and anima on every type hfself accepts.

* q_only: after optimizer steps with weight decay, only the measured query units
  of the backbone changed; every K/V unit (fused ones included) is bit-identical.
* temporal: peft LoRA on the discovered Q/K projections plus the router is
  causal, moves the logits, and greedy generation with KV cache equals without.
* anima: an empty reservoir on the residual hook point is bit-identical to the
  base, a filled one moves the logits, and disabling or closing leaves no hook.
"""

import pytest
import torch
import torch.nn.functional as F
from catalogue import CATALOGUE, build_or_skip, catalogue_ids, next_token_changed
from tiny_models import q_unit_masks, query_units_moved, tokenizer

from hfself.arch import UnsupportedArchitectureError, inspect_model

pytestmark = pytest.mark.slow


def _accepted(model_type):
    base = build_or_skip(model_type)
    try:
        info = inspect_model(base)
    except UnsupportedArchitectureError as err:
        pytest.skip(f"refused: {str(err)[:160]}")
    return base, info


def _or_skip_refused(build, base):
    """``build()``, or a skip where the plugin refuses the base's type by name (several residual streams)."""
    try:
        return build()
    except UnsupportedArchitectureError as err:
        assert repr(base.config.model_type) in str(err), "a refusal names the type"
        pytest.skip(f"refused: {str(err)[:160]}")


def _next_token_loss(model, ids):
    logits = model(input_ids=ids, use_cache=False).logits  # (1, T, V)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("model_type", CATALOGUE)
def test_q_only_on_every_causal_lm(model_type):
    from hfself_plugins.attention import QOnlyTraining

    base, _ = _accepted(model_type)
    base.train()
    masks = q_unit_masks(base)
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    q_only = QOnlyTraining(base)
    trainable = [p for p in base.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.1)
    ids = catalogue_ids(base, length=12)
    for _ in range(2):
        _next_token_loss(base, ids).backward()
        optimizer.step()
        optimizer.zero_grad()
        q_only.restore_frozen()
    q_only.remove()
    assert any(query_units_moved(masks, before, dict(base.named_parameters())).values()), "no query weight trained"


@pytest.mark.parametrize("model_type", CATALOGUE)
def test_temporal_on_every_causal_lm(model_type):
    from hfself import TemporalLoraConfig, TemporalLoraForCausalLM

    base, _ = _accepted(model_type)
    ids = catalogue_ids(base)
    changed = next_token_changed(ids)
    with torch.no_grad():
        plain = base(input_ids=ids, use_cache=False).logits
        causal = torch.allclose(base(input_ids=changed, use_cache=False).logits[:, :-1], plain[:, :-1],
                                rtol=1e-4, atol=1e-5)  # cpmant's default context is bidirectional
    model = _or_skip_refused(lambda: TemporalLoraForCausalLM.from_base(base, TemporalLoraConfig(
        domains=["poetry", "code"])).eval(), base)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # peft starts B at zero; give every adapter a visible effect
        for n, p in model.lm.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        on = model(input_ids=ids, use_cache=False).logits
        moved = model(input_ids=changed, use_cache=False).logits
    assert (on - plain).abs().max() > 1e-4, "the adapters must move the logits"
    if causal:
        torch.testing.assert_close(moved[:, :-1], on[:, :-1], rtol=1e-4, atol=1e-5)

    kwargs = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    cached = model.generate(input_ids=ids[:, :5], use_cache=True, **kwargs)
    uncached = model.generate(input_ids=ids[:, :5], use_cache=False, **kwargs)
    assert torch.equal(cached, uncached), "greedy generation with and without KV cache must match"


@pytest.fixture(scope="module")
def tok():
    return tokenizer()


@pytest.mark.parametrize("model_type", CATALOGUE)
def test_anima_off_means_off_on_every_causal_lm(model_type, tok):
    from sae_lens import StandardSAE, StandardSAEConfig

    from hfself_plugins.anima import AnimaRuntime

    base, info = _accepted(model_type)
    ids = catalogue_ids(base)
    with torch.no_grad():
        plain = base(input_ids=ids, use_cache=False).logits
    hooks = _hooks(base)
    torch.manual_seed(0)
    sae = StandardSAE(StandardSAEConfig(d_in=info.hidden_size, d_sae=4 * info.hidden_size))
    runtime = _or_skip_refused(lambda: AnimaRuntime(base, tok, sae), base)
    with torch.no_grad():
        assert torch.equal(base(input_ids=ids, use_cache=False).logits, plain), "an empty reservoir edits nothing"
        runtime.reservoir.weights.fill_(0.5)
        assert not torch.equal(base(input_ids=ids, use_cache=False).logits, plain), "steering must move the logits"
        with runtime.disabled():
            assert torch.equal(base(input_ids=ids, use_cache=False).logits, plain) and _hooks(base) == hooks
    runtime.close()
    assert _hooks(base) == hooks
    with torch.no_grad():
        assert torch.equal(base(input_ids=ids, use_cache=False).logits, plain)
