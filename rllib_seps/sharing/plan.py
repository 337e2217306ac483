"""From a sharing strategy (and clusters) to a plan: which module each agent uses, and what each
module sees. The plan is what connectors, modules and the RLlib config are built from.

A module whose agents all have the same spaces, that needs no indication or masks, and whose
observation space the algorithm's default module reads (RLlib's catalog: flat vectors, and images
of the sizes it has CNN filters for) is *plain*: RLlib's default module serves it, with no
connector. Every other module is *shared*: it sees the input described by its
:class:`rllib_seps.sharing.layout.InputLayout` (padded, possibly indicated observation, action
mask and, for AdaPS, the agent's cluster).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import gymnasium as gym

from rllib_seps.sharing import spaces as sp
from rllib_seps.sharing.layout import AgentCode, InputLayout
from rllib_seps.sharing.mapping import AgentID, AgentToModuleMapping, cluster_module_id, sorted_agents

SHARED_MODULE_ID = "shared"
# Beyond this many agents a one-hot id is wasteful: a binary code indicates them compactly.
ONE_HOT_MAX_AGENTS = 64


@dataclass(frozen=True)
class AgentPlan:
    """How one agent is served.

    Attributes:
        module_id: The module the agent maps to.
        observation_space: The agent's own observation space.
        action_space: The agent's own action space.
        code: What its module's layout adds to its observations (None for plain modules).
    """

    module_id: str
    observation_space: gym.Space
    action_space: gym.Space
    code: AgentCode | None = None


@dataclass(frozen=True)
class ModulePlan:
    """What one module sees.

    Attributes:
        agents: Agents served (sorted).
        observation_space: The module's observation space (a plain module's agents' own space,
            else ``layout.space``).
        action_space: The module's action space (padded for shared modules).
        layout: The input layout of a shared module; None for a plain one.
        cluster_centres: AdaPS only: the centre of each cluster in embedding space (row k for
            cluster k), from which :mod:`rllib_seps.sharing.adaps` derives the cluster's mask;
            empty when unknown (the module then uses equidistant centres).
    """

    agents: tuple[AgentID, ...]
    observation_space: gym.Space
    action_space: gym.Space
    layout: InputLayout | None = None
    cluster_centres: tuple[tuple[float, ...], ...] = ()

    @property
    def plain(self) -> bool:
        """True when RLlib's default module serves it unchanged."""
        return self.layout is None


@dataclass
class SharingPlan:
    """The agents' and modules' plans of one sharing strategy.

    Attributes:
        strategy: nops, fups, fups_id, seps or adaps.
        agents: Plan of every agent (sorted).
        modules: Plan of every module (sorted).
    """

    strategy: str
    agents: dict[AgentID, AgentPlan] = field(default_factory=dict)
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


def _all_same(spaces) -> bool:
    """True if every space is exactly the same; False for one :func:`space_key` cannot compare
    (the layout then names the agent whose space it cannot serve)."""
    try:
        return len({sp.space_key(space) for space in spaces}) == 1
    except TypeError:
        return False


def is_flat_vector(space: gym.Space) -> bool:
    """True for a 1-D Box: what every algorithm's default module reads (the plan's default
    ``default_reads``)."""
    return isinstance(space, gym.spaces.Box) and len(space.shape) == 1


def build_plan(strategy: str, observation_spaces: Mapping[AgentID, gym.Space],
               action_spaces: Mapping[AgentID, gym.Space], labels: Sequence[int] | None = None, *,
               indication: str | None = None, force_padding: bool = False,
               centres: Sequence[Sequence[float]] | None = None,
               default_reads: Callable[[gym.Space], bool] = is_flat_vector) -> SharingPlan:
    """Builds the plan of a sharing strategy.

    Args:
        strategy: ``nops`` (one module per agent), ``fups`` (one module), ``fups_id`` (one module
            plus agent indication), ``seps`` (one module per cluster) or ``adaps`` (one module,
            one mask per cluster).
        observation_spaces: Every agent's observation space (agents of any hashable id).
        action_spaces: Every agent's action space.
        labels: Cluster of each agent, agents in :func:`sorted_agents` order (needed by seps
            and adaps).
        indication: Indication method for ``fups_id`` (default: one-hot agent index up to
            64 agents, a binary code beyond, a binary image code for images).
        force_padding: Serve even homogeneous modules through the padding connector and module
            (used to measure their overhead).
        centres: ``adaps`` only: `(K, m)` centre of each cluster (e.g. the mean encoder mean of
            its agents), kept in the module plan for the masks. Optional.
        default_reads: Whether the algorithm's default module reads an observation space as it
            is; a homogeneous module whose space it cannot read (a Dict, a small image) is served
            through a layout (flattened, or the shared module's CNN) instead of plain.

    Raises:
        ValueError: For an unknown strategy, missing labels, spaces that cannot share, or a
            legal-action mask that does not fit the agent's actions.
    """
    agents = sorted_agents(observation_spaces)
    if set(action_spaces) != set(agents):
        raise ValueError("Observation and action spaces must name the same agents; differ in "
                         f"{sorted_agents(set(agents) ^ set(action_spaces))}.")
    for a in agents:
        sp.check_env_action_mask(observation_spaces[a], action_spaces[a], f"Agent {a!r}")
    if strategy in ("seps", "adaps") or indication == "type":
        if labels is None or len(labels) != len(agents):
            raise ValueError(f"Strategy {strategy!r} (indication {indication!r}) needs one cluster label per agent "
                             f"({len(agents)}); got {None if labels is None else len(labels)}.")
        labels = [int(label) for label in labels]
    if strategy == "nops":
        module_of = {a: str(a) for a in agents}  # RLlib's module ids are strings
        if len(set(module_of.values())) < len(agents):
            raise ValueError(f"Agents {agents} give the same module id as strings; nops needs one "
                             "module id per agent. Fix: give the agents distinct names.")
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
    label_of = dict(zip(agents, labels)) if labels is not None else {}
    for module_id in sorted(set(module_of.values())):
        members = [a for a in agents if module_of[a] == module_id]
        obs = {a: observation_spaces[a] for a in members}
        act = {a: action_spaces[a] for a in members}
        method = None
        if strategy == "fups_id":
            method = indication or _default_indication(obs[members[0]], len(members))
        homogeneous = _all_same(obs.values()) and _all_same(act.values())
        # An env's legal-action mask needs the shared module, which masks the logits with it.
        as_is = (homogeneous and method is None and not n_clusters and not force_padding
                 and not sp.has_env_action_mask(obs[members[0]]))
        if as_is and default_reads(obs[members[0]]):
            plan.modules[module_id] = ModulePlan(tuple(members), obs[members[0]], act[members[0]])
            for a in members:
                plan.agents[a] = AgentPlan(module_id, observation_spaces[a], action_spaces[a])
            continue
        # "type" indicates the agent's cluster; every other method its index among the members.
        n_ind = max(labels) + 1 if method == "type" else len(members)
        layout = InputLayout(sp.padded_observation_space(obs), sp.padded_action_space(act),
                             indication=method, n_indicators=n_ind if method else 0,
                             n_clusters=n_clusters)
        plan.modules[module_id] = ModulePlan(tuple(members), layout.space, layout.action_space,
                                             layout=layout, cluster_centres=centre_rows)
        for i, a in enumerate(members):
            indicator = (label_of[a] if method == "type" else i) if method else None
            code = layout.agent_code(action_spaces[a], indicator=indicator,
                                     cluster=label_of[a] if n_clusters else None)
            plan.agents[a] = AgentPlan(module_id, observation_spaces[a], action_spaces[a], code)
    plan.agents = {a: plan.agents[a] for a in agents}
    plan.modules = dict(sorted(plan.modules.items()))
    return plan
