"""SePS pretraining end to end: random rollouts -> encoder -> clusters, timed and reported."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rllib_seps.pretraining.clustering import Clustering, cluster_agents
from rllib_seps.pretraining.encoder import Embeddings, train_encoder
from rllib_seps.sharing.mapping import AgentID, AgentToModuleMapping, cluster_module_id
from rllib_seps.options import SePSOptions
from rllib_seps.pretraining.rollouts import EnvCreator, collect_random_rollouts


@dataclass
class PretrainingResult:
    """What pretraining found.

    Attributes:
        agent_ids: Agents in ``sorted_agents`` order (rows of ``embeddings``, entries of ``labels``).
        embeddings: The encoder's per-agent posteriors.
        clustering: The clusters and how K was chosen.
        transitions: Transitions used, per agent.
        timings: Seconds spent in ``rollouts``, ``encoder``, ``clustering`` and ``total``.
        options: The options pretraining ran with (and the strategy they ask for).
        adaps_masks: For strategy ``adaps``: the masks' densities and overlaps
            (:func:`rllib_seps.sharing.adaps.mask_report`), set by ``with_sharing``; else None.
    """

    agent_ids: list[AgentID]
    embeddings: Embeddings
    clustering: Clustering
    transitions: dict[AgentID, int]
    timings: dict[str, float]
    options: SePSOptions
    adaps_masks: dict[str, Any] | None = None

    @property
    def labels(self) -> np.ndarray:
        return self.clustering.labels

    @property
    def mapping(self) -> AgentToModuleMapping:
        """``cluster_k`` module of every agent."""
        return AgentToModuleMapping({a: cluster_module_id(int(c))
                                     for a, c in zip(self.agent_ids, self.labels)})

    def summary(self) -> dict[str, Any]:
        """JSON-ready report: the options, mapping, cluster sizes, scores per K, timings,
        transitions. Agent ids are written as strings where they are keys."""
        mapping = self.mapping
        summary = {
            "options": self.options.to_dict(),
            "n_agents": len(self.agent_ids),
            "k": self.clustering.k,
            "k_reason": self.clustering.reason,
            "k_criterion": self.clustering.criterion,
            "score_per_k": {str(k): v for k, v in self.clustering.scores.items()},
            "behaviour_spread": self.clustering.spread,
            "clusters": {m: mapping.agents_of(m) for m in mapping.module_ids},
            "cluster_sizes": {m: len(mapping.agents_of(m)) for m in mapping.module_ids},
            "mapping": {str(a): m for a, m in mapping.agent_to_module.items()},
            "transitions_total": int(sum(self.transitions.values())),
            "transitions_per_agent": int(min(self.transitions.values())),
            "encoder_losses": self.embeddings.losses,
            "timings_s": self.timings,
            "embedding_means": {str(a): m.tolist() for a, m in zip(self.agent_ids, self.embeddings.means)},
        }
        if self.adaps_masks is not None:
            summary["adaps_masks"] = self.adaps_masks
        return summary


def run_pretraining(env_creator: EnvCreator, env_config: dict | None = None,
                    options: SePSOptions = SePSOptions()) -> PretrainingResult:
    """Collects random rollouts, trains the encoder-decoder and clusters the agents.

    Args:
        env_creator: Callable ``env_config -> MultiAgentEnv``.
        env_config: Passed to the creator.
        options: Pretraining and clustering options.

    Returns:
        The result; the same seed gives the same clusters.
    """
    start = time.perf_counter()
    data = collect_random_rollouts(
        env_creator, env_config, transitions_per_agent=options.transitions_per_agent,
        seed=options.seed, num_tasks=options.rollout_tasks, progress=options.progress,
    )
    if options.n_clusters != "auto" and options.n_clusters > len(data.agent_ids):
        raise ValueError(f"n_clusters={options.n_clusters} is larger than the number of agents "
                         f"({len(data.agent_ids)}) in the environment.")
    # One thread: these networks are tiny, and thread hand-offs cost more than they save.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        embeddings = train_encoder(data, options)
    finally:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    clustering = cluster_agents(
        embeddings, options.n_clusters, cluster_on=options.cluster_on,
        k_criterion=options.k_criterion, max_clusters=options.max_clusters,
        separation_threshold=options.separation_threshold, seed=options.seed,
    )
    timings = {"rollouts": data.seconds, "encoder": embeddings.seconds,
               "clustering": time.perf_counter() - t0, "total": time.perf_counter() - start}
    return PretrainingResult(data.agent_ids, embeddings, clustering, data.per_agent_counts(), timings,
                             options)
