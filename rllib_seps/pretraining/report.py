"""The pretraining report: a short text for the console, JSON for tools, a PNG of the embeddings.

:func:`publish_report` is the one way every route (callback, ``with_sharing``, ``rllib train``)
shows it: printed, written, and the path of every file written printed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rllib_seps.options import SePSOptions
from rllib_seps.sharing.adaps import format_mask_report
from rllib_seps.pretraining.pipeline import PretrainingResult

REPORT_JSON = "seps_report.json"
EMBEDDINGS_PNG = "seps_embeddings.png"


def format_options(options: SePSOptions) -> str:
    """``strategy=...`` and every option that differs from its default, as ``key=value``."""
    defaults = SePSOptions().to_dict()
    chosen = {k: v for k, v in options.to_dict().items() if k == "strategy" or v != defaults[k]}
    return ", ".join(f"{k}={v!r}" for k, v in chosen.items())


def format_report(result: PretrainingResult) -> str:
    """A few lines: the options, clusters with their agents, how K was chosen, data and time used."""
    s = result.summary()
    lines = [f"SePS: {s['n_agents']} agents -> {s['k']} cluster(s); {s['k_reason']}",
             f"  options (others at their defaults): {format_options(result.options)}"]
    if s["score_per_k"]:
        better = "higher" if s["k_criterion"] == "silhouette" else "lower"
        scores = ", ".join(f"K={k}: {v:.3f}" for k, v in s["score_per_k"].items())
        lines.append(f"  {s['k_criterion']} per K ({better} is better): {scores}")
    for module_id, agents in s["clusters"].items():
        shown = ", ".join(map(str, agents[:8])) + (f", ... ({len(agents)} agents)" if len(agents) > 8 else "")
        lines.append(f"  {module_id}: {shown}")
    t = s["timings_s"]
    lines.append(f"  {s['transitions_total']} transitions ({s['transitions_per_agent']} per agent); "
                 f"rollouts {t['rollouts']:.1f}s, encoder {t['encoder']:.1f}s, "
                 f"clustering {t['clustering']:.1f}s, total {t['total']:.1f}s")
    if s.get("adaps_masks"):
        lines.append(format_mask_report(s["adaps_masks"]))
    return "\n".join(lines)


def plot_embeddings(result: PretrainingResult, path: str | Path) -> Path:
    """Draws the agents' embedding means in 2-D (PCA), coloured by cluster (figure 6 of the paper)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means = result.embeddings.means
    centred = means - means.mean(0)
    # PCA by SVD; with a 1-D latent or one agent the second axis is zero.
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    if xy.shape[1] < 2:
        xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
    fig, ax = plt.subplots(figsize=(6, 5))
    scatter = ax.scatter(xy[:, 0], xy[:, 1], c=result.labels, cmap="tab10", s=40,
                         vmin=0, vmax=max(9, result.clustering.k - 1))
    if len(result.agent_ids) <= 40:
        for (x, y), agent in zip(xy, result.agent_ids):
            ax.annotate(str(agent), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.legend(*scatter.legend_elements(), title="cluster", fontsize=7, loc="best")
    ax.set_title(f"SePS agent embeddings (PCA of means), K={result.clustering.k}")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(result: PretrainingResult, directory: str | Path) -> dict[str, Path]:
    """Writes ``seps_report.json`` and ``seps_embeddings.png`` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / REPORT_JSON
    json_path.write_text(json.dumps(result.summary(), indent=2))
    return {"json": json_path, "png": plot_embeddings(result, directory / EMBEDDINGS_PNG)}


def publish_report(result: PretrainingResult, directory: str | Path | None) -> dict[str, Path]:
    """Prints the report, writes it into ``directory`` and prints the path of every file written.

    Args:
        result: What pretraining found.
        directory: Where to write ``seps_report.json`` and ``seps_embeddings.png``; None writes
            nothing (and says how to get the files).

    Returns:
        The files written (``json``, ``png``), empty when ``directory`` is None.
    """
    print(format_report(result), flush=True)
    if directory is None:
        print("SePS report not written: set the option report_dir to keep it.", flush=True)
        return {}
    files = write_report(result, directory)
    print(f"SePS report written: {files['json']}, {files['png']}", flush=True)
    return files
