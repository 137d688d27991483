"""Plugin ``anima``: an SAE control layer on a frozen LLM's residual stream, with a persistent reservoir.

Anatomy: config.py (AnimaConfig), sae.py (load a sae-lens SAE, or train one on the model's
activations), layer.py (SAESteering: the residual-stream hook), reservoir.py (Reservoir,
LexiconValence), prism.py (steering modes: built-ins, discovery, router), runtime.py
(AnimaRuntime: talking, metabolism, persistence), experiments.py (the research questions);
this module holds the hook implementations and ``hfself anima``.
"""

from hfself import hookimpl

from .config import AnimaConfig
from .layer import SAEDimensionError, SAESteering
from .prism import BUILTIN_MODES, PrismRouter, discover_mode
from .reservoir import LexiconValence, Reservoir
from .runtime import AnimaRuntime
from .sae import load_sae, train_sae

CHAT_HELP = "/mode NAME (force), /mode auto (route by intent), /mode off, /sleep, /status, /quit"

__all__ = ["AnimaConfig", "AnimaRuntime", "BUILTIN_MODES", "LexiconValence", "PrismRouter", "Reservoir",
           "SAEDimensionError", "SAESteering", "discover_mode", "load_sae", "train_sae"]


@hookimpl
def hfself_register_commands(cli):
    anima = cli.add_parser("anima", help="Anima SAE control layer").add_subparsers(dest="anima_command")
    p = anima.add_parser("train-sae", help="train a small SAE on a model's residual stream (sae-lens)")
    p.add_argument("--model", default=None, help="Hub id or directory (default: the embedded tiny model)")
    p.add_argument("--layer", type=int, default=None, help="decoder layer whose output is read (default: middle)")
    p.add_argument("--d_sae", type=int, default=512)
    p.add_argument("--corpus", default="shakespeare", help="'shakespeare', 'python', 'neutral' or a text file")
    p.add_argument("--texts", type=int, default=400, help="text chunks to read activations from")
    p.add_argument("--training_tokens", type=int, default=200_000)
    p.add_argument("--output", required=True, help="directory for the SAE (cfg.json + sae_weights.safetensors)")
    p.set_defaults(func=_cmd_train_sae)
    p = anima.add_parser("discover-mode", help="find a Prism mode's SAE features from two contrastive prompt files "
                                               "and save it in the state directory's modes.json")
    p.add_argument("--model", default=None, help="Hub id or directory (default: the embedded tiny model)")
    p.add_argument("--sae", required=True, help="SAE directory or release:sae_id")
    p.add_argument("--state-dir", dest="state_dir", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--description", required=True, help="what the mode is for (the router matches intents to it)")
    p.add_argument("--positive", required=True, help="text file, one prompt per line, showing the trait")
    p.add_argument("--negative", required=True, help="text file, one prompt per line, without it")
    p.add_argument("--suppress", action="store_true", help="negative steering: push these features down")
    p.add_argument("--top_k", type=int, default=8)
    p.add_argument("--strength", type=float, default=4.0)
    p.set_defaults(func=_cmd_discover_mode)
    p = anima.add_parser("chat", help="talk through Anima: one line per turn (stdin, or --interactive); "
                                      "/mode NAME|auto|off, /sleep, /status")
    p.add_argument("--model", default=None, help="Hub id or directory (default: the embedded tiny model)")
    p.add_argument("--sae", required=True, help="SAE directory or release:sae_id")
    p.add_argument("--state-dir", dest="state_dir", required=True, help="the personality lives here")
    p.add_argument("--interactive", action="store_true", help="prompt for each line")
    p.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    p.add_argument("--cot", action="store_true", help="ask for step-by-step answers")
    p.add_argument("--max_new_tokens", type=int, default=64)
    p.add_argument("--do_sample", action="store_true")
    p.set_defaults(func=_cmd_chat)
    p = anima.add_parser("research", help="the seed's questions: vector stability, negative-steering efficiency, "
                                          "identity drift over sleep cycles (JSON + PNG)")
    p.add_argument("question", choices=["stability", "negation", "drift"])
    p.add_argument("--model", default=None, help="Hub id or directory (default: the embedded tiny model)")
    p.add_argument("--sae", required=True, help="SAE directory or release:sae_id")
    p.add_argument("--state-dir", dest="state_dir", required=True)
    p.add_argument("--output_dir", default=".")
    p.add_argument("--cycles", type=int, default=6, help="drift: sleep cycles")
    p.set_defaults(func=_cmd_research)


def _cmd_train_sae(args) -> int:
    from hfself.arch import inspect_model
    from hfself.data import DEFAULT_MODEL, corpus_text, text_chunks
    from hfself.train import load_causal_lm

    model, tokenizer = load_causal_lm(args.model or DEFAULT_MODEL)
    layer = inspect_model(model).num_layers // 2 if args.layer is None else args.layer
    texts = text_chunks(corpus_text(args.corpus), 400, args.texts)
    sae = train_sae(model.eval(), tokenizer, texts, layer, d_sae=args.d_sae, training_tokens=args.training_tokens)
    sae.save_model(args.output)
    print(f"SAE (layer {layer}, d_in {sae.cfg.d_in}, d_sae {sae.cfg.d_sae}) written to {args.output}")
    return 0


def _cmd_discover_mode(args) -> int:
    import json
    from pathlib import Path

    from hfself.data import DEFAULT_MODEL
    from hfself.train import load_causal_lm

    model, tokenizer = load_causal_lm(args.model or DEFAULT_MODEL)
    runtime = AnimaRuntime(model, tokenizer, load_sae(args.sae), state_dir=args.state_dir)
    lines = lambda f: [line.strip() for line in Path(f).read_text(encoding="utf-8").splitlines() if line.strip()]
    mode = runtime.add_mode(args.name, {"description": args.description, "positive": lines(args.positive),
                                        "negative": lines(args.negative), "suppress": args.suppress,
                                        "top_k": args.top_k, "strength": args.strength})
    runtime.close()
    print(json.dumps({"mode": args.name, "features": mode["features"]}, indent=2))
    return 0


def _cmd_chat(args) -> int:
    import json
    import sys

    from transformers import TextStreamer

    from hfself.data import DEFAULT_MODEL
    from hfself.train import load_causal_lm

    model, tokenizer = load_causal_lm(args.model or DEFAULT_MODEL)
    runtime = AnimaRuntime(model, tokenizer, load_sae(args.sae), state_dir=args.state_dir)
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True) if args.stream else None
    routing = "keep"
    lines = iter(lambda: input("you> "), None) if args.interactive else (line.rstrip("\n") for line in sys.stdin)
    if args.interactive:
        print(CHAT_HELP)
    try:
        for line in lines:
            line = line.strip()
            if not line:
                continue
            if line == "/quit":
                break
            if line.startswith("/mode"):
                name = line[len("/mode"):].strip() or "off"
                routing = "auto" if name == "auto" else "keep"
                runtime.set_mode(None if name in ("off", "auto") else name)
                print(f"[mode: {name}]")
            elif line == "/sleep":
                print(f"[slept; self_model: {runtime.sleep()['self_model']}]")
            elif line == "/status":
                print(json.dumps(runtime.status()))
            else:
                sleeps = runtime.sleeps
                if args.stream:
                    print("anima> ", end="", flush=True)
                reply = runtime.respond(line, args.max_new_tokens, args.do_sample, mode=routing, streamer=streamer,
                                        cot=args.cot)
                if not args.stream:
                    print(f"anima> {reply}")
                if runtime.sleeps > sleeps:
                    print(f"[tired: slept; self_model: {runtime.self_model}]")
    except EOFError:
        pass
    finally:
        runtime.close()
    return 0


def _cmd_research(args) -> int:
    import json

    from hfself.data import DEFAULT_MODEL
    from hfself.train import load_causal_lm

    from . import experiments

    model, tokenizer = load_causal_lm(args.model or DEFAULT_MODEL)
    runtime = AnimaRuntime(model, tokenizer, load_sae(args.sae), state_dir=args.state_dir)
    try:
        if args.question == "stability":
            result, name = experiments.vector_stability(runtime), "vector_stability"
        elif args.question == "negation":
            result, name = experiments.negative_steering_efficiency(runtime), "negative_steering"
        else:
            result, name = experiments.identity_drift(runtime, cycles=args.cycles), "identity_drift"
    finally:
        runtime.close()
    files = experiments.write(result, name, args.output_dir)
    summary = {k: v for k, v in result.items() if not isinstance(v, list)}
    print(json.dumps({**summary, "written": {k: str(v) for k, v in files.items()}}, indent=2, default=str))
    return 0
