"""The agent -> module mapping, as a small picklable object RLlib can call as policy_mapping_fn, and
the one agent order everything that indexes agents uses."""

from __future__ import annotations

from typing import Any, Callable, Hashable, Iterable, Mapping, NewType

AgentID = Hashable
"""Agents are named by any hashable id, as in RLlib (strings, or ints as in ``MultiAgentCartPole``)."""
ModuleID = NewType("ModuleID", str)


def sorted_agents(agents: Iterable[AgentID]) -> list[AgentID]:
    """The agents in a stable order that never depends on the hash seed.

    RLlib's PettingZoo wrappers build ``possible_agents`` from a ``set``, so their order changes with
    ``PYTHONHASHSEED``; one-hot ids, embeddings and clusters index agents in this order instead.
    Ids are sorted by type name, then by value (ints numerically: 2 before 10), or by ``repr``
    where values of one type cannot be compared.
    """
    agents = list(agents)
    try:
        return sorted(agents, key=lambda a: (type(a).__name__, a))
    except TypeError:
        return sorted(agents, key=lambda a: (type(a).__name__, repr(a)))


def cluster_module_id(cluster: int) -> ModuleID:
    """Module id of a cluster: ``cluster_0``, ``cluster_1``, ..."""
    return ModuleID(f"cluster_{cluster}")


class AgentToModuleMapping:
    """``policy_mapping_fn(agent_id, episode=None, **kwargs) -> module id`` over a plain dict.

    Holds only the dict (never the encoder or other heavy state), so it pickles small and ships
    to every EnvRunner. Agent ids keep their own type (an int id stays an int).

    Args:
        agent_to_module: Module id of every agent.
        on_unmapped: Called with an agent it has no module for, before it raises (the RLlib
            layer records the agent where the driver finds it: RLlib ends an EnvRunner that
            raises, and its fault tolerance only logs the error).

    Raises:
        ValueError: When called with an agent it has never seen.
    """

    def __init__(self, agent_to_module: Mapping[AgentID, str],
                 on_unmapped: Callable[[AgentID], None] | None = None) -> None:
        self.agent_to_module = {a: str(agent_to_module[a]) for a in sorted_agents(agent_to_module)}
        self.on_unmapped = on_unmapped

    def __call__(self, agent_id: AgentID, episode: Any = None, **kwargs: Any) -> str:
        try:
            return self.agent_to_module[agent_id]
        except KeyError:
            if self.on_unmapped is not None:
                self.on_unmapped(agent_id)
            known = list(self.agent_to_module)
            raise ValueError(
                f"The SePS mapping has no module for agent {agent_id!r}; it knows "
                f"{len(known)} agents: {known[:10]}{' ...' if len(known) > 10 else ''}. Fix: list "
                "every agent that can ever act in the environment's possible_agents (on every "
                "EnvRunner, whatever its env_config), then build the config again."
            ) from None

    @property
    def module_ids(self) -> list[str]:
        """Distinct module ids, sorted."""
        return sorted(set(self.agent_to_module.values()))

    def agents_of(self, module_id: str) -> list[AgentID]:
        """Agents (in :func:`sorted_agents` order) mapped to ``module_id``."""
        return [a for a, m in self.agent_to_module.items() if m == module_id]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AgentToModuleMapping) and other.agent_to_module == self.agent_to_module

    def __hash__(self) -> int:
        return hash(tuple(self.agent_to_module.items()))

    def __repr__(self) -> str:
        sizes = {m: len(self.agents_of(m)) for m in self.module_ids}
        return f"AgentToModuleMapping({len(self.agent_to_module)} agents -> {sizes})"
