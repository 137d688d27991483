"""matplotlib for files, not windows: every hfself plot goes through here."""

from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (works headless, in CI and under accelerate)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
