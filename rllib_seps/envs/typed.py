"""The part every paper environment shares: fixed per-agent spaces and a hidden true type."""

from __future__ import annotations

from gymnasium import spaces
from pettingzoo import ParallelEnv


class TypedParallelEnv(ParallelEnv):
    """A PettingZoo ParallelEnv whose agents have fixed spaces and a true type.

    Subclasses set ``possible_agents``, ``observation_spaces`` and ``action_spaces``, and keep
    each agent's type as an int array (in ``possible_agents`` order) in the attribute named by
    :attr:`TYPE_ATTRIBUTE`.
    """

    TYPE_ATTRIBUTE = "colours"

    def observation_space(self, agent: str) -> spaces.Space:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self.action_spaces[agent]

    @property
    def agent_types(self) -> dict[str, int]:
        """Each agent's true type. For evaluation only: never part of an observation."""
        return dict(zip(self.possible_agents, getattr(self, self.TYPE_ATTRIBUTE).tolist()))
