"""The agent -> module mapping, as a small picklable object RLlib can call as policy_mapping_fn."""

from __future__ import annotations

from typing import Any, Mapping, NewType

AgentID = NewType("AgentID", str)
ModuleID = NewType("ModuleID", str)


def cluster_module_id(cluster: int) -> ModuleID:
    """Module id of a cluster: ``cluster_0``, ``cluster_1``, ..."""
    return ModuleID(f"cluster_{cluster}")


class AgentToModuleMapping:
    """``policy_mapping_fn(agent_id, episode=None, **kwargs) -> module id`` over a plain dict.

    Holds only the dict (never the encoder or other heavy state), so it pickles small and ships
    to every EnvRunner.

    Args:
        agent_to_module: Module id of every agent.

    Raises:
        ValueError: When called with an agent it has never seen.
    """

    def __init__(self, agent_to_module: Mapping[str, str]) -> None:
        self.agent_to_module = {str(a): str(m) for a, m in sorted(agent_to_module.items())}

    def __call__(self, agent_id: Any, episode: Any = None, **kwargs: Any) -> str:
        try:
            return self.agent_to_module[agent_id]
        except KeyError:
            known = list(self.agent_to_module)
            raise ValueError(
                f"The SePS mapping has no module for agent {agent_id!r}; it knows "
                f"{len(known)} agents: {known[:10]}{' ...' if len(known) > 10 else ''}. Agents must "
                "exist in the environment's possible_agents when pretraining runs."
            ) from None

    @property
    def module_ids(self) -> list[str]:
        """Distinct module ids, sorted."""
        return sorted(set(self.agent_to_module.values()))

    def agents_of(self, module_id: str) -> list[str]:
        """Agents (sorted) mapped to ``module_id``."""
        return [a for a, m in self.agent_to_module.items() if m == module_id]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AgentToModuleMapping) and other.agent_to_module == self.agent_to_module

    def __hash__(self) -> int:
        return hash(tuple(self.agent_to_module.items()))

    def __repr__(self) -> str:
        sizes = {m: len(self.agents_of(m)) for m in self.module_ids}
        return f"AgentToModuleMapping({len(self.agent_to_module)} agents -> {sizes})"
