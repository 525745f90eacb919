"""Figures logged as run artifacts (matplotlib, no display needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def learning_curve(train: tuple, validation: tuple, metric: str):
    """Meta-training loss and held-out validation metric against the step."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(*train, label="meta-train query loss", alpha=0.7)
    if validation[0]:
        ax.plot(*validation, "o-", label=f"validation {metric} (after adaptation)")
    ax.set_xlabel("meta-step")
    if metric == "mse":
        ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def sinusoid_fits(fits: list[dict], steps: int):
    """Each held-out sine: truth, meta-model, and the model after ``steps`` steps on K points."""
    fig, axes = plt.subplots(1, len(fits), figsize=(4 * len(fits), 3.2), squeeze=False)
    for ax, fit in zip(axes[0], fits):
        ax.plot(fit["x"], fit["truth"], "k-", label="ground truth")
        ax.plot(fit["x"], fit["before"], ":", label="meta-model (before)")
        ax.plot(fit["x"], fit["after"], "-", label=f"after {steps} steps")
        ax.plot(fit["support_x"], fit["support_y"], "^", label="support points")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig
