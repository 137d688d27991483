"""Plugin ``diffusion``: an Identity Block that denoises the identity from fresh noise (``block: diffusion``).

Anatomy: config.py (DiffusionBlockConfig), layer.py (Denoiser, DiffusionIdentityBlock),
analysis.py (diversity, stability and cost of introspection rounds; the local evaluate
module in metrics/), cli.py (``hfself diffusion``); this module holds the hook
implementations and imports the rest on first use. Persona blending (any block) is the
identity plugin's.
"""

from hfself import hookimpl
from hfself.lazy import lazy_exports

_EXPORTS = {"DiffusionBlockConfig": ".config", "Denoiser": ".layer", "DiffusionIdentityBlock": ".layer"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)


@hookimpl
def hfself_register_identity_blocks(register):
    from .layer import DiffusionIdentityBlock

    register("diffusion", DiffusionIdentityBlock)


@hookimpl
def hfself_register_commands(cli):
    from .cli import register_commands

    register_commands(cli)
