"""matplotlib for files, not windows: every hfself plot goes through here."""

from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (works headless, in CI and under accelerate)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> None:
    """Lay out, write (PNG, 100 dpi) and close a figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
