"""The pretraining report: a short text for the console, JSON for tools, a PNG of the embeddings.

:func:`publish_report` is the one way every route (callback, ``with_sharing``, ``rllib train``)
shows it: printed, written, and the path of every file written printed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA

from rllib_seps.options import SePSOptions
from rllib_seps.pretraining.pipeline import PretrainingResult
from rllib_seps.sharing.adaps import format_mask_report

REPORT_JSON = "seps_report.json"
EMBEDDINGS_PNG = "seps_embeddings.png"
NAMED_AGENTS = 12
"""Up to this many agents the plot names every agent; above, it names clusters only."""


def format_options(options: SePSOptions) -> str:
    """``strategy=...`` and every option that differs from its default, as ``key=value``."""
    defaults = SePSOptions().seeded(None).to_dict()
    chosen = {k: v for k, v in options.to_dict().items() if k == "strategy" or v != defaults[k]}
    return ", ".join(f"{k}={v!r}" for k, v in chosen.items())


def format_report(result: PretrainingResult) -> str:
    """A few lines: clusters with their agents, how K was chosen and how sure, data and time used,
    and the options that differ from the defaults."""
    s = result.summary()
    confidence = "confident" if s["confident"] else "LOW CONFIDENCE"
    lines = [f"SePS: {s['n_agents']} agents -> {s['k']} cluster(s), {confidence}; {s['k_reason']}",
             f"  options (others at their defaults): {format_options(result.options)}"]
    for module_id, agents in s["clusters"].items():
        shown = ", ".join(map(str, agents[:8])) + (f", ... ({len(agents)} agents)" if len(agents) > 8 else "")
        lines.append(f"  {module_id}: {shown}")
    t = s["timings_s"]
    converged = s["encoder_converged"] or result.options.updates != "auto"  # a given number just runs
    rounds = " -> ".join(str(r["transitions_per_agent"]) for r in s["rounds"])
    lines.append(f"  {s['transitions_total']} transitions ({s['transitions_per_agent']} per agent; rounds "
                 f"{rounds}), noise {result.clustering.noise_rms:.3f}, encoder {s['encoder_updates']} "
                 f"updates{' (not converged)' if not converged else ''}; rollouts "
                 f"{t['rollouts']:.1f}s, encoder {t['encoder']:.1f}s, clustering {t['clustering']:.1f}s, "
                 f"total {t['total']:.1f}s")
    if s.get("execution"):
        lines.append(f"  execution: {s['execution']}")
    if s.get("adaps_masks"):
        lines.append(format_mask_report(s["adaps_masks"]))
    return "\n".join(lines)


def plot_embeddings(result: PretrainingResult, path: str | Path) -> Path:
    """Draws what k-means clustered, in its first two principal components: each agent's point
    (large, coloured by cluster) and its decoys' points (small), whose scatter is the noise the
    decision for K was measured against (figure 6 of the paper, with the noise shown)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clustering = result.clustering
    points, decoys = clustering.features, clustering.decoy_features
    n, s, _ = decoys.shape
    dims = min(2, n * s, points.shape[1])
    pca = PCA(n_components=dims).fit(decoys.reshape(n * s, -1))
    xy, decoy_xy = (np.pad(pca.transform(x), ((0, 0), (0, 2 - dims)))
                    for x in (points, decoys.reshape(n * s, -1)))
    colours = plt.get_cmap("tab10")(np.asarray(result.labels) % 10)
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.scatter(decoy_xy[:, 0], decoy_xy[:, 1], c=np.repeat(colours, s, axis=0), s=8, alpha=0.35,
               linewidths=0, label="decoys (the noise)")
    ax.scatter(xy[:, 0], xy[:, 1], c=colours, s=45, edgecolors="black", linewidths=0.5, label="agents")
    if n <= NAMED_AGENTS:
        for (x, y), agent in zip(xy, result.agent_ids):
            ax.annotate(str(agent), (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    else:  # one label per cluster, at its centre
        for module_id in result.mapping.module_ids:
            members = [i for i, a in enumerate(result.agent_ids) if result.mapping.agent_to_module[a] == module_id]
            x, y = xy[members].mean(0)
            ax.annotate(f"{module_id} ({len(members)})", (x, y), fontsize=8, weight="bold",
                        xytext=(6, 6), textcoords="offset points")
    ax.legend(fontsize=7, loc="best")
    what = "decoder behaviour" if result.options.cluster_on == "behaviour" else "embedding means"
    ax.set_title(f"SePS: {what} of {n} agents, K={clustering.k}", fontsize=10)
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
