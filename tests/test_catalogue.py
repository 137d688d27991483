"""Every causal-LM type transformers lists, built tiny from its config: identity conditioning holds or is refused.

For each type that builds (``catalogue.build``) and that ``hfself.arch`` accepts:
identity off is bit-identical to the base and leaves no hook; on, logits and
(where the model reports them) attention weights move;
changing token t+1 never changes logits <= t; greedy generation with KV cache
equals generation without it; save -> from_pretrained gives the same logits;
and the V part of the KV cache is bit-identical with identity on and off (a
fused QKV projection included). A type hfself refuses must say why.
"""

import pytest
import torch
from catalogue import CASES, build, build_or_skip, catalogue_ids, next_token_changed

from hfself import IdentityConfig, IdentityForCausalLM
from hfself_plugins.identity import NonCausalBaseError
from hfself.arch import UnsupportedArchitectureError, _instrumented_kernels, _Recorder

pytestmark = pytest.mark.slow

def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def _attention_maps(model, ids):
    """The attention weights the model reports (eager attention), or [] where it reports none."""
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=False, output_attentions=True)
    return [a for a in (getattr(out, "attentions", None) or ()) if isinstance(a, torch.Tensor)]


def _hfself_hooks(model):
    """Hooks hfself put on ``model`` (transformers keeps its own output-recording hooks)."""
    hooks = [h for m in model.modules() for h in [*m._forward_hooks.values(), *m._forward_pre_hooks.values()]]
    return [h for h in hooks if getattr(h, "__module__", "").startswith(("hfself", "plugins"))]


def _first_values(model, ids):
    """The V the first attention layer attends over: recorded at the model's own attention kernel where it calls
    one (an MLA cache holds the latent, not V), else read from the KV cache (models that compute attention inline)."""
    recorder = _Recorder()
    with torch.no_grad(), _instrumented_kernels(recorder):
        model(input_ids=ids, use_cache=False)
    if recorder.calls:
        return recorder.calls[0][3].clone()
    with torch.no_grad():
        cache = getattr(model(input_ids=ids, use_cache=True), "past_key_values", None)
    values = [layer.values for layer in getattr(cache, "layers", []) if isinstance(getattr(layer, "values", None),
                                                                                  torch.Tensor)]
    return values[0].clone() if values else torch.zeros(0)  # no KV cache at all (openai-gpt): nothing to compare


def _first_cached_values(model, ids):
    """What the KV cache of the first attention layer holds in its value slot (empty where there is no cache)."""
    first = model.arch.attention_layers[0]
    index = getattr(first.attention, "layer_idx", None)
    try:
        with torch.no_grad():
            output = model(input_ids=ids, use_cache=True)
    except TypeError:  # no KV cache at all (openai-gpt)
        return torch.zeros(0)
    cache = getattr(output, "cache", None) or getattr(output, "past_key_values", None)
    layers = getattr(cache, "layers", [])
    layer = layers[index if isinstance(index, int) else first.index] if layers else None
    values = getattr(layer, "values", None)
    return values.clone() if isinstance(values, torch.Tensor) else torch.zeros(0)


def _wrap_or_skip(base, model_type, causal):
    """The identity on ``base``, or a skip where hfself refuses it with an error that names the type and says why.
    A base that is not causal itself is refused until asked for (cpmant's default context is bidirectional)."""
    config = IdentityConfig(identity_dim=8, init_std=0.5)
    try:
        try:
            return IdentityForCausalLM.from_base(base, config), config
        except NonCausalBaseError as err:
            assert not causal, f"a causal base was refused as non-causal: {err}"
            assert repr(model_type) in str(err) and "allow_non_causal_base" in str(err)
            config = IdentityConfig(identity_dim=8, init_std=0.5, allow_non_causal_base=True)
            return IdentityForCausalLM.from_base(base, config), config
    except UnsupportedArchitectureError as err:
        assert repr(model_type) in str(err), "a refusal names the type"
        assert any(why in str(err) for why in ("register", "no self-attention", "does not run a forward pass")), \
            "a refusal says why and what to do"
        pytest.skip(f"refused: {str(err)[:200]}")


@pytest.mark.parametrize("model_type,variant", CASES)
def test_identity_on_every_causal_lm(model_type, variant, tmp_path):
    base = build_or_skip(model_type, variant)
    ids = catalogue_ids(base)
    plain = _logits(base, ids)
    changed = next_token_changed(ids)
    causal = torch.allclose(_logits(base, changed)[:, :-1], plain[:, :-1], rtol=1e-4, atol=1e-5)
    model, config = _wrap_or_skip(base, model_type, causal)
    assert causal or config.allow_non_causal_base, "a base that is not causal is never accepted silently"

    with model.identity_disabled():
        assert torch.equal(_logits(model, ids), plain), "identity off must be bit-identical"
    on = _logits(model, ids)
    # above float noise: a random-init base with near-uniform attention moves little (post-LN BERTs: ~3e-5)
    assert (on - plain).abs().max() > 1e-6, "identity on must move the logits"
    maps_on = _attention_maps(model, ids)
    with model.identity_disabled():
        maps_off = _attention_maps(model, ids)
    if maps_on:  # every model that reports attention weights: the identity moves them
        assert any((a - b).abs().max() > 1e-6 for a, b in zip(maps_on, maps_off)), "attention weights must move"

    if causal:  # the identity never makes a causal model see the future
        torch.testing.assert_close(_logits(model, changed)[:, :-1], on[:, :-1], rtol=1e-4, atol=1e-5)

    prompt = ids[:, :5]
    kwargs = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        cached = model.generate(prompt, use_cache=True, **kwargs)
        uncached = model.generate(prompt, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached), "greedy generation with and without KV cache must match"

    # the first attention layer sees the same input either way: the V it attends over and the value slot of its
    # KV cache must be bit-identical (a fused projection's V units, an MLA cache's rotary key)
    values_on, cached_on = _first_values(model, ids), _first_cached_values(model, ids)
    with model.identity_disabled():
        values_off, cached_off = _first_values(model, ids), _first_cached_values(model, ids)
    assert torch.equal(values_on, values_off), "the V of the first attention layer must not move"
    assert torch.equal(cached_on, cached_off), "the value slot of the first attention layer's KV cache must not move"

    model.save_pretrained(tmp_path)
    loaded = IdentityForCausalLM.from_pretrained(tmp_path, base_model=build(model_type, variant=variant))
    torch.testing.assert_close(_logits(loaded, ids), on, rtol=0, atol=1e-5)

    assert _hfself_hooks(base)
    model.unload()
    assert not _hfself_hooks(base), "no hfself hook may stay"
    assert torch.equal(_logits(base, ids), plain)
