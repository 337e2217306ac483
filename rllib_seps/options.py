"""Options of SePS pretraining, clustering and sharing, validated on construction."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

Strategy = Literal["nops", "fups", "fups_id", "seps", "adaps"]
STRATEGIES: tuple[str, ...] = ("nops", "fups", "fups_id", "seps", "adaps")
EXECUTIONS: tuple[str, ...] = ("auto", "fast", "modules")
# Algorithms that train several modules on RLlib's new API stack.
MULTI_AGENT_ALGORITHMS: tuple[str, ...] = ("PPO", "APPO", "IMPALA", "DQN", "SAC")


def _check(condition: bool, name: str, value: Any, requirement: str) -> None:
    if not condition:
        raise ValueError(f"SePS option {name}={value!r} is invalid: {requirement}.")


@dataclass(frozen=True)
class SePSOptions:
    """Everything SePS pretraining and clustering can be told. Defaults follow the paper.

    Unknown keys in :meth:`from_dict` are rejected by name, with the closest valid key suggested.
    """

    n_clusters: int | Literal["auto"] = "auto"
    """Number of clusters K, or "auto" to choose it from the embeddings (can answer K=1)."""
    max_clusters: int = 16
    """Largest K that ``n_clusters="auto"`` considers (and N - 1 at most): scoring every K up to
    N - 1 with 200 agents costs minutes and no paper task has more than 5 types."""
    transitions_per_agent: int = 4000
    """Random-policy transitions collected per agent. 4000 recovers the paper tasks' types (see
    benchmarks/pretraining.py); the paper's code used 200k, far more than needed."""
    rollout_tasks: int = 0
    """Ray tasks that collect rollouts in parallel (use the cluster); 0 collects in-process."""
    latent_dim: int = 5
    """Size m of the agent embedding (5 in the paper)."""
    hidden_size: int = 128
    """Width of the encoder's hidden layer and of the decoder's two hidden layers (the paper
    used 64 or 128; 64 leaves types with two agents in BPS(4) unresolved for some seeds)."""
    kl_weight: float = 1e-4
    """Weight of KL(q(z|i) || N(0, I)) in the encoder-decoder loss."""
    lr: float = 3e-3
    """Adam learning rate of the encoder-decoder. The paper's 3e-4 with batch 128 suits its 200k
    transitions per agent; with the far smaller default data, 3e-3 with batch 512 recovers the
    types in fewer updates (benchmarks/pretraining.py)."""
    batch_size: int = 512
    """Minibatch size of encoder-decoder training."""
    updates: int = 6000
    """Gradient updates of encoder-decoder training (a fixed budget, whatever the data size)."""
    probe_transitions: int = 256
    """Transitions on which each agent's decoder behaviour is compared for clustering."""
    cluster_on: Literal["behaviour", "means"] = "behaviour"
    """What k-means clusters: the decoder's predictions at each agent's mean z ("behaviour",
    default: agents that share them have the same modelled reward and transitions, whatever
    region of z they landed in) or the paper's raw means ("means")."""
    k_criterion: Literal["silhouette", "davies_bouldin"] = "silhouette"
    """Score that chooses automatic K in 2..N-1. Davies-Bouldin (the paper's) rewards nearly
    singleton clusterings when types have few agents; silhouette does not."""
    normalize: bool = True
    """Standardise decoder inputs and targets per feature, so that no large-valued feature
    (grid coordinates, counts) drowns the others in the reconstruction loss."""
    separation_threshold: float = 0.01
    """Automatic K answers K=1 when no two agents' modelled behaviours differ by more than this
    (RMS difference of the decoder's predictions relative to their std): the decoder then
    ignores which agent it models."""
    seed: int = 0
    """Seed of rollouts, encoder initialisation, minibatch order and k-means."""
    strategy: Strategy = "seps"
    """How agents share networks: nops (one module per agent), fups (one for all), fups_id (one
    for all, plus agent indication), seps (one per cluster), adaps (one, masked per cluster)."""
    adaps_drop_threshold: float = 0.5
    """AdaPS drop threshold lambda in (0, 1): a hidden unit is off for a cluster when the mapping
    network's sigmoid output for the cluster's centre is below it. 0.5 keeps about half of the
    units per cluster (0.3 about 3/4, 0.7 about 1/4); see rllib_seps/sharing/adaps.py for the mapping.
    Measured (PPO on BPS(1), K=3, fcnet_hiddens [64, 64], 6 iterations of 400 env steps, one
    seed): mean return over the last 3 iterations -406 at lambda 0.3 and 0.5 on all layers, -419 at
    0.7 on all layers (about 19 of 64 units left per layer and cluster), -404 to -410 for 0.3-0.7 on
    the first layer only, fups -428. Short and noisy, but too little capacity is the one visible
    loss; 0.5 lies in the flat region and gives clusters about 55% of the units each, about 40%
    shared between two clusters (Jaccard 0.39-0.45)."""
    adaps_masked_layers: Literal["all"] | tuple[int, ...] = "all"
    """AdaPS: the hidden layers (indices into fcnet_hiddens) that get a mask per cluster, or
    "all" (default). The actor and critic bodies are masked alike. Masking only the first layer
    measured the same as all layers (see adaps_drop_threshold); "all" gives each cluster its own
    units throughout, as in the paper's sub-networks; a masked layer costs one row gather and one
    multiply in the batched forward pass."""
    execution: Literal["auto", "fast", "modules"] = "modules"
    """How the agents run: "modules" (RLlib's multi-agent path: one RLModule per module of the
    plan), "fast" (one module holds every module's parameters as a group; all agents of several
    env copies are sampled as one batch and each group is trained as its own module would be: see
    rllib_seps/rllib/fast), or "auto" (fast where it applies, else modules, saying why in the log).
    Fast execution does not apply, for example, to image observations, turn-based envs, user
    connectors or per-episode callbacks; "fast" raises there, naming the reason."""
    progress: bool = True
    """Show progress bars for rollouts and encoder training."""
    report_dir: str | None = None
    """Where to write the report (JSON and PNG); None uses the trial's directory when known."""
    module_kwargs: dict = field(default_factory=dict)
    """Extra model_config entries for the modules (e.g. {"fcnet_hiddens": [64, 64]})."""

    def __post_init__(self) -> None:
        k = self.n_clusters
        _check(k == "auto" or (isinstance(k, int) and not isinstance(k, bool) and k >= 1),
               "n_clusters", k, 'must be "auto" or an integer >= 1')
        _check(self.max_clusters >= 2, "max_clusters", self.max_clusters, "must be >= 2")
        for name in ("transitions_per_agent", "latent_dim", "hidden_size", "batch_size", "updates",
                     "probe_transitions"):
            _check(getattr(self, name) >= 1, name, getattr(self, name), "must be >= 1")
        _check(self.rollout_tasks >= 0, "rollout_tasks", self.rollout_tasks, "must be >= 0")
        _check(self.kl_weight >= 0, "kl_weight", self.kl_weight, "must be >= 0")
        _check(self.lr > 0, "lr", self.lr, "must be > 0")
        _check(self.separation_threshold > 0, "separation_threshold", self.separation_threshold,
               "must be > 0")
        _check(self.cluster_on in ("behaviour", "means"), "cluster_on", self.cluster_on,
               'must be "behaviour" or "means"')
        _check(self.k_criterion in ("silhouette", "davies_bouldin"), "k_criterion",
               self.k_criterion, 'must be "silhouette" or "davies_bouldin"')
        _check(self.strategy in STRATEGIES, "strategy", self.strategy, f"must be one of {STRATEGIES}")
        _check(self.execution in EXECUTIONS, "execution", self.execution, f"must be one of {EXECUTIONS}")
        _check(isinstance(self.adaps_drop_threshold, (int, float)) and 0 < self.adaps_drop_threshold < 1,
               "adaps_drop_threshold", self.adaps_drop_threshold, "must lie in (0, 1); 0.5 keeps about half "
               "of the hidden units per cluster")
        layers = self.adaps_masked_layers
        if not isinstance(layers, str):
            ok = (isinstance(layers, (list, tuple)) and len(layers) > 0
                  and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in layers))
            _check(ok, "adaps_masked_layers", layers, 'must be "all" or a non-empty list of hidden '
                   "layer indices >= 0, e.g. [0]")
            object.__setattr__(self, "adaps_masked_layers", tuple(layers))
        else:
            _check(layers == "all", "adaps_masked_layers", layers, 'must be "all" or a list of hidden '
                   "layer indices, e.g. [0]")

    @classmethod
    def from_dict(cls, options: Mapping[str, Any] | None) -> "SePSOptions":
        """Builds options from a plain dict (a YAML ``seps:`` block, callback kwargs).

        Raises:
            ValueError: For an unknown key (naming it and the closest valid key) or a bad value.
        """
        options = dict(options or {})
        known = [f.name for f in dataclasses.fields(cls)]
        for key in options:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else f" Valid keys: {known}."
                raise ValueError(f"Unknown SePS option {key!r}.{hint}")
        return cls(**options)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form, for reports and configs."""
        return dataclasses.asdict(self)
