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
        line, = ax.plot(fit["x"], fit["after"], "-", label=f"after {steps} steps")
        if fit.get("after_std") is not None:  # a particle ensemble: its 95% predictive interval
            low, high = fit["after"] - 1.96 * fit["after_std"], fit["after"] + 1.96 * fit["after_std"]
            ax.fill_between(fit["x"], low, high, color=line.get_color(), alpha=0.2, label="95% predictive interval")
        ax.plot(fit["support_x"], fit["support_y"], "^", label="support points")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def trial_curves(curves: dict, quantity: str, unit: str):
    """RL^2 against the baselines on the same held-out trials: one mean cumulative ``quantity`` curve each."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        ax.plot(range(1, len(curve) + 1), curve, lw=2.5 if name == "RL^2" else 1.2, label=name)
    ax.set_xlabel(unit)
    ax.set_ylabel(f"mean cumulative {quantity}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def episode(support_x, support_y, query_x, query_y, predicted, shown: int = 8):
    """A held-out episode: the support images per class, then queries with the adapted model's guesses.

    Queries are titled "guess/true", green when right and red when wrong.
    """
    ways = int(support_y.max()) + 1
    columns = max(ways, shown)
    fig, axes = plt.subplots(2, columns, figsize=(1.1 * columns, 2.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for c in range(ways):
        _show(axes[0][c], support_x[support_y == c][0], f"class {c}", "black")
    for i in range(min(shown, len(query_x))):
        right = int(predicted[i]) == int(query_y[i])
        _show(axes[1][i], query_x[i], f"{int(predicted[i])}/{int(query_y[i])}", "green" if right else "red")
    axes[0][0].set_ylabel("support")
    fig.suptitle("support (top), queries: guess/true (bottom)", fontsize=8)
    fig.tight_layout()
    return fig


def _show(ax, image, title: str, color: str) -> None:
    channels_last = image.permute(1, 2, 0).numpy()
    ax.imshow(channels_last.squeeze(-1) if channels_last.shape[-1] == 1 else channels_last, cmap="gray")
    ax.set_title(title, fontsize=7, color=color)


def tuning(rows: list[dict], keys: list[str], metric: str, log_keys: list[str]):
    """The tuning metric against each searched hyperparameter, one point per trial (hollow: stopped early)."""
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.4), squeeze=False, sharey=True)
    scored = [r for r in rows if r["value"] is not None]
    for ax, key in zip(axes[0], keys):
        for early, style in ((False, {}), (True, {"facecolors": "none"})):
            chosen = [r for r in scored if r["stopped_early"] == early and not isinstance(r["config"].get(key), list)]
            ax.scatter([r["config"].get(key) for r in chosen], [r["value"] for r in chosen], edgecolors="C0",
                       label="stopped early" if early else "ran to the end", **style)
        if key in log_keys:
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{metric} (last reported)")
    if metric.endswith("mse"):
        axes[0][0].set_yscale("log")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig
