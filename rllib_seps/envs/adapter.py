"""RLlib MultiAgentEnv adapter for PettingZoo ParallelEnvs with a stable, sorted agent order.

RLlib's own ``ParallelPettingZooEnv`` builds its agent list from a ``set``, so the order changes
with ``PYTHONHASHSEED`` and between Ray worker processes. Everything in rllib-seps that indexes
agents (one-hot ids, embeddings, clusters) relies on the sorted order this adapter gives.
"""

from __future__ import annotations

from typing import Any, Callable

from pettingzoo import ParallelEnv
from ray.rllib.env.multi_agent_env import MultiAgentEnv


class SortedParallelEnv(MultiAgentEnv):
    """Wraps a PettingZoo ``ParallelEnv`` as an RLlib ``MultiAgentEnv``.

    Args:
        env: The PettingZoo parallel environment. Its ``agent_types`` property (true type per
            agent, for evaluation only), if any, is passed through.
    """

    def __init__(self, env: ParallelEnv) -> None:
        super().__init__()
        self.par_env = env
        self.possible_agents = sorted(env.possible_agents)
        self.agents = list(self.possible_agents)
        self.observation_spaces = {a: env.observation_space(a) for a in self.possible_agents}
        self.action_spaces = {a: env.action_space(a) for a in self.possible_agents}

    @property
    def agent_types(self) -> dict[str, int] | None:
        """The wrapped env's true agent types (evaluation only), or None if it has none."""
        return getattr(self.par_env, "agent_types", None)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, infos = self.par_env.reset(seed=seed, options=options)
        self.agents = sorted(obs)
        return obs, infos

    def step(self, action_dict: dict[str, Any]):
        obs, rewards, terminateds, truncateds, infos = self.par_env.step(action_dict)
        terminateds = dict(terminateds)
        truncateds = dict(truncateds)
        terminateds["__all__"] = all(terminateds.values())
        truncateds["__all__"] = all(truncateds.values())
        self.agents = sorted(self.par_env.agents)
        return obs, rewards, terminateds, truncateds, infos

    def close(self) -> None:
        self.par_env.close()


def rllib_creator(make: Callable[..., ParallelEnv]) -> Callable[[dict], SortedParallelEnv]:
    """Turns a ParallelEnv factory taking keyword options into an RLlib env creator.

    RLlib passes an ``EnvContext`` (a dict of the user's ``env_config`` plus worker info); only
    the user's keys are forwarded, and a worker-dependent seed is derived when ``seed`` is set so
    that parallel EnvRunners do not replay the same episodes.
    """

    def creator(env_config: dict | None = None) -> SortedParallelEnv:
        kwargs = dict(env_config or {})
        worker = getattr(env_config, "worker_index", 0) or 0
        vector = getattr(env_config, "vector_index", 0) or 0
        if kwargs.get("seed") is not None:
            kwargs["seed"] = int(kwargs["seed"]) + 1000 * worker + vector
        return SortedParallelEnv(make(**kwargs))

    return creator
