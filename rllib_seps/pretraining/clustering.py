"""K and the partition of agents, decided against the noise of the encoder's own estimate.

What is clustered (``cluster_on``): by default each agent's *behaviour*, the decoder's predicted
next observation and reward at the agent's z on a shared probe set; ``"means"`` (the paper's
choice) clusters the posterior means. Either way every agent comes as S decoys
(:mod:`rllib_seps.pretraining.encoder`): S estimates of the same thing from disjoint data.

The decision, in four steps:

1. **Noise.** An agent's point is the mean of its decoys. Contrasts between its decoys (e.g.
   ``(d0 + d1 - d2 - d3) / 4``) cancel whatever the agent really is and leave only noise, with the
   spread that noise gives the mean; S - 1 of them per agent, after removing what decoy ``s`` of
   every agent shares (the same episodes). An agent's ``noise`` is their mean squared norm; it
   differs between agents (a type of two agents is known less precisely than one of fifteen).
2. **Candidates.** k-means on the agents' points for K = 2 .. min(N, max_clusters) (K = N: every
   agent alone).
3. **Tests**, for each candidate:

   - *separation*: the closest two clusters, in units of their centres' noise,
     ``|mean_c - mean_c'|^2 / (noise_c / n_c + noise_c' / n_c')`` (``noise_c``: the mean noise of
     cluster c's agents, as in Welch's t-test), must exceed :data:`MARGIN` times the
     largest that k-means finds in :data:`NULL_DRAWS` sets of N points drawn from the noise
     contrasts alone (the agents' identities shuffled away, leaving pure noise). This null knows
     the environment, the data size and the fit, and it charges k-means for choosing its split;
   - *stability* (K < N): k-means on the means of decoys 0..S/2-1 and, apart, of decoys S/2..S-1
     (two disjoint halves of every agent's data) must find the same partition (adjusted Rand index
     at least :data:`STABLE_ARI`). Noise splits do not reproduce; types do;
   - *size* (K > 2): every two clusters must differ (:func:`effect`, noise aside) by at least
     :data:`MIN_RELATIVE_EFFECT` of what K=2's two clusters differ by. Agents of one type can
     differ a little, really and reproducibly (the order in which a simulator serves them); types
     differ by as much as the others.

4. **Choice.** The largest K that passes the tests (``k_criterion="finest"``: every two of its
   clusters differ, reproducibly), or the best silhouette / Davies-Bouldin score among them
   (these cannot score K = N, which then wins if it passes); K = 1 if none passes.

The decision is *confident* unless a larger K is *unresolved* (reproducible, type-sized and
beyond the noise-only maximum, but not by the margin), the next K is *emerging* (the halves agree
only in part, :data:`PARTIAL_ARI`, and it is beyond the margin or type-sized) or *small* (passes but for
its size: more data tells a type still being seen from an asymmetry within one) or, for K = 1,
the agents' spread around their centre is more than in any noise-only draw: then a difference may
hide below the noise, and more data can resolve it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score, davies_bouldin_score, silhouette_score
from threadpoolctl import threadpool_limits

from rllib_seps.pretraining.encoder import Embeddings

NULL_DRAWS = 49
"""Noise-only draws per tested K: the largest of 49 is their 98th percentile."""
MARGIN = 2.0
"""A separation must exceed the largest in the noise-only draws by this factor: agents' own
noise can be slightly coherent (shared trajectories), which the draws cannot mimic."""
STABLE_ARI = 0.9
"""Agreement of the two halves' partitions that counts as the same partition."""
PARTIAL_ARI = 0.5
"""Agreement of the halves that, with a separation beyond MARGIN times the noise-only maximum or
(K > 2) a type-sized difference, makes the next K after the chosen one emerging: each half has
half the data, and a type that rests on rare rewards can be found by one half and not yet by the
other (LBF seed 0 at 32k transitions per agent: K=3 at 5.4 times the noise maximum, halves ARI
0.74; with twice the data, ARI 1.0). Only the next K: further K that split agents of one type this
way (LBF's K=7 at 128k) are noise that more data does not remove."""
MIN_RELATIVE_EFFECT = 0.3
"""A partition finer than K=2 counts only if every two of its clusters differ (:func:`effect`) by at
least this fraction of what K=2's two clusters differ by. Simulators give agents of one type small
differences that are real and reproducible, and so pass both tests with enough data (rware
resolves collisions in agent order: C-RWARE(1) seed 4 split a colour's two robots, 3.3 noise units
apart, reproducibly); a type is a difference of the size of the others. On the 5-seed panel every
true type differed by 0.45-1.0 of K=2's effect, such twins by 0.20."""
N_INIT = 4
"""k-means restarts (k-means++), for the agents and for every noise draw alike."""
MAX_DIMS = 128
"""Principal components kept; distances are exact while N * S is at most this."""


@dataclass
class Candidate:
    """One K tried by automatic K, with its test results.

    Attributes:
        k: Number of clusters.
        separation: The closest two clusters' distance in noise units (see module docstring).
        null_separation: The largest separation k-means found in the noise-only draws (NaN
            when the test was skipped because the partition was unstable).
        stability: Adjusted Rand index between the two halves' partitions (1.0 for K = N).
        score: Silhouette (Davies-Bouldin with that ``k_criterion``) of the partition (NaN for
            K = N).
        effect: The closest two clusters' difference in what they are modelled to do
            (:func:`effect`).
        relative_effect: ``effect`` as a fraction of K=2's.
    """

    k: int
    separation: float
    null_separation: float
    stability: float
    score: float
    effect: float = float("nan")
    relative_effect: float = 1.0

    @property
    def significant(self) -> bool:
        return bool(self.separation > MARGIN * self.null_separation)

    @property
    def stable(self) -> bool:
        return bool(self.stability >= STABLE_ARI)

    @property
    def type_sized(self) -> bool:
        """Its clusters differ by at least MIN_RELATIVE_EFFECT of K=2's difference."""
        return bool(self.relative_effect >= MIN_RELATIVE_EFFECT)

    @property
    def passes(self) -> bool:
        """Its clusters all differ beyond noise, reproducibly, and as much as types do."""
        return self.significant and self.stable and self.type_sized

    @property
    def unresolved(self) -> bool:
        """Reproducible, type-sized and beyond the noise-only maximum, but not by MARGIN: it
        passes but for the margin, and more data may confirm it. A split of less than a type's
        size stays open only as the next K and beyond the margin (``small``): within it, rware's
        collision order split C-RWARE(1)'s robots reproducibly, at 0.11 of K=2's difference, and
        kept a right K=2 collecting from 8k to 32k transitions per agent."""
        return (self.stable and self.type_sized and not self.significant
                and bool(self.separation > self.null_separation))

    @property
    def emerging(self) -> bool:
        """The halves agree only in part (PARTIAL_ARI), and the split is beyond MARGIN times the
        noise-only maximum or, for K > 2, type-sized: as the next K after the one chosen, a type
        that more data may confirm. Type-sized alone suffices because a type that rests on rare
        rewards can stay within the noise of the rest while its few events are seen (LBF seed 4 at
        44k transitions per agent: K=3 at 1.3 noise units against a maximum of 2.8, halves ARI
        0.61, 0.36 of K=2's difference; at 128k, 962 against 3.3), and a split within a type is
        not type-sized: its difference, noise aside, is about none."""
        partly_stable = not self.stable and self.stability >= PARTIAL_ARI
        return partly_stable and (self.significant or (self.k > 2 and self.type_sized))

    @property
    def small(self) -> bool:
        """Beyond noise and reproducible, but its clusters differ by less than types do: as the
        next K after the one chosen, a difference that more data shows as a type (whose rare
        rewards were only partly seen) or as an asymmetry within one."""
        return self.significant and self.stable and not self.type_sized

    def as_dict(self) -> dict[str, float | bool | None]:
        """JSON-ready (NaN as None)."""
        numbers = {"separation": self.separation, "null_separation": self.null_separation,
                   "stability": self.stability, "score": self.score, "effect": self.effect,
                   "relative_effect": self.relative_effect}
        return {**{k: None if np.isnan(v) else v for k, v in numbers.items()},
                "significant": self.significant, "stable": self.stable, "type_sized": self.type_sized,
                "unresolved": self.unresolved, "emerging": self.emerging, "small": self.small}


@dataclass
class Clustering:
    """The partition of agents into clusters, and why.

    Attributes:
        labels: ``(N,)`` cluster index of each agent (agents in sorted order). Clusters are
            numbered by their first agent, so the numbering does not depend on k-means' order.
        k: Number of clusters.
        confident: Whether the decision is confident (see the module docstring); a given K is.
        reason: Why this K was chosen, in words and numbers.
        candidates: Every K tried by automatic K; empty for a given K.
        criterion: How K was picked among those that pass: ``finest``, ``silhouette`` or
            ``davies_bouldin``.
        noise: ``(N,)`` mean squared noise of each agent's point (what separations are measured in).
        noise_rms: Their mean per original feature, root mean square: in standardised units of
            the predicted next observation and reward (behaviour), or of z (means).
        spread: Mean squared distance of the agents' points from their centre, each in its own
            noise units (about 1 when the agents are alike).
        features: ``(N, d)`` the agents' points that k-means saw (principal components).
        decoy_features: ``(N, S, d)`` the decoys' points in the same components, less what
            decoy ``s`` of every agent shares (see :func:`without_shared`).
    """

    labels: np.ndarray
    k: int
    confident: bool = True
    reason: str = ""
    candidates: dict[int, Candidate] = field(default_factory=dict)
    criterion: str = "silhouette"
    noise: np.ndarray | None = None
    noise_rms: float = 0.0
    spread: float = 0.0
    features: np.ndarray | None = None
    decoy_features: np.ndarray | None = None


def _kmeans(points: np.ndarray, k: int, seed: int) -> np.ndarray:
    if k == 1:
        return np.zeros(len(points), np.int64)
    if k == len(points):
        return np.arange(k, dtype=np.int64)
    with warnings.catch_warnings():
        # Repeated points (noise draws repeat some) leave fewer distinct clusters than k; every
        # caller counts the clusters it got, so sklearn's warning about it would only alarm.
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = KMeans(n_clusters=k, n_init=N_INIT, random_state=seed).fit_predict(points)
    # Renumber clusters in order of their first agent: cluster_0 holds agent 0.
    order = {old: new for new, old in enumerate(dict.fromkeys(labels.tolist()))}
    return np.array([order[label] for label in labels], np.int64)


def separation(points: np.ndarray, labels: np.ndarray, noise: np.ndarray) -> float:
    """The closest two clusters' squared centre distance in units of its noise variance.

    Args:
        points: ``(N, d)`` agents' points.
        labels: ``(N,)`` cluster of each point (at least two clusters).
        noise: ``(N,)`` noise variance (mean squared norm) of each point: agents differ in how
            precisely they are known (a type of two agents is fitted from less data than one of
            fifteen), so each cluster is measured by its own (as Welch's t-test does).

    Returns:
        ``min over c != c' of |mean_c - mean_c'|^2 / (noise_c / n_c + noise_c' / n_c')``, with
        ``noise_c`` the mean noise of cluster c's points.
    """
    ks = np.unique(labels)
    if len(ks) < 2:  # k-means merged repeated points (noise draws repeat some): nothing is apart
        return 0.0
    members = labels[None, :] == ks[:, None]
    sizes = members.sum(1)
    centres = members @ points / sizes[:, None]
    variance = (members @ noise) / sizes**2  # noise of each centre
    sq = ((centres[:, None] - centres[None]) ** 2).sum(-1)
    return float((sq / (variance[:, None] + variance[None]))[np.triu_indices(len(ks), 1)].min())


def effect(halves: tuple[np.ndarray, np.ndarray], labels: np.ndarray, width: int | None = None) -> float:
    """The closest two clusters' difference in what they are modelled to do, noise aside.

    Each cluster's centre is estimated twice, from two disjoint halves of every agent's data;
    the product of the two estimates of a difference has the noise's share of its square removed
    on average (the halves' noise is independent), so noise-only splits come out near 0.

    Args:
        halves: Two ``(N, F)`` estimates of each agent's behaviour (or embedding mean) in the units
            it was fitted in (standardised next observation and reward), from disjoint data.
        labels: ``(N,)`` cluster of each agent (at least two clusters).
        width: Predictions per probe transition (next observation entries, then the reward), so
            that each quantity is compared on its own: a type that differs only in reward would
            otherwise be drowned by the many entries of the observation. None: one quantity.

    Returns:
        The smallest, over pairs of clusters, of the root-mean-square difference of their centres
        in the quantity where they differ most.
    """
    ks = np.unique(labels)
    i, j = np.triu_indices(len(ks), 1)
    differences = []
    for half in halves:
        centres = np.stack([half[labels == k].mean(0) for k in ks])
        per_probe = centres.reshape(len(ks), -1, width or 1)
        differences.append(per_probe[i] - per_probe[j])  # (pairs, probes, width)
    product = differences[0] * differences[1]
    quantities = [product[..., -1]] + ([product[..., :-1]] if width and width > 1 else [])
    squares = np.max([q.reshape(len(i), -1).mean(1) for q in quantities], axis=0)
    return float(np.sqrt(max(squares.min(), 0.0)))


def without_shared(decoys: np.ndarray) -> np.ndarray:
    """``(N, S, d)`` decoy points less what decoy ``s`` of every agent shares.

    Decoy ``s`` of every agent was fitted on the same stretch of time (the same episodes); what
    that moves alike in all agents is no difference between agents, so it is removed (two-way
    analysis of variance, agents x decoys). Agents' means are unchanged.
    """
    if len(decoys) < 2:
        return decoys
    shared = (decoys - decoys.mean(1, keepdims=True)).mean(0, keepdims=True)
    return decoys - shared


def noise_contrasts(decoys: np.ndarray) -> np.ndarray:
    """``(N, S, d)`` decoy points (less their shared part) -> ``(N, S - 1, d)`` contrasts with the
    noise of an agent's mean.

    Rows of an orthonormal basis of contrasts (coefficients summing to 0: the agent cancels),
    scaled to squared norm 1/S (the variance of the mean of S), and by N / (N - 1) for the degrees
    of freedom that removing the shared part took.
    """
    n, s, _ = decoys.shape
    basis = np.linalg.qr(np.vander(np.arange(s, dtype=float), s, increasing=True))[0][:, 1:]
    scale = np.sqrt(n / (n - 1) / s) if n > 1 else np.sqrt(1 / s)
    return np.einsum("nsd,sc->ncd", decoys, basis * scale)


def _project(decoys: np.ndarray, seed: int) -> np.ndarray:
    """Decoy points in at most MAX_DIMS principal components of agents' means and contrasts."""
    n, s, f = decoys.shape
    flat = decoys.reshape(n * s, f).astype(np.float64)
    dims = min(MAX_DIMS, n * s, f)
    if dims == f:
        return decoys.astype(np.float64)
    pca = PCA(n_components=dims, random_state=seed).fit(flat)
    return pca.transform(flat).reshape(n, s, dims)


def noise_draws(contrasts: np.ndarray, noise: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """NULL_DRAWS sets of N points drawn from the noise contrasts alone (with replacement, random
    signs): what N alike agents would look like.

    Args:
        contrasts: ``(N, C, d)`` every agent's noise contrasts.
        noise: ``(N,)`` every agent's noise variance.
        seed: Seed of the draws.

    Returns:
        ``(NULL_DRAWS, N, d)`` points and ``(NULL_DRAWS, N)`` the noise variance of each (that of
        the agent its contrast came from).
    """
    rng = np.random.default_rng(seed)
    n, c, d = contrasts.shape
    picks = rng.integers(n * c, size=(NULL_DRAWS, n))
    signs = rng.choice([-1.0, 1.0], size=(NULL_DRAWS, n, 1))
    return contrasts.reshape(n * c, d)[picks] * signs, noise[picks // c]


def _spread(points: np.ndarray, noise: np.ndarray) -> float:
    """Mean squared distance of the points from their centre, each in its own noise units."""
    return float((((points - points.mean(0)) ** 2).sum(-1) / noise).mean())


def cluster_agents(embeddings: Embeddings, n_clusters: int | str = "auto", *,
                   cluster_on: str = "behaviour", k_criterion: str = "finest",
                   max_clusters: int = 16, seed: int = 0) -> Clustering:
    """Clusters agents by their behaviour (or embedding means), choosing K against the noise.

    Args:
        embeddings: The trained encoder's decoy posteriors and behaviours.
        n_clusters: K, or ``"auto"``.
        cluster_on: ``"behaviour"`` or ``"means"``.
        k_criterion: ``"finest"`` (the largest K that passes), ``"silhouette"`` or
            ``"davies_bouldin"`` (the best score among the K that pass).
        max_clusters: Largest K that ``"auto"`` considers.
        seed: k-means and noise-draw seed; the same seed gives the same clusters.

    Returns:
        The clustering, with every candidate's numbers for the report.

    Raises:
        ValueError: If a given K is larger than the number of agents or smaller than 1, or
            more than the agents' distinct points.
    """
    # One thread for BLAS and OpenMP: sums in one order, so results do not depend on the machine.
    with threadpool_limits(limits=1):
        return _cluster_agents(embeddings, n_clusters, cluster_on, k_criterion, max_clusters, seed)


def _cluster_agents(embeddings: Embeddings, n_clusters: int | str, cluster_on: str, k_criterion: str,
                    max_clusters: int, seed: int) -> Clustering:
    """See :func:`cluster_agents`."""
    features = embeddings.decoy_behaviour if cluster_on == "behaviour" else embeddings.decoy_means
    decoys = without_shared(_project(features, seed))
    n, s, _ = decoys.shape
    points = decoys.mean(1)
    contrasts = noise_contrasts(decoys)
    noise = (contrasts**2).sum(-1).mean(1) + 1e-12  # each agent's
    spread = _spread(points, noise)
    noise_rms = float(np.sqrt(noise.mean() / features.shape[-1]))
    common = dict(criterion=k_criterion, noise=noise, noise_rms=noise_rms, spread=spread, features=points, decoy_features=decoys)

    if n_clusters != "auto":
        k = int(n_clusters)
        if not 1 <= k <= n:
            raise ValueError(
                f"n_clusters={k} is invalid for {n} agents: it must lie in 1..{n}. Use "
                'n_clusters="auto" to choose K from the embeddings.'
            )
        if k in (1, n) and n > 1:
            what = "one module for all agents (full sharing)" if k == 1 else "one module per agent (no sharing)"
            warnings.warn(f"n_clusters={k} with {n} agents gives {what}.", stacklevel=3)
        labels = _kmeans(points, k, seed)
        if (distinct := len(np.unique(labels))) < k:
            raise ValueError(
                f"n_clusters={k}: the agents' embeddings take only {distinct} distinct values, so "
                f"{k} clusters would leave a module without agents. Give n_clusters <= {distinct}, or "
                'n_clusters="auto" to choose K from the embeddings.'
            )
        return Clustering(labels, k, reason=f"K={k} was given.", **common)
    if n == 1:
        return Clustering(np.zeros(1, np.int64), 1, reason="one agent: K=1.", **common)

    half_a, half_b = decoys[:, : s // 2].mean(1), decoys[:, s // 2:].mean(1)
    draws = list(zip(*noise_draws(contrasts, noise, seed)))
    null_spread = max(_spread(d, d_noise) for d, d_noise in draws)
    score = davies_bouldin_score if k_criterion == "davies_bouldin" else silhouette_score
    halves = features[:, : s // 2].mean(1), features[:, s // 2:].mean(1)  # in the units of the fit
    width = embeddings.predictions_per_probe if cluster_on == "behaviour" else None
    candidates, labelings = {}, {}
    for k in range(2, min(n, max_clusters) + 1):
        labels = _kmeans(points, k, seed)
        if len(np.unique(labels)) < k:  # fewer distinct points than k: no finer K exists
            break
        labelings[k] = labels
        stability = 1.0 if k == n else adjusted_rand_score(_kmeans(half_a, k, seed), _kmeans(half_b, k, seed))
        sep = separation(points, labels, noise)
        size = effect(halves, labels, width)
        relative = 1.0 if k == 2 else size / max(candidates[2].effect, 1e-12)
        # The noise draws cost NULL_DRAWS k-means runs: only for partitions that (partly) reproduce.
        null = (max(separation(d, _kmeans(d, k, seed), d_noise) for d, d_noise in draws)
                if stability >= PARTIAL_ARI else float("nan"))
        candidates[k] = Candidate(k, sep, null, float(stability),
                                  float(score(points, labels)) if k < n else float("nan"), size, relative)
    passing = [k for k, c in candidates.items() if c.passes]
    # The numbers up to two K past the largest that passed (or 3): beyond, partitions only split noise.
    shown = [c for c in candidates.values() if c.k <= max(passing, default=1) + 2]
    numbers = "; ".join(map(_describe, shown)) + ("; ..." if len(shown) < len(candidates) else "")
    if not passing:
        # The agents spread more than noise alone would, or a partition nearly passes: a
        # difference may hide below the noise, and more data can resolve it.
        unsure = (spread > null_spread or any(c.unresolved for c in candidates.values())
                  or (2 in candidates and candidates[2].emerging))
        return Clustering(np.zeros(n, np.int64), 1, confident=not unsure, candidates=candidates, reason=(
            f"no partition separates the agents beyond the noise of their own estimates and "
            f"reproducibly ({numbers}); their spread, {spread:.2f} noise units, is "
            + (f"more than noise alone gives (at most {null_spread:.2f})" if spread > null_spread
               else f"what noise alone gives (up to {null_spread:.2f})")
            + (": K=1 until more data decides." if unsure else ": the agents are alike, K=1.")),
            **common)
    if k_criterion == "finest" or n in passing:
        best = max(passing)
        why = (f"K={best} is the largest K whose clusters all differ beyond noise, reproducibly and "
               f"as much as types do" if best < n else "every two agents differ beyond noise")
    else:
        sign = 1.0 if k_criterion == "silhouette" else -1.0  # higher silhouette, lower DB is better
        best = max(passing, key=lambda k: (sign * candidates[k].score, -k))
        name = k_criterion.replace("_", "-")
        why = (f"K={best} has the best {name} score ({candidates[best].score:.3f}) of the K that "
               f"separate the agents beyond noise and reproducibly ({passing})")
    finer = [k for k, c in candidates.items()
             if k > best and (c.unresolved or (k == best + 1 and (c.emerging or c.small)))]
    if finer:
        why += f"; K={finer[0]} nearly passes, so more data may split further"
    return Clustering(labelings[best], best, confident=not finer, candidates=candidates,
                      reason=f"{why} ({numbers}).", **common)


def _describe(c: Candidate) -> str:
    null = "untested" if np.isnan(c.null_separation) else f"noise max {c.null_separation:.1f}"
    size = f"effect {c.effect:.3f}" if c.k == 2 else f"effect {c.relative_effect:.2f} of K=2's"
    return f"K={c.k}: separation {c.separation:.1f} ({null}), halves ARI {c.stability:.2f}, {size}"
