"""Every causal-LM type transformers lists, built tiny from its config: identity conditioning holds or is refused.

For each type that builds (``catalogue.build``) and that ``hfself.arch`` accepts:
identity off is bit-identical to the base and leaves no hook; on, logits move;
changing token t+1 never changes logits <= t; greedy generation with KV cache
equals generation without it; save -> from_pretrained gives the same logits;
and the V part of the KV cache is bit-identical with identity on and off (a
fused QKV projection included). A type hfself refuses must say why.
"""

import pytest
import torch
from catalogue import CATALOGUE, NotBuildable, build

from hfself import IdentityConfig, IdentityForCausalLM
from hfself.arch import UnsupportedArchitectureError

pytestmark = pytest.mark.slow

# Accepted by hfself.arch but failing a property: open gaps of issue #14, tracked here so a fix shows up
# (strict xfail: a type that starts passing must be moved out of this table).
KNOWN_GAPS = {
    "afmoe": "the attention's output view fails once the Q bias hook returns a non-contiguous tensor",
    "jetmoe": "the attention's output view fails once the Q bias hook returns a non-contiguous tensor",
    "cpmant": "position bias over buckets: causality check fails with the identity on",
    "deepseek_v4": "compressed sparse attention indexes past its window with the biased query",
    "hy_v4": "indexed attention: the first layer's cached V moves",
    "prophetnet": "n-gram self-attention: the measured query units do not match its stream layout",
    "zaya": "CCA attention: the Q/K found do not reach the logits",
}


def _ids(model, length=10, seed=1):
    vocab = model.config.get_text_config().vocab_size
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, min(vocab, 500), (1, length), generator=g)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def _values(cache):
    layers = getattr(cache, "layers", None) or []
    return [layer.values.clone() for layer in layers if isinstance(getattr(layer, "values", None), torch.Tensor)]


def _built(model_type):
    try:
        return build(model_type)
    except NotBuildable as err:
        pytest.skip(f"not buildable tiny: {err}")


@pytest.mark.parametrize("model_type", [
    pytest.param(t, marks=pytest.mark.xfail(reason=KNOWN_GAPS[t], strict=True)) if t in KNOWN_GAPS else t
    for t in CATALOGUE])
def test_identity_on_every_causal_lm(model_type, tmp_path):
    base = _built(model_type)
    ids = _ids(base)
    plain = _logits(base, ids)
    try:
        model = IdentityForCausalLM.from_base(base, IdentityConfig(identity_dim=8, init_std=0.5))
    except UnsupportedArchitectureError as err:
        assert "register" in str(err) or "no self-attention" in str(err)
        pytest.skip(f"refused: {str(err)[:200]}")

    with model.identity_disabled():
        assert torch.equal(_logits(model, ids), plain), "identity off must be bit-identical"
    on = _logits(model, ids)
    assert (on - plain).abs().max() > 1e-4, "identity on must move the logits"

    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % 400 + 3
    torch.testing.assert_close(_logits(model, changed)[:, :-1], on[:, :-1], rtol=1e-4, atol=1e-5)

    prompt = ids[:, :5]
    kwargs = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        cached = model.generate(prompt, use_cache=True, **kwargs)
        uncached = model.generate(prompt, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached), "greedy generation with and without KV cache must match"

    if model.arch.fused_qkv:
        with torch.no_grad():
            values_on = _values(model(input_ids=ids, use_cache=True).past_key_values)
            with model.identity_disabled():
                values_off = _values(model(input_ids=ids, use_cache=True).past_key_values)
        # the first attention layer sees the same input either way; its cached V must be bit-identical
        assert values_on and torch.equal(values_on[0], values_off[0]), "a fused projection's V units must not move"

    model.save_pretrained(tmp_path)
    loaded = IdentityForCausalLM.from_pretrained(tmp_path, base_model=build(model_type))
    torch.testing.assert_close(_logits(loaded, ids), on, rtol=0, atol=1e-5)

    model.unload()
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in base.modules()), "no hook may stay"
    assert torch.equal(_logits(base, ids), plain)
