"""Learning curves from a trial's results (Tune's ``progress.csv`` / ``result.metrics_dataframe``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

LEARNING_CURVE_PNG = "learning_curve.png"

RETURN_COLUMN = "env_runners/episode_return_mean"
MODULE_RETURN_PREFIX = "env_runners/module_episode_returns_mean/"
# Preferred x axes, first found wins.
STEP_COLUMNS = ("env_runners/num_env_steps_sampled_lifetime", "num_env_steps_sampled_lifetime",
                "training_iteration")
# Beyond this many modules (NoPS with many agents) per-module curves are unreadable.
MAX_MODULE_CURVES = 10


def step_column(frame: pd.DataFrame) -> str:
    """The x axis to use: lifetime env steps where recorded, else the training iteration.

    Raises:
        ValueError: If the frame has none of :data:`STEP_COLUMNS`.
    """
    for column in STEP_COLUMNS:
        if column in frame.columns:
            return column
    raise ValueError(f"Results have none of the step columns {STEP_COLUMNS}; columns: "
                     f"{sorted(frame.columns)[:20]}...")


def plot_learning_curve(frame: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Draws the mean episode return (summed over agents) against env steps.

    A second panel shows each module's (cluster's) return where there are at most
    :data:`MAX_MODULE_CURVES` modules.

    Args:
        frame: One row per training iteration, with RLlib's flattened result keys as columns.
        path: Where to write the PNG.
        title: Figure title (e.g. the experiment name).

    Returns:
        The path written.

    Raises:
        ValueError: If the frame has no return or step column.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if RETURN_COLUMN not in frame.columns:
        raise ValueError(f"Results have no {RETURN_COLUMN!r} column (no episode finished yet?).")
    x = step_column(frame)
    modules = sorted(c for c in frame.columns if c.startswith(MODULE_RETURN_PREFIX))
    show_modules = 1 < len(modules) <= MAX_MODULE_CURVES
    fig, axes = plt.subplots(1, 2 if show_modules else 1, figsize=(11 if show_modules else 6, 4),
                             squeeze=False)
    ax = axes[0][0]
    marker = "." if len(frame) < 30 else None
    xlabel = "env steps" if "env_steps" in x else "training iteration"
    ax.plot(frame[x], frame[RETURN_COLUMN], marker=marker)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("episode return (sum over agents)")
    ax.grid(alpha=0.3)
    if show_modules:
        ax = axes[0][1]
        for column in modules:
            ax.plot(frame[x], frame[column], marker=marker, label=column[len(MODULE_RETURN_PREFIX):])
        ax.set_xlabel(xlabel)
        ax.set_ylabel("episode return per module")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
