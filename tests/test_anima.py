"""Anima (first slice): a real sae-lens SAE trained on a tiny model, residual-stream steering, the reservoir and its
persistence."""

import os

import pytest
import torch
from tiny_models import sample_ids, tiny_model, tokenizer

from hfself import persist
from hfself.data import corpus_text, text_chunks
from hfself_plugins.anima import (AnimaRuntime, LexiconValence, Reservoir, SAEDimensionError, SAESteering, load_sae,
                                  train_sae)


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny Llama and an SAE trained on its layer-1 output with sae-lens, saved and loaded back."""
    torch.manual_seed(0)
    model, tok = tiny_model("llama").eval(), tokenizer()
    texts = text_chunks(corpus_text("shakespeare"), 300, 40)
    sae = train_sae(model, tok, texts, layer=1, d_sae=128, training_tokens=60_000, batch_tokens=128)
    path = tmp_path_factory.mktemp("sae")
    sae.save_model(path)
    return model, tok, load_sae(str(path)), path


@torch.no_grad()
def _logits(model, ids):
    return model(input_ids=ids).logits


def test_trained_sae_reconstructs_and_is_sparse(trained):
    model, tok, sae, path = trained
    from hfself_plugins.anima.sae import activations

    acts = activations(model, tok, ["Now is the winter of our discontent"], layer=1)
    features = sae.encode(acts)
    error = (sae.decode(features) - acts).norm() / acts.norm()
    # a random-init model's activations have little structure to find; the bar is "learned something, sparsely"
    assert error < 0.75 and (features > 0).float().mean() < 0.6, (error, (features > 0).float().mean())
    assert {p.name for p in path.iterdir()} >= {"cfg.json", "sae_weights.safetensors"}


def test_hooked_layer_is_the_residual_after_that_layer(trained):
    model, _, sae, _ = trained
    steering = SAESteering(model, sae, layer=0)
    steering.attach()
    steering.start_recording()
    ids = sample_ids()
    with torch.no_grad():  # hidden_states: [0] the embeddings, [1] the output of layer 0 (the last one is normed)
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[1]
    steering.detach()
    torch.testing.assert_close(steering.recorded()[0], sae.encode(hidden[:, -1]).float())


def test_off_means_off_and_no_hooks_left(trained, tmp_path):
    model, tok, sae, _ = trained
    ids = sample_ids()
    reference = _logits(model, ids)
    hooks = _hooks(model)  # transformers may keep its own output-recording hooks
    runtime = AnimaRuntime(model, tok, sae, state_dir=tmp_path)
    assert _hooks(model) == hooks + 1
    assert torch.equal(_logits(model, ids), reference)  # an empty reservoir edits nothing: bit-identical
    runtime.reservoir.weights.fill_(0.5)
    assert not torch.equal(_logits(model, ids), reference)
    with runtime.disabled():
        assert torch.equal(_logits(model, ids), reference) and _hooks(model) == hooks
    runtime.close()
    assert _hooks(model) == hooks and torch.equal(_logits(model, ids), reference)


def test_negative_steering_lowers_the_target_feature(trained):
    model, _, sae, _ = trained
    ids = sample_ids()
    steering = SAESteering(model, sae, layer=1)
    steering.attach()
    captured = []
    probe = model.model.layers[1].register_forward_hook(lambda m, i, o: captured.append(o[0] if isinstance(o, tuple)
                                                                                      else o))
    with torch.no_grad():
        model(input_ids=ids)
    plain = sae.encode(captured[0]).float().mean(dim=(0, 1))
    target = int(plain.argmax())
    before = plain[target].item()
    # negative steering: the feature's decoder direction is pushed the other way (f_target -> -f_target)
    steering.edits.append(lambda f: torch.cat([f[..., :target], -f[..., target:target + 1], f[..., target + 1:]], -1))
    with torch.no_grad():
        model(input_ids=ids)
    probe.remove()
    steering.detach()
    after = sae.encode(captured[1]).float().mean(dim=(0, 1))[target].item()  # re-read the edited residual
    assert after < 0.5 * before, (before, after)


def test_reservoir_follows_valence():
    acts = torch.tensor([0.0, 1.0, 2.0, 0.0])
    up, down = Reservoir(4), Reservoir(4)
    up.update(acts, valence=1.0)
    down.update(acts, valence=-1.0)
    assert up.weights[2] > up.weights[1] > 0 == up.weights[0] and (down.weights[1:3] < 0).all()
    for _ in range(500):
        up.update(acts, 1.0)
    assert up.weights.max() <= up.config.reservoir_bound  # bounded
    valence = LexiconValence()
    assert valence("thank you, dear friend, I love this") > 0 > valence("I hate this cruel war")


def test_personality_survives_into_a_second_runtime(trained, tmp_path):
    model, tok, sae, _ = trained
    first = AnimaRuntime(model, tok, sae, state_dir=tmp_path, valence=lambda text: 1.0)
    for text in ("Good morrow, kind friend.", "What a gentle day."):
        first.respond(text, max_new_tokens=6)
    weights = first.reservoir.weights.clone()
    assert weights.abs().sum() > 0 and first.turns == 2
    ids = sample_ids()
    steered = _logits(model, ids)
    first.close()
    second = AnimaRuntime(model, tok, sae, state_dir=tmp_path)
    assert torch.equal(second.reservoir.weights, weights) and second.turns == 2
    assert torch.equal(_logits(model, ids), steered)
    assert len(persist.read_jsonl(tmp_path / "memories.jsonl")) == 2
    second.close()


def test_corrupt_state_is_clear_and_a_crashed_save_keeps_the_last_good(trained, tmp_path, monkeypatch):
    model, tok, sae, _ = trained
    hooks = _hooks(model)
    runtime = AnimaRuntime(model, tok, sae, state_dir=tmp_path, valence=lambda text: 1.0)
    runtime.respond("Hello, friend.", max_new_tokens=4)
    good = (tmp_path / "reservoir.safetensors").read_bytes()
    runtime.reservoir.weights.fill_(0.9)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        runtime.save()
    monkeypatch.undo()
    runtime.close()
    assert (tmp_path / "reservoir.safetensors").read_bytes() == good  # the crash lost nothing
    (tmp_path / "reservoir.safetensors").write_bytes(good[:40])
    with pytest.raises(persist.StateFileError, match="reservoir.safetensors"):
        AnimaRuntime(model, tok, sae, state_dir=tmp_path)
    assert _hooks(model) == hooks  # the failed runtime attached nothing


def test_legacy_pt_reservoir_is_read_with_weights_only(trained, tmp_path):
    model, tok, sae, _ = trained
    torch.save({"weights": torch.full((sae.cfg.d_sae,), 0.25)}, tmp_path / "reservoir.pt")
    runtime = AnimaRuntime(model, tok, sae, state_dir=tmp_path)
    assert torch.equal(runtime.reservoir.weights, torch.full((sae.cfg.d_sae,), 0.25))
    runtime.close()


def test_sae_width_mismatch_is_clear(trained):
    from sae_lens import StandardSAE, StandardSAEConfig

    model = trained[0]
    narrow = StandardSAE(StandardSAEConfig(d_in=model.config.hidden_size // 2, d_sae=16))
    with pytest.raises(SAEDimensionError, match="hidden_size"):
        SAESteering(model, narrow, layer=0)


def test_prism_modes_discovery_suppression_routing_and_persistence(trained, tmp_path):
    import subprocess
    import sys

    from hfself_plugins.anima import BUILTIN_MODES
    from hfself_plugins.anima.prism import mean_features

    model, tok, sae, sae_dir = trained
    runtime = AnimaRuntime(model, tok, sae, state_dir=tmp_path)
    assert {"Anima", "System", "Dream"} <= set(runtime.modes)
    system = BUILTIN_MODES["System"]
    features = [int(f) for f in runtime.modes["System"]["features"]]
    assert all(v < 0 for v in runtime.modes["System"]["features"].values())  # System suppresses
    fantasy_before = mean_features(runtime.steering, tok, system["positive"])[features]
    plain = mean_features(runtime.steering, tok, system["negative"])[features]
    assert fantasy_before.mean() > plain.mean()  # discovery found features the fantasy prompts use more
    ids = sample_ids()
    reference = _logits(model, ids)
    runtime.set_mode("System")
    assert not torch.equal(_logits(model, ids), reference)
    captured = []
    probe = model.model.layers[1].register_forward_hook(lambda m, i, o: captured.append(o[0] if isinstance(o, tuple)
                                                                                      else o))
    with torch.no_grad():
        for prompt in system["positive"]:
            model(**tok(prompt, return_tensors="pt"))
    probe.remove()
    fantasy_after = torch.stack([sae.encode(c).float().mean(dim=(0, 1)) for c in captured]).mean(0)[features]
    assert fantasy_after.mean() < fantasy_before.mean()  # negative steering lowers the targeted features
    runtime.set_mode(None)
    assert torch.equal(_logits(model, ids), reference)
    assert runtime.route("Just give me the exact facts, precisely and without any imagery.") == "System"
    runtime.respond("Tell me how you feel, dear friend.", max_new_tokens=3, mode="auto")
    assert runtime.mode == "Anima"
    runtime.close()
    second = AnimaRuntime(model, tok, sae, state_dir=tmp_path)
    assert second.modes == runtime.modes  # read back from modes.json, not rediscovered differently
    second.close()
    with pytest.raises(ValueError, match="unknown mode"):
        second.set_mode("Nope")
    pos, neg = tmp_path / "pos.txt", tmp_path / "neg.txt"
    pos.write_text("The sea, the sea.\nWaves on the shore.\n")
    neg.write_text("Two plus two.\nThe file is empty.\n")
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    proc = subprocess.run([sys.executable, "-m", "hfself.cli", "anima", "discover-mode", "--model",
                           str(tmp_path / "model"), "--sae", str(sae_dir), "--state-dir", str(tmp_path),
                           "--name", "Sea", "--description", "talk of the sea", "--positive", str(pos),
                           "--negative", str(neg)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Sea" in persist.load_json(tmp_path / "modes.json")


def test_fatigue_sleep_dreams_and_a_rewritten_self_model(trained, tmp_path):
    from hfself_plugins.anima import AnimaConfig

    model, tok, sae, _ = trained
    valences = iter([0.9, 0.0, -0.8])  # two charged turns, one flat: the flat one is let go in sleep
    config = AnimaConfig(fatigue_threshold=15, adrenaline_threshold=0.3, dream_max_new_tokens=8)
    runtime = AnimaRuntime(model, tok, sae, state_dir=tmp_path, config=config, valence=lambda text: next(valences))
    first_self = runtime.self_model
    runtime.respond("Good morrow, friend.", max_new_tokens=6)
    runtime.respond("What is the hour?", max_new_tokens=6)
    assert runtime.fatigue == 12 and runtime.sleeps == 0 and len(runtime.short_term) == 2  # 6 tokens per turn
    weights_before_sleep = runtime.reservoir.weights.clone()
    runtime.respond("I hate this cruel cold.", max_new_tokens=6)  # 18 >= 15: sleeps after this turn
    assert runtime.sleeps == 1 and runtime.fatigue == 0 and runtime.short_term == []
    dream = persist.read_jsonl(tmp_path / "dreams.jsonl")[0]
    assert dream["consolidated"] == 2 and dream["let_go"] == 1 and dream["dream"] is not None
    assert runtime.self_model != first_self and runtime.self_model.startswith("I am")
    assert dream["self_model"] == runtime.self_model and runtime.mode is None  # Dream mode only while dreaming
    assert not torch.equal(runtime.reservoir.weights, weights_before_sleep)
    runtime.close()
    again = AnimaRuntime(model, tok, sae, state_dir=tmp_path)
    assert again.self_model == runtime.self_model and again.sleeps == 1 and again.status()["fatigue"] == 0
    assert again.prompt_for("hi").startswith(runtime.self_model)
    again.close()


def _chat_command(model, tok, sae_dir, tmp_path):
    """``hfself anima chat`` on the saved tiny model and SAE, and its state directory."""
    import sys

    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    state = tmp_path / "state"
    return [sys.executable, "-m", "hfself.cli", "anima", "chat", "--model", str(tmp_path / "model"), "--sae",
            str(sae_dir), "--state-dir", str(state), "--max_new_tokens", "4"], state


def test_chat_command_two_sessions(trained, tmp_path):
    import json
    import subprocess

    model, tok, _, sae_dir = trained
    cmd, state = _chat_command(model, tok, sae_dir, tmp_path)
    first = subprocess.run([*cmd, "--stream"], input="Good morrow, kind friend.\n/mode System\nWhat is two and two?\n"
                           "/sleep\n/status\n", capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "anima> " in first.stdout and "[mode: System]" in first.stdout and "[slept; self_model: I am" in first.stdout
    status = persist.load_json(state / "anima.json")
    assert status["turns"] == 2 and status["sleeps"] == 1
    second = subprocess.run(cmd, input="/status\n", capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    resumed = json.loads(next(line for line in second.stdout.splitlines() if line.startswith("{")))
    assert resumed["self_model"] == status["self_model"] and resumed["sleeps"] == 1  # the second session carries on


def test_chat_survives_typos_help_and_ctrl_c(trained, tmp_path):
    """A mistyped mode or command prints a hint and the session goes on; modes match case-insensitively; /help is
    not sent to the model; a second session on a busy state dir and Ctrl-C end with one line, no traceback."""
    import signal
    import subprocess
    import time

    model, tok, _, sae_dir = trained
    cmd, state = _chat_command(model, tok, sae_dir, tmp_path)
    out = subprocess.run(cmd, input="/mode dreem\n/MODE dream\n/Help\n/frobnicate\nHello there.\n/modes\n/status\n",
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "unknown mode 'dreem'" in out.stdout and "[mode: Dream]" in out.stdout
    assert "/mode auto" in out.stdout and "unknown command /frobnicate" in out.stdout
    assert persist.load_json(state / "anima.json")["turns"] == 1  # only "Hello there." was a turn

    holder = AnimaRuntime(model, tok, load_sae(str(sae_dir)), state_dir=state)
    try:
        busy = subprocess.run(cmd, input="Hi.\n", capture_output=True, text=True, timeout=300)
    finally:
        holder.close()
    assert busy.returncode != 0 and "in use by another session" in busy.stderr and "Traceback" not in busy.stderr

    proc = subprocess.Popen([*cmd, "--interactive"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdin.write("Good day.\n")
    proc.stdin.flush()
    deadline = time.time() + 240
    while persist.load_json(state / "anima.json")["turns"] < 2 and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert "Traceback" not in stderr, stderr[-2000:]
    assert "interrupted" in stdout + stderr and persist.load_json(state / "anima.json")["turns"] == 2
    assert not (state / "anima.lock").exists() or AnimaRuntime(model, tok, load_sae(str(sae_dir)),
                                                                 state_dir=state).close() is None


def test_batched_left_padded_prompts_match_one_by_one(trained, tmp_path):
    model, tok, sae, _ = trained
    runtime = AnimaRuntime(model, tok, sae, state_dir=tmp_path)
    runtime.reservoir.weights.uniform_(-0.5, 0.5, generator=torch.Generator().manual_seed(0))  # a personality
    runtime.set_mode("Anima")
    texts = ["Hi.", "Tell me about the long winter nights by the sea.", "Who are you?"]
    alone = [runtime.respond(t, max_new_tokens=8, learn=False) for t in texts]
    assert runtime.respond_batch(texts, max_new_tokens=8, learn=False) == alone
    runtime.respond_batch(texts, max_new_tokens=8)
    assert runtime.turns == 3 and len(runtime.short_term) == 3
    runtime.close()


def test_research_questions_write_json_and_png(trained, tmp_path):
    from hfself_plugins.anima import AnimaConfig, analysis

    model, tok, sae, _ = trained
    runtime = AnimaRuntime(model, tok, sae, state_dir=tmp_path / "state", config=AnimaConfig(dream_max_new_tokens=6))
    stability = analysis.vector_stability(runtime)
    assert stability["in_context"]["next_token_kl"] > 0 and stability["out_of_context"]["next_token_kl"] > 0
    negation = analysis.negative_steering_efficiency(runtime)
    assert negation["sae_suppression"] < negation["plain"]  # suppression lowers the topic's features
    drift = analysis.identity_drift(runtime, cycles=3, turns_per_cycle=1)
    assert len(drift["self_models"]) == 4 and len(drift["step_distance"]) == 3 and drift["verdict"]
    assert runtime.mode is None
    runtime.close()
    for result, name in ((stability, "vector_stability"), (negation, "negative_steering"), (drift, "identity_drift")):
        files = analysis.write(result, name, tmp_path / "out")
        assert files["json"].exists() and files["plot"].stat().st_size > 1000


def test_dream_mode_boosts_the_most_frequent_features(trained, tmp_path):
    from hfself_plugins.anima import BUILTIN_MODES
    from hfself_plugins.anima.prism import firing_frequency

    model, tok, sae, _ = trained
    runtime = AnimaRuntime(model, tok, sae, state_dir=tmp_path)
    frequency = firing_frequency(runtime.steering, tok, BUILTIN_MODES["Dream"]["positive"])
    chosen = [int(f) for f in runtime.modes["Dream"]["features"]]
    assert all(v > 0 for v in runtime.modes["Dream"]["features"].values())
    assert min(frequency[chosen]) >= torch.sort(frequency, descending=True).values[len(chosen) - 1] - 1e-6
    runtime.close()


class _Killed(BaseException):
    """Stands for a kill -9 at one point of a save."""


def _turn_state(state_dir):
    """What a reloaded runtime sees: turns, the reservoir, the memory log's turn numbers."""
    saved = persist.load_json(state_dir / "anima.json")
    weights = persist.load_tensors(state_dir / "reservoir.safetensors")["weights"]
    return saved["turns"], weights, [m["turn"] for m in persist.read_jsonl(state_dir / "memories.jsonl")]


@pytest.mark.slow
def test_a_kill_at_any_point_of_a_turn_leaves_the_previous_turn_or_the_new_one(trained, tmp_path, monkeypatch):
    """Kill the second turn before each file operation it makes (log append, each atomic replace): the state that
    loads afterwards is turn 1 or turn 2 as a whole (anima.json, reservoir, memories.jsonl agree), and the stale
    temp files of the interrupted write are gone."""
    import shutil

    model, tok, sae, _ = trained
    start = tmp_path / "start"
    with AnimaRuntime(model, tok, sae, state_dir=start, valence=lambda text: 1.0) as runtime:
        runtime.respond("Good morrow, kind friend.", max_new_tokens=4)

    def second_turn(state_dir):
        with AnimaRuntime(model, tok, sae, state_dir=state_dir, valence=lambda text: 1.0) as runtime:
            runtime.respond("What a gentle day.", max_new_tokens=4)
        with AnimaRuntime(model, tok, sae, state_dir=state_dir) as reloaded:  # loading reconciles the state
            return reloaded.turns, reloaded.reservoir.weights.clone(), [
                m["turn"] for m in persist.read_jsonl(state_dir / "memories.jsonl")]

    before = (1, *_turn_state(start)[1:])
    after = second_turn(shutil.copytree(start, tmp_path / "complete"))
    assert after[0] == 2 and after[2] == [1, 2] and not torch.equal(after[1], before[1])

    operations = {"append": persist.append_jsonl, "replace": os.replace}
    for kill_at in range(8):
        state_dir = shutil.copytree(start, tmp_path / f"kill{kill_at}")
        count = [0]

        def counted(name):
            def run(*args, **kwargs):
                if count[0] == kill_at:
                    (state_dir / ".anima.json.x1y2.tmp").write_text("half")  # what a kill mid-write leaves
                    raise _Killed
                count[0] += 1
                return operations[name](*args, **kwargs)
            return run

        monkeypatch.setattr(persist, "append_jsonl", counted("append"))
        monkeypatch.setattr(os, "replace", counted("replace"))
        try:
            with AnimaRuntime(model, tok, sae, state_dir=state_dir, valence=lambda text: 1.0) as runtime:
                runtime.respond("What a gentle day.", max_new_tokens=4)
            killed = False
        except _Killed:
            killed = True
        monkeypatch.undo()
        with AnimaRuntime(model, tok, sae, state_dir=state_dir) as reloaded:
            seen = (reloaded.turns, reloaded.reservoir.weights,
                    [m["turn"] for m in persist.read_jsonl(state_dir / "memories.jsonl")])
        expected = after if not killed or seen[0] == 2 else before
        assert seen[0] == expected[0] and torch.equal(seen[1], expected[1]) and seen[2] == expected[2], kill_at
        assert not list(state_dir.glob(".*.tmp"))
        if not killed:
            assert kill_at >= 4  # every operation of the turn was a kill point before this
            break
    else:
        raise AssertionError("the turn makes more file operations than the test covers")


def test_one_session_per_state_dir(trained, tmp_path):
    """A second session on a state dir (this process or another) is refused at once; after close it may start."""
    import subprocess
    import sys

    from hfself_plugins.anima.runtime import StateDirBusyError

    model, tok, sae, _ = trained
    first = AnimaRuntime(model, tok, sae, state_dir=tmp_path)
    hooks = _hooks(model)
    with pytest.raises(StateDirBusyError, match="in use by another session"):
        AnimaRuntime(model, tok, sae, state_dir=tmp_path)
    assert _hooks(model) == hooks
    first.close()
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from filelock import FileLock; "
                               f"lock = FileLock({str(tmp_path / 'anima.lock')!r}); lock.acquire(); print('held', flush=True); "
                               "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StateDirBusyError):
            AnimaRuntime(model, tok, sae, state_dir=tmp_path)
    finally:
        holder.communicate("", timeout=60)
    AnimaRuntime(model, tok, sae, state_dir=tmp_path).close()


def test_bad_state_files_are_refused_by_name_before_any_turn(trained, tmp_path):
    model, tok, sae, _ = trained
    d_sae = sae.cfg.d_sae

    def refused(setup, match):
        state_dir = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        state_dir.mkdir()
        setup(state_dir)
        with pytest.raises(persist.StateFileError, match=match):
            AnimaRuntime(model, tok, sae, state_dir=state_dir)
        (state_dir / "anima.json").unlink(missing_ok=True)
        for f in ("reservoir.safetensors", "modes.json"):
            (state_dir / f).unlink(missing_ok=True)
        AnimaRuntime(model, tok, sae, state_dir=state_dir).close()  # the refusal left the directory unlocked

    nan = torch.zeros(d_sae)
    nan[3] = float("nan")
    refused(lambda d: persist.save_tensors(d / "reservoir.safetensors", {"weights": nan}),
            r"reservoir.safetensors: field 'weights' has 1 non-finite")
    refused(lambda d: persist.save_json(d / "anima.json", []), r"anima.json: expected a JSON object, found list")
    refused(lambda d: persist.save_json(d / "anima.json", {"turns": "three"}), r"anima.json: field 'turns'")
    refused(lambda d: persist.save_json(d / "anima.json", {"config": {"layr": 1}}), r"anima.json: field 'config'")
    refused(lambda d: persist.save_json(d / "modes.json", {"Calm": {"features": {str(d_sae + 5): 1.0}}}),
            r"modes.json: mode 'Calm' names feature")
    refused(lambda d: persist.save_json(d / "modes.json", {"Calm": {"features": {"1": "strong"}}}),
            r"modes.json: mode 'Calm' feature 1")

    (tmp_path / "a_file").write_text("")
    with pytest.raises(NotADirectoryError, match="is a file"):
        AnimaRuntime(model, tok, sae, state_dir=tmp_path / "a_file")

    with AnimaRuntime(model, tok, sae, state_dir=tmp_path / "ok") as runtime:  # bad input: refused, nothing saved
        for bad in (dict(mode="Nope"), dict(max_new_tokens=0)):
            with pytest.raises((ValueError, TypeError)):
                runtime.respond("Hello.", **bad)
        assert runtime.turns == 0 and not (tmp_path / "ok" / "anima.json").exists()


def test_a_torn_last_log_line_is_dropped_and_the_next_record_kept(trained, tmp_path):
    model, tok, sae, _ = trained
    with AnimaRuntime(model, tok, sae, state_dir=tmp_path) as runtime:
        runtime.respond("Hello, friend.", max_new_tokens=4)
    with open(tmp_path / "memories.jsonl", "a") as log:
        log.write('{"turn": 2, "user": "half a rec')  # a crash mid-append
    with AnimaRuntime(model, tok, sae, state_dir=tmp_path) as runtime:
        runtime.respond("Still here?", max_new_tokens=4)
    assert [m["turn"] for m in persist.read_jsonl(tmp_path / "memories.jsonl")] == [1, 2]


@pytest.mark.slow
def test_sigkill_mid_chat_leaves_one_consistent_turn_and_no_lock(trained, tmp_path):
    """``kill -9`` a chat session at moments spread over its turns, three times: each time the next session starts
    (the dead one's lock is gone), and anima.json, the reservoir and memories.jsonl describe the same turn."""
    import signal
    import subprocess
    import time

    model, tok, sae, sae_dir = trained
    cmd, state = _chat_command(model, tok, sae_dir, tmp_path)
    turns = 0
    for delay in (0.05, 0.4, 1.1):
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc.stdin.write(b"What a gentle day, friend.\n" * 400)
        proc.stdin.flush()
        deadline = time.time() + 120
        while time.time() < deadline:  # at least one new turn committed, then the kill lands somewhere later
            if (state / "anima.json").exists() and persist.load_json(state / "anima.json")["turns"] > turns:
                break
            time.sleep(0.05)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        with AnimaRuntime(model, tok, sae, state_dir=state) as runtime:
            memories = [m["turn"] for m in persist.read_jsonl(state / "memories.jsonl")]
            assert memories == list(range(1, runtime.turns + 1))
            assert runtime.turns > turns
            turns = runtime.turns
        assert not list(state.glob(".*.tmp"))
