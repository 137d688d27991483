"""``hfself anima``: train an SAE, discover a mode, chat, and the research questions."""

from __future__ import annotations

import json
import sys
from pathlib import Path

CHAT_HELP = """commands (case does not matter):
  /mode NAME   force a steering mode        /mode auto   route each turn by intent
  /mode off    no mode steering             /modes       list the modes
  /sleep       consolidate now              /status      reservoir, fatigue, mode
  /help        this list                    /quit        save and leave (also Ctrl-D, Ctrl-C)
anything else is said to the model"""


def register_commands(cli) -> None:
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
                                      "/help lists the commands")
    p.add_argument("--model", default=None, help="Hub id or directory (default: the embedded tiny model)")
    p.add_argument("--sae", required=True, help="SAE directory or release:sae_id")
    p.add_argument("--state-dir", dest="state_dir", required=True, help="the personality lives here")
    p.add_argument("--interactive", action="store_true", help="prompt for each line")
    p.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    p.add_argument("--cot", action="store_true", help="ask for step-by-step answers")
    p.add_argument("--max_new_tokens", type=int, default=64)
    p.add_argument("--do_sample", action="store_true")
    p.set_defaults(func=_cmd_chat)
    p = anima.add_parser("research", help="the research questions: vector stability, negative-steering "
                                          "efficiency, identity drift over sleep cycles (JSON + PNG)")
    p.add_argument("question", choices=["stability", "negation", "drift"])
    p.add_argument("--model", default=None, help="Hub id or directory (default: the embedded tiny model)")
    p.add_argument("--sae", required=True, help="SAE directory or release:sae_id")
    p.add_argument("--state-dir", dest="state_dir", required=True)
    p.add_argument("--output_dir", default="outputs/anima_research")
    p.add_argument("--cycles", type=int, default=6, help="drift: sleep cycles")
    p.set_defaults(func=_cmd_research)


def _runtime(args):
    """Model, tokenizer and an AnimaRuntime on ``args.state_dir``; a busy state dir is a one-line exit."""
    from hfself.data import DEFAULT_MODEL
    from hfself.train import load_causal_lm

    from .runtime import AnimaRuntime, StateDirBusyError
    from .sae import load_sae

    model, tokenizer = load_causal_lm(args.model or DEFAULT_MODEL)
    try:
        return AnimaRuntime(model, tokenizer, load_sae(args.sae), state_dir=args.state_dir), tokenizer
    except StateDirBusyError as err:
        raise SystemExit(f"hfself anima: {err}") from None


def _cmd_train_sae(args) -> int:
    from hfself.arch import inspect_model
    from hfself.data import DEFAULT_MODEL, corpus_text, text_chunks
    from hfself.train import load_causal_lm

    from .sae import train_sae

    model, tokenizer = load_causal_lm(args.model or DEFAULT_MODEL)
    layer = inspect_model(model).num_layers // 2 if args.layer is None else args.layer
    texts = text_chunks(corpus_text(args.corpus), 400, args.texts)
    sae = train_sae(model.eval(), tokenizer, texts, layer, d_sae=args.d_sae, training_tokens=args.training_tokens)
    sae.save_model(args.output)
    print(f"SAE (layer {layer}, d_in {sae.cfg.d_in}, d_sae {sae.cfg.d_sae}) written to {args.output}")
    return 0


def _cmd_discover_mode(args) -> int:
    runtime, _ = _runtime(args)
    lines = lambda f: [line.strip() for line in Path(f).read_text(encoding="utf-8").splitlines() if line.strip()]
    try:
        mode = runtime.add_mode(args.name, {"description": args.description, "positive": lines(args.positive),
                                            "negative": lines(args.negative), "suppress": args.suppress,
                                            "top_k": args.top_k, "strength": args.strength})
    finally:
        runtime.close()
    print(json.dumps({"mode": args.name, "features": mode["features"]}, indent=2))
    return 0


def _command(runtime, line: str) -> tuple[str | None, str | None]:
    """Run a chat command; returns (what to print, the new routing or None to keep it). Raises StopIteration
    for /quit. A mistyped command or mode prints a hint and changes nothing."""
    word, _, rest = line[1:].partition(" ")
    word, rest = word.casefold(), rest.strip()
    if word in ("quit", "exit", "q"):
        raise StopIteration
    if word in ("help", "h", "?"):
        return CHAT_HELP, None
    if word == "modes":
        return f"[modes: {', '.join(sorted(runtime.modes))}]", None
    if word == "mode":
        name = rest or "off"
        if name.casefold() in ("off", "auto"):
            runtime.set_mode(None)
            return f"[mode: {name.casefold()}]", "auto" if name.casefold() == "auto" else "keep"
        try:
            runtime.set_mode(name)
        except ValueError as err:
            return f"[{err}; /mode auto routes by intent, /mode off turns modes off]", None
        return f"[mode: {runtime.mode}]", "keep"
    if word == "sleep":
        return f"[slept; self_model: {runtime.sleep()['self_model']}]", None
    if word == "status":
        return json.dumps(runtime.status()), None
    return f"[unknown command /{word}; /help lists the commands]", None


def _cmd_chat(args) -> int:
    from transformers import TextStreamer

    runtime, tokenizer = _runtime(args)
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
            if line.startswith("/"):
                text, new_routing = _command(runtime, line)
                routing = new_routing or routing
                print(text)
                continue
            sleeps = runtime.sleeps
            if args.stream:
                print("anima> ", end="", flush=True)
            reply = runtime.respond(line, args.max_new_tokens, args.do_sample, mode=routing, streamer=streamer,
                                    cot=args.cot)
            if not args.stream:
                print(f"anima> {reply}")
            if runtime.sleeps > sleeps:
                print(f"[tired: slept; self_model: {runtime.self_model}]")
    except (EOFError, StopIteration):
        pass
    except KeyboardInterrupt:  # every finished turn is already saved; the one cut short is dropped
        print("\n[interrupted: the finished turns are saved]")
    finally:
        runtime.close()
    return 0


def _cmd_research(args) -> int:
    from . import analysis

    runtime, _ = _runtime(args)
    try:
        if args.question == "stability":
            result, name = analysis.vector_stability(runtime), "vector_stability"
        elif args.question == "negation":
            result, name = analysis.negative_steering_efficiency(runtime), "negative_steering"
        else:
            result, name = analysis.identity_drift(runtime, cycles=args.cycles), "identity_drift"
    finally:
        runtime.close()
    files = analysis.write(result, name, args.output_dir)
    summary = {k: v for k, v in result.items() if not isinstance(v, list)}
    print(json.dumps({**summary, "written": {k: str(v) for k, v in files.items()}}, indent=2, default=str))
    return 0
