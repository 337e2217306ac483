"""k-means on the encoder means, with a given K or an automatic K that can also answer K=1.

Automatic K, in two steps:

1. Are the agents distinguishable at all? Two agents are, when their embedding means are further
   apart than ``separation_threshold`` posterior standard deviations: closer than that, the
   decoder receives overlapping z for them and cannot tell them apart. If no pair is, K=1. (The
   reference code could not answer K=1, and failed for N=2.)
2. Otherwise K is the one with the lowest Davies-Bouldin score over K in 2..N-1 (the paper's
   choice); with N=2 distinguishable agents, K=2.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import davies_bouldin_score

from rllib_seps.encoder import Embeddings


@dataclass
class Clustering:
    """The partition of agents into clusters.

    Attributes:
        labels: ``(N,)`` cluster index of each agent (agents in sorted order). Clusters are
            numbered by their first agent, so the numbering does not depend on k-means' order.
        k: Number of clusters.
        scores: Davies-Bouldin score of every K tried (lower is better); empty for a given K.
        separation: Largest distance between two agents' means, in posterior standard deviations.
        reason: Why this K was chosen, in words.
    """

    labels: np.ndarray
    k: int
    scores: dict[int, float] = field(default_factory=dict)
    separation: float = 0.0
    reason: str = ""


def _separation(means: np.ndarray, stds: np.ndarray) -> float:
    if len(means) < 2:
        return 0.0
    scale = np.sqrt((stds[:, None] ** 2 + stds[None] ** 2) / 2)
    return float(np.linalg.norm((means[:, None] - means[None]) / scale, axis=-1).max())


def _kmeans(means: np.ndarray, k: int, seed: int) -> np.ndarray:
    if k == 1:
        return np.zeros(len(means), np.int64)
    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(means)
    # Renumber clusters in order of their first agent: cluster_0 holds agent 0.
    order = {old: new for new, old in enumerate(dict.fromkeys(labels.tolist()))}
    return np.array([order[label] for label in labels], np.int64)


def cluster_agents(embeddings: Embeddings, n_clusters: int | str = "auto", *,
                   max_clusters: int | None = None, separation_threshold: float = 2.0,
                   seed: int = 0) -> Clustering:
    """Clusters agents by their embedding means.

    Args:
        embeddings: The trained encoder's per-agent posteriors.
        n_clusters: K, or ``"auto"``.
        max_clusters: Largest K that ``"auto"`` considers (default N - 1).
        separation_threshold: See the module docstring.
        seed: k-means seed; the same seed gives the same clusters.

    Raises:
        ValueError: If K is larger than the number of agents or smaller than 1.
    """
    means, n = embeddings.means, len(embeddings.means)
    separation = _separation(means, embeddings.stds)
    if n_clusters != "auto":
        k = int(n_clusters)
        if not 1 <= k <= n:
            raise ValueError(
                f"n_clusters={k} is invalid for {n} agents: it must lie in 1..{n}. Use "
                'n_clusters="auto" to choose K from the embeddings.'
            )
        if k in (1, n) and n > 1:
            what = "one module for all agents (full sharing)" if k == 1 else "one module per agent (no sharing)"
            warnings.warn(f"n_clusters={k} with {n} agents gives {what}.", stacklevel=2)
        return Clustering(_kmeans(means, k, seed), k, separation=separation,
                          reason=f"K={k} was given.")

    if separation < separation_threshold:
        return Clustering(np.zeros(n, np.int64), 1, separation=separation, reason=(
            f"no two agents' embeddings are more than {separation_threshold:g} posterior std apart "
            f"(largest: {separation:.2f}), so the agents are alike: K=1."))
    if n == 2:
        return Clustering(np.array([0, 1]), 2, separation=separation, reason=(
            f"the two agents' embeddings are {separation:.2f} posterior std apart "
            f"(> {separation_threshold:g}): K=2."))
    top = min(n - 1, max_clusters or n - 1)
    scores, labelings = {}, {}
    for k in range(2, top + 1):
        labelings[k] = _kmeans(means, k, seed)
        scores[k] = float(davies_bouldin_score(means, labelings[k]))
    best = min(scores, key=lambda k: (scores[k], k))
    return Clustering(labelings[best], best, scores=scores, separation=separation, reason=(
        f"agents are distinguishable (embeddings up to {separation:.2f} posterior std apart); "
        f"K={best} has the lowest Davies-Bouldin score ({scores[best]:.3f}) of K in 2..{top}."))
