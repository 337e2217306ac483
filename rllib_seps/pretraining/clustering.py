"""k-means on the agents' embeddings, with a given K or an automatic K that can also answer K=1.

What is clustered (``cluster_on``): by default each agent's *behaviour*, the decoder's predicted
next observation and reward at the agent's mean z on a shared probe set. Agents of one type share
a behaviour even when their means landed in different spots of the region of z that decodes to
it, so behaviour separates types more cleanly than the raw means (``cluster_on="means"``, the
paper's choice, is kept).

Automatic K, in two steps:

1. Are the agents distinguishable at all? The *spread* is the largest root-mean-square difference
   between two agents' behaviours, relative to the standard deviation of the predictions. When
   the decoder ignores z (alike agents) it is near 0; below ``separation_threshold`` we answer
   K=1. (The reference code could not answer K=1, and failed for N=2.)
2. Otherwise K is the best-scoring K in 2..N-1 (silhouette by default, Davies-Bouldin as in the
   paper); with N=2 distinguishable agents, K=2.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import davies_bouldin_score, silhouette_score

from rllib_seps.pretraining.encoder import Embeddings


@dataclass
class Clustering:
    """The partition of agents into clusters.

    Attributes:
        labels: ``(N,)`` cluster index of each agent (agents in sorted order). Clusters are
            numbered by their first agent, so the numbering does not depend on k-means' order.
        k: Number of clusters.
        scores: Score of every K tried by automatic K (see ``criterion``); empty for a given K.
        criterion: ``silhouette`` (higher is better) or ``davies_bouldin`` (lower is better).
        spread: How different the most different two agents' behaviours are (see above).
        reason: Why this K was chosen, in words.
    """

    labels: np.ndarray
    k: int
    scores: dict[int, float] = field(default_factory=dict)
    criterion: str = "silhouette"
    spread: float = 0.0
    reason: str = ""


def behaviour_spread(behaviour: np.ndarray) -> float:
    """Largest RMS difference between two agents' behaviours, relative to the predictions' std."""
    if len(behaviour) < 2:
        return 0.0
    scale = behaviour.std() + 1e-8
    sq = (behaviour**2).sum(1)
    dist2 = np.maximum(sq[:, None] + sq[None] - 2 * behaviour @ behaviour.T, 0)
    return float(np.sqrt(dist2.max() / behaviour.shape[1]) / scale)


def _kmeans(means: np.ndarray, k: int, seed: int) -> np.ndarray:
    if k == 1:
        return np.zeros(len(means), np.int64)
    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(means)
    # Renumber clusters in order of their first agent: cluster_0 holds agent 0.
    order = {old: new for new, old in enumerate(dict.fromkeys(labels.tolist()))}
    return np.array([order[label] for label in labels], np.int64)


def cluster_agents(embeddings: Embeddings, n_clusters: int | str = "auto", *,
                   cluster_on: str = "behaviour", k_criterion: str = "silhouette",
                   max_clusters: int = 16, separation_threshold: float = 0.01,
                   seed: int = 0) -> Clustering:
    """Clusters agents by their behaviour (or embedding means).

    Args:
        embeddings: The trained encoder's per-agent posteriors and behaviours.
        n_clusters: K, or ``"auto"``.
        cluster_on: ``"behaviour"`` or ``"means"``.
        k_criterion: ``"silhouette"`` or ``"davies_bouldin"``, for automatic K.
        max_clusters: Largest K that ``"auto"`` considers (N - 1 at most).
        separation_threshold: Spread below which automatic K answers K=1.
        seed: k-means seed; the same seed gives the same clusters.

    Raises:
        ValueError: If K is larger than the number of agents or smaller than 1.
    """
    features = embeddings.behaviour if cluster_on == "behaviour" else embeddings.means
    n = len(features)
    # N points span at most N dimensions: projecting onto them keeps every pairwise distance (so
    # k-means and the scores are unchanged) and makes them cheap for thousands of features.
    centred = features - features.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    features = centred @ vt.T
    spread = behaviour_spread(embeddings.behaviour)
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
        return Clustering(_kmeans(features, k, seed), k, criterion=k_criterion, spread=spread,
                          reason=f"K={k} was given.")

    if spread < separation_threshold:
        return Clustering(np.zeros(n, np.int64), 1, criterion=k_criterion, spread=spread, reason=(
            f"the agents' modelled behaviours differ by at most {spread:.3f} (< threshold "
            f"{separation_threshold:g}), so they are alike: K=1."))
    if n == 2:
        return Clustering(np.array([0, 1]), 2, criterion=k_criterion, spread=spread, reason=(
            f"the two agents' modelled behaviours differ by {spread:.3f} (> threshold "
            f"{separation_threshold:g}): K=2."))
    top = min(n - 1, max_clusters)
    score = silhouette_score if k_criterion == "silhouette" else davies_bouldin_score
    sign = 1.0 if k_criterion == "silhouette" else -1.0  # higher silhouette, lower DB is better
    scores, labelings = {}, {}
    for k in range(2, top + 1):
        labelings[k] = _kmeans(features, k, seed)
        scores[k] = float(score(features, labelings[k]))
    best = max(scores, key=lambda k: (sign * scores[k], -k))
    name = k_criterion.replace("_", "-")
    return Clustering(labelings[best], best, scores=scores, criterion=k_criterion, spread=spread,
                      reason=(f"agents are distinguishable (behaviour spread {spread:.3f}); K={best} "
                              f"has the best {name} score ({scores[best]:.3f}) of K in 2..{top}."))
