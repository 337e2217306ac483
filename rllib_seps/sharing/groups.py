"""Every module of a sharing plan as one group of parameters of one grouped module.

Fast execution (see :mod:`rllib_seps.rllib.fast`) serves all agents with one module that holds
the parameters of every module of the plan, one *group* each: one for ``fups``, ``fups_id`` and
``adaps``, one per cluster for ``seps``, one per agent for ``nops``. Every agent's input follows
one :class:`rllib_seps.sharing.layout.InputLayout` padded over all agents, whose group entry
says which parameters serve the agent; indication and AdaPS clusters are those of the plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import gymnasium as gym
import numpy as np

from rllib_seps.sharing import spaces as sp
from rllib_seps.sharing.layout import AgentCode, Codes, InputLayout
from rllib_seps.sharing.plan import SharingPlan


@dataclass(frozen=True)
class GroupedPlan:
    """What a grouped module and the fast EnvRunner need to know of a sharing plan.

    Attributes:
        strategy: The plan's strategy.
        layout: Input of the grouped module: observations and actions padded over all agents, the
            plan's indication and AdaPS clusters, ``n_groups = len(groups)``.
        groups: The plan's module ids; group ``k`` holds the parameters of module ``groups[k]``.
        agents: Every agent, by group and then by name: the order of every per-agent array, so
            that a batch of agent-major rows is sorted by group.
        codes: Each agent's :class:`AgentCode` (its indicator, action mask, cluster and group).
        observation_spaces: Each agent's own observation space, in agent order.
        action_spaces: Each agent's own action space, in agent order.
        cluster_centres: AdaPS only: the plan's cluster centres (see
            :attr:`rllib_seps.sharing.plan.ModulePlan.cluster_centres`).
    """

    strategy: str
    layout: InputLayout
    groups: tuple[str, ...]
    agents: tuple[str, ...]
    codes: tuple[AgentCode, ...]
    observation_spaces: tuple[gym.Space, ...]
    action_spaces: tuple[gym.Space, ...]
    cluster_centres: tuple[tuple[float, ...], ...] = ()

    @property
    def group_of_agent(self) -> np.ndarray:
        """``(n_agents,)`` int64: each agent's group."""
        return np.array([code.group for code in self.codes], np.int64)

    def agents_of(self, group: int) -> list[str]:
        """The agents (sorted) whose parameters are group ``group``."""
        return [a for a, code in zip(self.agents, self.codes) if code.group == group]

    def stacked_codes(self, agent_indices: Sequence[int] | None = None) -> Codes:
        """The layout's :class:`Codes` of the given agents (default: all, in agent order)."""
        indices = range(len(self.agents)) if agent_indices is None else agent_indices
        return self.layout.codes([self.codes[i] for i in indices])


def grouped_plan(plan: SharingPlan) -> GroupedPlan:
    """The grouped form of ``plan``: one group per module, agents padded to common spaces.

    Raises:
        ValueError: If the agents' spaces cannot share one padded input (e.g. image and vector
            observations, or Discrete and Box actions), naming the spaces.
    """
    groups = tuple(plan.modules)
    agents = tuple(sorted(plan.agents, key=lambda a: groups.index(plan.agents[a].module_id)))  # stable
    observation_spaces = tuple(plan.agents[a].observation_space for a in agents)
    action_spaces = tuple(plan.agents[a].action_space for a in agents)
    shared = [m.layout for m in plan.modules.values() if m.layout is not None]
    indication = next((lay.indication for lay in shared if lay.indication), None)
    n_indicators = next((lay.n_indicators for lay in shared if lay.indication), 0)
    n_clusters = max((lay.n_clusters for lay in shared), default=0)
    layout = InputLayout(sp.padded_observation_space(dict(zip(agents, observation_spaces))),
                         sp.padded_action_space(dict(zip(agents, action_spaces))),
                         indication=indication, n_indicators=n_indicators, n_clusters=n_clusters,
                         n_groups=len(groups))
    codes = []
    for agent, space in zip(agents, action_spaces):
        own = plan.agents[agent]
        code = own.code
        codes.append(layout.agent_code(space, indicator=code.indicator if code else None,
                                       cluster=code.cluster if code else None,
                                       group=groups.index(own.module_id)))
    centres = next((m.cluster_centres for m in plan.modules.values() if m.cluster_centres), ())
    return GroupedPlan(plan.strategy, layout, groups, agents, tuple(codes), observation_spaces,
                       action_spaces, centres)
