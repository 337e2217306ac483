"""Options of SePS pretraining, clustering and sharing, validated on construction."""

from __future__ import annotations

import dataclasses
import difflib
import numbers
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

Strategy = Literal["nops", "fups", "fups_id", "seps", "adaps"]
STRATEGIES: tuple[str, ...] = ("nops", "fups", "fups_id", "seps", "adaps")
EXECUTIONS: tuple[str, ...] = ("auto", "fast", "modules")
# Algorithms that train several modules on RLlib's new API stack with every strategy (each one
# trained end to end in tests/test_adoption.py): the shared module is an actor-critic.
MULTI_AGENT_ALGORITHMS: tuple[str, ...] = ("PPO", "APPO", "IMPALA")
# Multi-agent algorithms of RLlib refused by name, and why.
UNSUPPORTED_ALGORITHMS: dict[str, str] = {
    name: (f"{name} learns Q-networks, and the module that agents with padding, indication or "
           "AdaPS masks share is an actor-critic")
    for name in ("DQN", "SAC")
}


def _check(condition: bool, name: str, value: Any, requirement: str) -> None:
    if not condition:
        raise ValueError(f"SePS option {name}={value!r} is invalid: {requirement}.")


# The type each option's value must have (checked before any value is compared).
_INT, _NUMBER = (numbers.Integral,), (numbers.Real,)
_TYPE_NAMES = {numbers.Integral: "an integer", numbers.Real: "a number", bool: "a bool", str: "a string",
               type(None): "None", dict: "a dict"}
_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("max_clusters", "first_transitions_per_agent", "max_transitions_per_agent",
                     "min_reward_events", "latent_dim", "hidden_size", "batch_size", "max_updates",
                     "probe_transitions"), _INT),
    **dict.fromkeys(("resolution", "kl_weight", "lr", "adaps_drop_threshold"), _NUMBER),
    **dict.fromkeys(("normalize", "progress"), (bool,)),
    **dict.fromkeys(("cluster_on", "k_criterion", "strategy"), (str,)),
    "report_dir": (str, type(None)),
    "seed": (numbers.Integral, type(None)),
    "module_kwargs": (dict,),
}
_AUTO_OR_INT = {"n_clusters": 1, "transitions_per_agent": 4, "updates": 1, "rollout_tasks": 0}
"""Options that take "auto" or an integer, with the least integer each takes."""


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_type(name: str, value: Any) -> None:
    """Raises TypeError unless ``value`` has the type option ``name`` needs (no bool for numbers).

    Options that take "auto" or an integer leave other words to the value checks (ValueError)."""
    auto = name in _AUTO_OR_INT
    if auto and isinstance(value, str) and not _is_number(value):
        return
    types = _INT if auto else _TYPES.get(name)
    if types is None or (isinstance(value, types) and not (isinstance(value, bool) and bool not in types)):
        return
    wanted = ('"auto" or ' if auto else "") + " or ".join(_TYPE_NAMES[t] for t in types)
    fix = (f" Fix: write {name}={value.strip()}, without quotes."
           if isinstance(value, str) and _is_number(value) else "")
    raise TypeError(f"SePS option {name}={value!r} has type {type(value).__name__}; it must be {wanted}."
                    f"{fix}")


@dataclass(frozen=True)
class SePSOptions:
    """Everything SePS pretraining and clustering can be told. Defaults follow the paper.

    Unknown keys in :meth:`from_dict` are rejected by name, with the closest valid key suggested.
    """

    n_clusters: int | Literal["auto"] = "auto"
    """Number of clusters K, or "auto" to choose it from the embeddings (can answer K=1)."""
    max_clusters: int = 16
    """Largest K that ``n_clusters="auto"`` considers (and N at most): testing every K up to N
    with 200 agents costs minutes and no paper task has more than 5 types."""
    transitions_per_agent: int | Literal["auto"] = "auto"
    """Random-policy transitions collected per agent. "auto" starts with
    ``first_transitions_per_agent`` and collects 2-4 times as many while the decision for K is not
    yet confident, up to ``max_transitions_per_agent`` (see docs/pretraining.md); a number collects
    exactly that many and decides once (the paper's code used 200k)."""
    first_transitions_per_agent: int = 1000
    """With ``transitions_per_agent="auto"``: the first round's transitions per agent."""
    max_transitions_per_agent: int = 128_000
    """With ``transitions_per_agent="auto"``: the most transitions per agent collected before
    K is decided anyway (a low-confidence decision then warns). LBF's levels needed about 32k."""
    resolution: float = 0.05
    """A decision for K is confident only once every agent's modelled behaviour is known to within
    this (else a finer split may hide below the noise): the root-mean-square noise of its
    predictions, in standard deviations of the predicted next observation and reward (measured by
    the encoder's decoys). Smaller sees subtler differences between agents and costs more data;
    two BPS agents of different colours were still at 0.10 and indistinguishable after 1000
    transitions each, and clearly apart after 4000."""
    min_reward_events: int = 50
    """A decision for K is confident only once each half of every agent's transitions (the halves
    whose partitions must agree) has shown this many rewards other than the agent's most common
    one: where rewards are rare (LBF, C-RWARE), types that differ only in them cannot be told
    apart before that. Where even ``max_transitions_per_agent`` would not buy them, pretraining
    stops at once: types found in the dynamics stand, and K=1 warns. 0 decides on what was seen."""
    rollout_tasks: int | Literal["auto"] = "auto"
    """Where random rollouts run. "auto": 4 streams (copies of the env with their own seeds, so
    that the data, and the clusters, are the same on any machine or cluster), as Ray tasks at once
    where Ray runs on several nodes or where they would take more than a few seconds in-process,
    else one after another in-process. A number n: n streams as Ray tasks, spread over the nodes
    (Ray must be running). 0: one stream, in-process."""
    latent_dim: int = 5
    """Size m of the agent embedding (5 in the paper)."""
    hidden_size: int = 128
    """Width of the encoder's hidden layer and of the decoder's two hidden layers (the paper
    used 64 or 128; 64 leaves types with two agents in BPS(4) unresolved for some seeds)."""
    kl_weight: float = 1e-4
    """Weight of KL(q(z|i) || N(0, I)) in the encoder-decoder loss."""
    lr: float = 3e-3
    """Adam learning rate of the encoder-decoder (at the start: see ``updates``). The paper's
    3e-4 with batch 128 suits its 200k transitions per agent; with less data, 3e-3 with batch 512
    recovers the types in fewer updates (benchmarks/pretraining.py)."""
    batch_size: int = 512
    """Minibatch size of encoder-decoder training."""
    updates: int | Literal["auto"] = "auto"
    """Gradient updates of encoder-decoder training: "auto" trains until the fit has converged
    (at least 4 passes over the data, then plateaus of the errors of next observation and reward
    at lr and lr/10; see rllib_seps/pretraining/encoder.py), at most ``max_updates``; a number runs
    exactly that many with cosine decay (the paper: a fixed budget)."""
    max_updates: int = 20_000
    """With ``updates="auto"``: the most updates of one encoder fit (a fit that stops here is
    reported as not converged)."""
    probe_transitions: int = 256
    """Transitions on which each agent's decoder behaviour is compared for clustering."""
    cluster_on: Literal["behaviour", "means"] = "behaviour"
    """What k-means clusters: the decoder's predictions at each agent's mean z ("behaviour",
    default: agents that share them have the same modelled reward and transitions, whatever
    region of z they landed in) or the paper's raw means ("means")."""
    k_criterion: Literal["finest", "silhouette", "davies_bouldin"] = "finest"
    """How automatic K picks among the K whose clusters all differ beyond noise and reproducibly
    (rllib_seps/pretraining/clustering.py): the largest ("finest"), or the best silhouette or
    Davies-Bouldin score (the paper's). Silhouette scores a one-agent type as 0, so it merges such
    types (simple_world_comm's lead adversary)."""
    normalize: bool = True
    """Standardise decoder inputs and targets per feature, so that no large-valued feature
    (grid coordinates, counts) drowns the others in the reconstruction loss."""
    seed: int | None = None
    """Seed of rollouts, encoder initialisation, minibatch order, k-means and AdaPS masks. None:
    the config's seed (``config.debugging(seed=...)``, a file's ``seed:``) where it has one, else
    0, so that runs of several seeds pretrain with theirs (see :meth:`seeded`)."""
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
    execution: Literal["auto", "fast", "modules"] = "auto"
    """How the agents run: "modules" (RLlib's multi-agent path: one RLModule per module of the
    plan), "fast" (one module holds every module's parameters as a group; all agents of several
    env copies are sampled as one batch and each group is trained as its own module would be: see
    rllib_seps/rllib/fast), or "auto" (fast where it applies, else modules, saying why).
    Fast execution does not apply, for example, to image observations, turn-based envs, user
    connectors or per-episode callbacks; "fast" raises there, naming the reason. Both paths learned
    alike on BPS(1) (benchmarks/equal_learning.py), so "auto" is the default."""
    progress: bool = True
    """Show progress bars for rollouts and encoder training."""
    report_dir: str | None = None
    """Where to write the report (JSON and PNG); None uses the trial's directory when known."""
    module_kwargs: dict = field(default_factory=dict)
    """Extra model_config entries for the modules (e.g. {"fcnet_hiddens": [64, 64]})."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name))
        for name, least in _AUTO_OR_INT.items():
            value = getattr(self, name)
            _check(value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= least),
                   name, value, f'must be "auto" or an integer >= {least}')
        _check(self.max_clusters >= 2, "max_clusters", self.max_clusters, "must be >= 2")
        for name in ("first_transitions_per_agent", "max_transitions_per_agent", "latent_dim",
                     "hidden_size", "batch_size", "max_updates", "probe_transitions"):
            _check(getattr(self, name) >= 1, name, getattr(self, name), "must be >= 1")
        _check(self.first_transitions_per_agent >= 4, "first_transitions_per_agent",
               self.first_transitions_per_agent, "must be >= 4 (the encoder's decoys need data each)")
        _check(self.max_transitions_per_agent >= self.first_transitions_per_agent,
               "max_transitions_per_agent", self.max_transitions_per_agent,
               f"must be >= first_transitions_per_agent ({self.first_transitions_per_agent})")
        _check(self.resolution > 0, "resolution", self.resolution, "must be > 0")
        _check(self.min_reward_events >= 0, "min_reward_events", self.min_reward_events, "must be >= 0")
        _check(self.kl_weight >= 0, "kl_weight", self.kl_weight, "must be >= 0")
        _check(self.lr > 0, "lr", self.lr, "must be > 0")
        _check(self.cluster_on in ("behaviour", "means"), "cluster_on", self.cluster_on,
               'must be "behaviour" or "means"')
        _check(self.k_criterion in ("finest", "silhouette", "davies_bouldin"), "k_criterion",
               self.k_criterion, 'must be "finest", "silhouette" or "davies_bouldin"')
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
            TypeError: For a value of the wrong type (e.g. the string "1000" for an int).
        """
        options = dict(options or {})
        known = [f.name for f in dataclasses.fields(cls)]
        for key in options:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else f" Valid keys: {known}."
                raise ValueError(f"Unknown SePS option {key!r}.{hint}")
        return cls(**options)

    def seeded(self, config_seed: int | None) -> "SePSOptions":
        """These options with a seed: their own, else ``config_seed``, else 0."""
        if self.seed is not None:
            return self
        return dataclasses.replace(self, seed=0 if config_seed is None else config_seed)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form, for reports and configs."""
        return dataclasses.asdict(self)
