"""Options of SePS pretraining, clustering and sharing, validated on construction."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

Strategy = Literal["nops", "fups", "fups_id", "seps", "adaps"]
STRATEGIES: tuple[str, ...] = ("nops", "fups", "fups_id", "seps", "adaps")


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
    max_clusters: int | None = None
    """Upper bound on K when ``n_clusters="auto"``; None means N - 1."""
    transitions_per_agent: int = 1000
    """Random-policy transitions collected per agent. 1000 recovers every paper task's types
    (see benchmarks/pretraining.py); the paper's code used 200k, far more than needed."""
    rollout_tasks: int = 0
    """Ray tasks that collect rollouts in parallel (use the cluster); 0 collects in-process."""
    latent_dim: int = 5
    """Size m of the agent embedding (5 in the paper)."""
    hidden_size: int = 64
    """Width of the encoder's hidden layer and of the decoder's two hidden layers."""
    kl_weight: float = 1e-4
    """Weight of KL(q(z|i) || N(0, I)) in the encoder-decoder loss."""
    lr: float = 3e-4
    """Adam learning rate of the encoder-decoder."""
    batch_size: int = 128
    """Minibatch size of encoder-decoder training."""
    epochs: int = 10
    """Passes over the collected transitions."""
    normalize: bool = True
    """Standardise decoder inputs and targets per feature, so that no large-valued feature
    (grid coordinates, counts) drowns the others in the reconstruction loss."""
    separation_threshold: float = 2.0
    """Automatic K answers K=1 when no two agents' embedding means are further apart than this
    many posterior standard deviations: the decoder then cannot tell any agents apart."""
    seed: int = 0
    """Seed of rollouts, encoder initialisation, minibatch order and k-means."""
    strategy: Strategy = "seps"
    """How agents share networks: nops (one module per agent), fups (one for all), fups_id (one
    for all, plus agent indication), seps (one per cluster), adaps (one, masked per cluster)."""
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
        _check(self.max_clusters is None or self.max_clusters >= 1, "max_clusters",
               self.max_clusters, "must be None or >= 1")
        for name in ("transitions_per_agent", "latent_dim", "hidden_size", "batch_size", "epochs"):
            _check(getattr(self, name) >= 1, name, getattr(self, name), "must be >= 1")
        _check(self.rollout_tasks >= 0, "rollout_tasks", self.rollout_tasks, "must be >= 0")
        _check(self.kl_weight >= 0, "kl_weight", self.kl_weight, "must be >= 0")
        _check(self.lr > 0, "lr", self.lr, "must be > 0")
        _check(self.separation_threshold > 0, "separation_threshold", self.separation_threshold,
               "must be > 0")
        _check(self.strategy in STRATEGIES, "strategy", self.strategy, f"must be one of {STRATEGIES}")

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
