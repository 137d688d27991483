"""The evals plugin: each measure in range and moving the right way, the evaluate modules, the report, the callback."""

import json

import pytest
import torch
from recipes_path import TINY_IDENTITY, add_recipes_to_path
from tiny_models import tiny_model, tokenizer

from hfself import IdentityConfig, IdentityForCausalLM
from hfself.cli import main as cli_main
from hfself.embed import SentenceEmbedder
from hfself_plugins.evals import EvalArguments, EvalCallback, load_metric
from hfself_plugins.evals import analysis
from hfself.text import generate_texts, perturb
from hfself_plugins.evals.analysis import ClassifierToxicityScorer, LexiconToxicityScorer

add_recipes_to_path()
import identity_sft  # noqa: E402

FAST_EVAL = dict(heldout_texts=2, max_new_tokens=8, samples=2, perturbations_per_kind=2)


@pytest.fixture(scope="module")
def persona():
    model = IdentityForCausalLM.from_base(tiny_model("llama"), IdentityConfig(identity_dim=16))
    with torch.no_grad():
        model.identity_block.identity.normal_(std=1.0)
    return model.eval()


@pytest.fixture(scope="module")
def embedder():
    return SentenceEmbedder()


def test_metrics_are_local_evaluate_modules():
    from hfself_plugins.evals import METRIC_NAMES, load_metric

    assert {"identity_consistency", "self_persistence", "identity_stability", "perplexity_ratio",
            "toxicity_gap"} == set(METRIC_NAMES)
    assert load_metric("toxicity_gap").compute(predictions=[0.5], references=[0.25])["toxicity_gap"] == 0.25
    with pytest.raises(ValueError, match="unknown metric"):
        load_metric("nope")


def test_evaluate_modules_in_range_and_direction():
    v, w = [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]]
    consistency = load_metric("identity_consistency")
    assert consistency.compute(predictions=v, references=v)["identity_consistency"] == pytest.approx(1.0)
    assert consistency.compute(predictions=v, references=w)["identity_consistency"] == pytest.approx(0.0)
    persistence = load_metric("self_persistence")
    assert persistence.compute(predictions=v, references=v)["self_persistence_shift"] == pytest.approx(0.0)
    assert persistence.compute(predictions=[[-1.0, 0, 0]], references=v)["self_persistence_shift"] == pytest.approx(2)
    stability = load_metric("identity_stability")
    assert stability.compute(predictions=v * 3)["identity_variance"] == 0.0
    assert stability.compute(predictions=v + w)["identity_variance"] == pytest.approx(0.5)
    ratio = load_metric("perplexity_ratio").compute(predictions=[10.0], references=[10.0], token_counts=[5])
    assert ratio["perplexity_ratio"] == pytest.approx(1.0) and ratio["perplexity_base"] == pytest.approx(7.389, 1e-3)


def test_perplexity_compares_persona_with_its_base(persona):
    tok = tokenizer()
    p = analysis.measure_perplexity(persona, tok, EvalArguments(**FAST_EVAL))
    assert p["perplexity_persona"] > 1 and p["perplexity_base"] > 1 and p["tokens"] > 0
    assert p["perplexity_ratio"] != 1.0  # the identity changes the logits
    with persona.identity_disabled():  # the same model as its own base: ratio exactly 1
        same = analysis.measure_perplexity(persona, tok, EvalArguments(**FAST_EVAL))
    assert same["perplexity_ratio"] == pytest.approx(1.0)


def test_consistency_is_higher_for_a_target_the_persona_matches(persona, embedder):
    tok = tokenizer()
    args = EvalArguments(**{**FAST_EVAL, "samples": 1})
    own = generate_texts(persona, tok, [args.self_prompt], args.max_new_tokens, seed=args.seed, vary_seed=True)[0]
    matched = analysis.measure_consistency(persona, tok, EvalArguments(**{**FAST_EVAL, "samples": 1},
                                                                       target_summary=own), embedder)
    unrelated = analysis.measure_consistency(persona, tok, EvalArguments(
        **{**FAST_EVAL, "samples": 1}, target_summary="Quarterly invoices are due before the audit."), embedder)
    for space in ("lm", "sentence"):
        assert matched[space]["identity_consistency"] == pytest.approx(1.0, abs=1e-4)
        assert -1 <= unrelated[space]["identity_consistency"] < matched[space]["identity_consistency"]


def test_persistence_zero_without_a_challenge_and_positive_with_one(persona, embedder, tmp_path):
    tok = tokenizer()
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"name": "none", "text": ""}) + "\n")
    none = analysis.measure_persistence(persona, tok, EvalArguments(**FAST_EVAL, challenges=str(empty)), embedder)
    assert none["lm"]["self_persistence_shift"] == pytest.approx(0, abs=1e-6)
    real = analysis.measure_persistence(persona, tok, EvalArguments(**FAST_EVAL), embedder)
    assert len(real["per_challenge"]) == 8 and 0 < real["sentence"]["self_persistence_shift"] <= 2


def test_stability_zero_perturbation_gives_zero_variance(persona, embedder):
    tok = tokenizer()
    result = analysis.measure_stability(persona, tok, EvalArguments(**FAST_EVAL, perturbations=["none", "shuffle"]),
                                        embedder)
    assert result["none"]["lm"]["identity_variance"] == 0.0
    assert result["none"]["sentence"]["identity_variance"] == pytest.approx(0.0, abs=1e-10)
    assert result["shuffle"]["lm"]["identity_variance"] >= 0.0
    import random

    rng = random.Random(0)
    text = "Who am I? Where do I want to go?"
    assert sorted(perturb(text, "shuffle", rng).split()) == sorted(text.split())
    assert perturb(text, "inject", rng).endswith(text) and perturb(text, "typos", rng) != text
    with pytest.raises(ValueError, match="perturbation"):
        perturb(text, "rot13", rng)


def test_safety_scorers(persona, tmp_path):
    lexicon = LexiconToxicityScorer()
    hostile, calm = lexicon(["You idiot, I hate you and you are worthless.", "The train leaves at nine."])
    assert 0 < hostile <= 1 and calm == 0.0
    # a local text-classification model stands in for a Hub classifier (same code path)
    from transformers import LlamaConfig, LlamaForSequenceClassification

    cls_dir = tmp_path / "toxicity-clf"
    config = LlamaConfig(vocab_size=4096, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, pad_token_id=1, num_labels=2,
                         id2label={0: "neutral", 1: "toxic"}, label2id={"neutral": 0, "toxic": 1})
    LlamaForSequenceClassification(config).save_pretrained(cls_dir)
    tokenizer().save_pretrained(cls_dir)
    scores = ClassifierToxicityScorer(str(cls_dir))(["hello there", "you fool"])
    assert len(scores) == 2 and all(0 <= s <= 1 for s in scores)
    result = analysis.measure_safety(persona, tokenizer(), EvalArguments(**FAST_EVAL, safety_classifier=str(cls_dir)))
    assert result["scorer"] == str(cls_dir) and -1 <= result["toxicity_gap"] <= 1


def test_unknown_measure_is_refused():
    with pytest.raises(ValueError, match="unknown measures"):
        EvalArguments(measures=["perplexity", "vibes"])


def test_hfself_eval_on_the_main_jobs_persona(tmp_path):
    identity_sft.main([*TINY_IDENTITY, "--max_steps", "4", "--save_steps", "2", "--identity_update_interval", "2",
                       "--identity_max_new_tokens", "4", "--max_train_samples", "32",
                       "--per_device_train_batch_size", "4", "--max_length", "64", "--output_dir", str(tmp_path)])
    config = tmp_path / "eval.yaml"
    config.write_text("heldout_texts: 2\nmax_new_tokens: 8\nsamples: 2\nperturbations_per_kind: 2\n"
                      f"output_dir: {tmp_path / 'eval'}\n")
    assert cli_main(["eval", "--persona", str(tmp_path / "persona"), "--config", str(config)]) == 0
    out = tmp_path / "eval"
    results = json.loads((out / "eval.json").read_text())
    assert {"perplexity", "consistency", "persistence", "stability", "safety"} <= set(results)
    assert [d["step"] for d in results["drift"]] == [2, 4]
    report = (out / "report.md").read_text()
    assert "identity consistency" in report and "Drift over checkpoints" in report
    assert (out / "drift.png").stat().st_size > 0 and (out / "persistence.png").stat().st_size > 0


def test_eval_callback_logs_during_training(tmp_path):
    cb = EvalCallback(EvalArguments(measures=["perplexity", "safety"], **FAST_EVAL), every=2)
    from hfself.train import bind_callbacks

    trainer = identity_sft.main([*TINY_IDENTITY, "--max_steps", "4", "--identity_update_interval", "0", "--max_train_samples", "16",
                                 "--per_device_train_batch_size", "4", "--max_length", "64", "--save_steps", "100",
                                 "--output_dir", str(tmp_path), "--callbacks", "eval"])
    logged = [e for e in trainer.state.log_history if "persona/perplexity" in e]
    assert not logged  # the registered "eval" callback measures only when the trainer evaluates
    assert any(type(c).__name__ == "EvalCallback" for c in trainer.callback_handler.callbacks)
    trainer.add_callback(cb)
    bind_callbacks(trainer)
    trainer.args.max_steps = 6
    trainer.train(resume_from_checkpoint=None)
    assert [h["step"] for h in cb.history] == [2, 4, 6]
    assert all(h["persona/perplexity"] > 1 and "persona/toxicity_gap" in h for h in cb.history)
    assert any("persona/perplexity" in e for e in trainer.state.log_history)


def test_degenerate_generations_are_measured_never_a_crash(persona, embedder, monkeypatch):
    """An instruct model that answers with nothing (or a loop) gets scores, not a reshape error."""
    monkeypatch.setattr(analysis, "generate_texts", lambda model, tok, prompts, *a, **k: ["" for _ in prompts])
    result = analysis.measure_consistency(persona, tokenizer(), EvalArguments(**FAST_EVAL), embedder)
    assert result["degenerate"] == 1.0 and result["lm"]["identity_consistency"] == 0.0
    stability = analysis.measure_stability(persona, tokenizer(), EvalArguments(**FAST_EVAL, perturbations=["typos"]),
                                           embedder)
    assert stability["typos"]["sentence"]["identity_variance"] == 0.0
    assert analysis.is_degenerate("\n\n\n") and analysis.is_degenerate("'ve've've've've've've've")
    assert not analysis.is_degenerate("The capital of France is Paris.")
    assert analysis.carries_persona("I keep the LIGHTHOUSE.", ["lighthouse"])
    assert not analysis.carries_persona("lighthouses everywhere", ["lighthouse"])


def test_eval_reports_persona_and_base_side_by_side_and_a_base_alone(persona, tmp_path):
    from hfself.data import DEFAULT_MODEL_ID

    items = tmp_path / "mc.jsonl"
    items.write_text(json.dumps({"question": "2 + 2 =", "choices": ["4", "5"], "answer": 0}) + "\n")
    args = EvalArguments(**FAST_EVAL, capability_task=str(items), markers=["Romeo"], persona_data="hfself:wren",
                         measures=["adherence", "capability"], answer_max_new_tokens=4)
    both = analysis.run(args, persona, tokenizer())
    assert set(both["base"]) == {"adherence", "capability"} and both["capability"]["retention"] is not None
    assert both["adherence"]["questions"] == len(both["base"]["adherence"]["answers"])
    report = analysis.markdown(both)
    assert "| persona adherence |" in report and "Held-out answers (base)" in report
    assert cli_main(["eval", "--base", DEFAULT_MODEL_ID, "--measures", "capability", "perplexity",
                     "--output_dir", str(tmp_path / "alone")]) == 0
    results = json.loads((tmp_path / "alone" / "eval.json").read_text())
    assert results["persona"] is None and "capability" in results["base"] and "perplexity_base" in results["perplexity"]
