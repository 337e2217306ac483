"""From a sharing strategy (and clusters) to a plan: which module each agent uses, and what each
module sees. The plan is what connectors, modules and the RLlib config are built from.

A module whose agents all have the same spaces and that needs no indication or masks is *plain*:
RLlib's default module for the algorithm serves it, with no connector. Every other module sees a
padded (and possibly indicated) observation, an action mask and, for AdaPS, the agent's cluster
(laid out as in :attr:`ModulePlan.observation_space`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import gymnasium as gym
import numpy as np

from rllib_seps import spaces as sp
from rllib_seps.mapping import AgentToModuleMapping, cluster_module_id

SHARED_MODULE_ID = "shared"
OBS_KEY, MASK_KEY, CLUSTER_KEY = "observations", "action_mask", "cluster"  # image modules' Dict keys
# Beyond this many agents a one-hot id is wasteful: a binary code indicates them compactly.
ONE_HOT_MAX_AGENTS = 64


@dataclass(frozen=True)
class AgentPlan:
    """How one agent is served.

    Attributes:
        module_id: The module the agent maps to.
        observation_space: The agent's own observation space.
        action_space: The agent's own action space.
        indicator: Index appended by agent indication (agent index or type), or None.
        cluster: The agent's cluster (AdaPS selects its mask by it), or None.
    """

    module_id: str
    observation_space: gym.Space
    action_space: gym.Space
    indicator: int | None = None
    cluster: int | None = None


@dataclass(frozen=True)
class ModulePlan:
    """What one module sees.

    Attributes:
        agents: Agents served (sorted).
        padded_observation_space: Common observation space before indication (None if plain).
        action_space: Common (padded) action space.
        indication: Agent indication method (see :mod:`rllib_seps.spaces`), or None.
        n_indicators: Number of distinct indicator values.
        n_clusters: Number of AdaPS clusters (masks), or 0 without AdaPS.
        plain: True when RLlib's default module serves it unchanged.
        cluster_centres: AdaPS only: the centre of each cluster in embedding space (row k for
            cluster k), from which :mod:`rllib_seps.adaps` derives the cluster's mask; empty
            when unknown (the module then uses equidistant centres).
    """

    agents: tuple[str, ...]
    padded_observation_space: gym.Space | None
    action_space: gym.Space
    indication: str | None = None
    n_indicators: int = 0
    n_clusters: int = 0
    plain: bool = False
    cluster_centres: tuple[tuple[float, ...], ...] = ()

    @property
    def image(self) -> bool:
        """True for a padded module of (H, W, C) images, whose input stays a Dict (see below)."""
        return not self.plain and len(self.padded_observation_space.shape) == 3

    @property
    def observation_space(self) -> gym.Space:
        """The module's input space.

        - Plain: the agents' own space.
        - Vectors (and matrices, flattened): one float32 vector ``[observation, indicator code,
          action mask, cluster index (AdaPS)]``. One array per step instead of a Dict of two or
          three: RLlib's per-step episode bookkeeping costs about twice as much for a Dict (see
          benchmarks/overhead.py), which made padded modules 10-20% slower than plain ones.
        - Images: a Dict {"observations": the indicated image, "action_mask", ["cluster"]} (a
          CNN needs the image's layout, and uint8 pixels stay uint8).
        """
        if self.plain:
            return self.padded_observation_space
        obs = self.padded_observation_space
        mask = gym.spaces.Box(0.0, 1.0, (mask_size(self.action_space),), np.float32)
        if self.image:
            if self.indication is not None:
                obs = sp.indicated_image_space(obs, self.indication, self.n_indicators)
            parts = {OBS_KEY: obs, MASK_KEY: mask}
            if self.n_clusters:
                parts[CLUSTER_KEY] = gym.spaces.Box(0, self.n_clusters - 1, (), np.int64)
            return gym.spaces.Dict(parts)
        obs = gym.spaces.Box(obs.low.ravel(), obs.high.ravel(), dtype=obs.dtype)
        if self.indication is not None:
            obs = sp.indicated_space(obs, self.indication, self.n_indicators)
        cluster = [self.n_clusters - 1] if self.n_clusters else []
        low = np.concatenate([obs.low.astype(np.float32), mask.low, np.zeros(len(cluster), np.float32)])
        high = np.concatenate([obs.high.astype(np.float32), mask.high, np.array(cluster, np.float32)])
        return gym.spaces.Box(low, high, dtype=np.float32)

    def split(self, module_input: Any) -> tuple[Any, Any, Any]:
        """(observation, action mask, cluster index or None) of one input of this padded module
        or a batch of them (numpy or torch)."""
        return split_input(module_input, mask_size(self.action_space), self.n_clusters)


def split_input(module_input: Any, n_mask: int, n_clusters: int) -> tuple[Any, Any, Any]:
    """(observation, action mask, cluster index or None) of padded-module inputs, in either layout
    of :attr:`ModulePlan.observation_space`, one or a batch (numpy arrays or torch tensors).

    Args:
        module_input: A flat vector (or batch of them) or an image module's Dict.
        n_mask: Size of the action mask.
        n_clusters: AdaPS clusters (0 without AdaPS: no cluster entry).
    """
    if isinstance(module_input, Mapping):
        return module_input[OBS_KEY], module_input[MASK_KEY], module_input.get(CLUSTER_KEY)
    n = module_input.shape[-1] - n_mask - (1 if n_clusters else 0)
    cluster = module_input[..., n + n_mask] if n_clusters else None
    return module_input[..., :n], module_input[..., n:n + n_mask], cluster


def mask_size(space: gym.Space) -> int:
    """Size of a padded module's action mask: its logits (Discrete, MultiDiscrete) or its
    dimensions (Box)."""
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    if isinstance(space, gym.spaces.MultiDiscrete):
        return int(np.sum(space.nvec))
    return int(np.prod(space.shape))


@dataclass
class SharingPlan:
    """The agents' and modules' plans of one sharing strategy.

    Attributes:
        strategy: nops, fups, fups_id, seps or adaps.
        agents: Plan of every agent (sorted).
        modules: Plan of every module (sorted).
    """

    strategy: str
    agents: dict[str, AgentPlan] = field(default_factory=dict)
    modules: dict[str, ModulePlan] = field(default_factory=dict)

    @property
    def mapping(self) -> AgentToModuleMapping:
        return AgentToModuleMapping({a: p.module_id for a, p in self.agents.items()})

    @property
    def needs_connectors(self) -> bool:
        return any(not m.plain for m in self.modules.values())


def _default_indication(space: gym.Space, n: int) -> str:
    is_image = isinstance(space, gym.spaces.Box) and len(space.shape) == 3
    if is_image:
        return "binary"
    return "one_hot" if n <= ONE_HOT_MAX_AGENTS else "binary"


def build_plan(strategy: str, observation_spaces: Mapping[str, gym.Space],
               action_spaces: Mapping[str, gym.Space], labels: Sequence[int] | None = None, *,
               indication: str | None = None, force_padding: bool = False,
               centres: Sequence[Sequence[float]] | None = None) -> SharingPlan:
    """Builds the plan of a sharing strategy.

    Args:
        strategy: ``nops`` (one module per agent), ``fups`` (one module), ``fups_id`` (one module
            plus agent indication), ``seps`` (one module per cluster) or ``adaps`` (one module,
            one mask per cluster).
        observation_spaces: Every agent's observation space.
        action_spaces: Every agent's action space.
        labels: Cluster of each agent, agents in sorted order (needed by seps and adaps).
        indication: Indication method for ``fups_id`` (default: one-hot agent index up to
            64 agents, a binary code beyond, a binary image code for images).
        force_padding: Serve even homogeneous modules through the padding connector and module
            (used to measure their overhead).
        centres: ``adaps`` only: `(K, m)` centre of each cluster (e.g. the mean encoder mean of
            its agents), kept in the module plan for the masks. Optional.

    Raises:
        ValueError: For an unknown strategy, missing labels, or spaces that cannot share.
    """
    agents = sorted(observation_spaces)
    if sorted(action_spaces) != agents:
        raise ValueError("Observation and action spaces must name the same agents; differ in "
                         f"{sorted(set(agents) ^ set(action_spaces))}.")
    if strategy in ("seps", "adaps") or indication == "type":
        if labels is None or len(labels) != len(agents):
            raise ValueError(f"Strategy {strategy!r} (indication {indication!r}) needs one cluster label per agent "
                             f"({len(agents)}); got {None if labels is None else len(labels)}.")
        labels = [int(label) for label in labels]
    if strategy == "nops":
        module_of = {a: a for a in agents}
    elif strategy in ("fups", "fups_id", "adaps"):
        module_of = dict.fromkeys(agents, SHARED_MODULE_ID)
    elif strategy == "seps":
        module_of = {a: cluster_module_id(c) for a, c in zip(agents, labels)}
    else:
        raise ValueError(f"Unknown sharing strategy {strategy!r}; choose one of "
                         "nops, fups, fups_id, seps, adaps.")

    n_clusters = max(labels) + 1 if strategy == "adaps" else 0
    centre_rows: tuple[tuple[float, ...], ...] = ()
    if n_clusters and centres is not None:
        centre_rows = tuple(tuple(float(v) for v in row) for row in centres)
        if len(centre_rows) != n_clusters or len({len(row) for row in centre_rows}) != 1:
            sizes = sorted({len(row) for row in centre_rows})
            raise ValueError(f"AdaPS needs one centre of one size per cluster ({n_clusters} clusters); "
                             f"got {len(centre_rows)} centres of sizes {sizes}.")
    plan = SharingPlan(strategy)
    for module_id in sorted(set(module_of.values())):
        members = [a for a in agents if module_of[a] == module_id]
        obs = {a: observation_spaces[a] for a in members}
        act = {a: action_spaces[a] for a in members}
        method = None
        if strategy == "fups_id":
            method = indication or _default_indication(obs[members[0]], len(members))
        homogeneous = len({repr(s) for s in obs.values()}) == 1 and len({repr(s) for s in act.values()}) == 1
        plain = homogeneous and method is None and not n_clusters and not force_padding
        # "type" indicates the agent's cluster; every other method its index among the members.
        n_ind = max(labels) + 1 if method == "type" else len(members)
        plan.modules[module_id] = ModulePlan(
            agents=tuple(members),
            padded_observation_space=obs[members[0]] if plain else sp.padded_observation_space(obs),
            action_space=act[members[0]] if plain else sp.padded_action_space(act),
            indication=method, n_indicators=n_ind if method else 0, n_clusters=n_clusters, plain=plain,
            cluster_centres=centre_rows,
        )
        for i, a in enumerate(members):
            plan.agents[a] = AgentPlan(
                module_id=module_id, observation_space=observation_spaces[a],
                action_space=action_spaces[a],
                indicator=(labels[agents.index(a)] if method == "type" else i) if method else None,
                cluster=labels[agents.index(a)] if n_clusters else None,
            )
    plan.agents = dict(sorted(plan.agents.items()))
    return plan
