"""Plugin ``anima``: an SAE control layer on a frozen LLM's residual stream, with a persistent reservoir.

Anatomy: config.py (AnimaConfig), sae.py (load a sae-lens SAE, or train one on the model's
activations), layer.py (SAESteering: the residual-stream hook), reservoir.py (Reservoir,
LexiconValence), runtime.py (AnimaRuntime); this module holds the hook implementations and
``hfself anima``. Prism modes, the metabolism (fatigue, sleep, self_model), ``anima chat``
and the research commands are not built yet.
"""

from hfself import hookimpl

from .config import AnimaConfig
from .layer import SAEDimensionError, SAESteering
from .reservoir import LexiconValence, Reservoir
from .runtime import AnimaRuntime
from .sae import load_sae, train_sae

__all__ = ["AnimaConfig", "AnimaRuntime", "LexiconValence", "Reservoir", "SAEDimensionError", "SAESteering",
           "load_sae", "train_sae"]


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
