"""Random-policy rollouts for SePS pretraining, collected by stepping the environment directly.

RLlib's EnvRunners could sample random actions too, but they still run connectors, callbacks and
metrics (random episodes would pollute the reported returns) and spend most of their time in
per-agent episode bookkeeping. Stepping the ``MultiAgentEnv`` directly avoids both.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import concatenate, create_empty_array
from tqdm.auto import tqdm

from rllib_seps.sharing.spaces import flatten_to_vector

EnvCreator = Callable[[dict], Any]
_LEAVES = (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)


@dataclass
class Transitions:
    """Every agent's transitions, flattened and zero-padded to common sizes.

    Attributes:
        agent_ids: Agents in sorted order; ``agent`` indexes into it.
        agent: ``(T,)`` int64, the agent of each transition.
        obs: ``(T, D)`` float32 observations (flattened, padded to the largest size D).
        action: ``(T, A)`` float32 action encodings (one-hot for discrete, raw for Box).
        reward: ``(T,)`` float32 the agent's own reward.
        next_obs: ``(T, D)`` float32 next observations.
        obs_mask: ``(N, D)`` bool, True where an agent's observation has a real (not padded) entry.
        episodes: ``(N,)`` int64, how many episodes each agent's transitions come from.
        seconds: Wall time of the collection.
    """

    agent_ids: list[str]
    agent: np.ndarray
    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    obs_mask: np.ndarray
    episodes: np.ndarray
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.agent)

    def per_agent_counts(self) -> dict[str, int]:
        """Number of transitions collected for each agent."""
        counts = np.bincount(self.agent, minlength=len(self.agent_ids))
        return dict(zip(self.agent_ids, counts.tolist()))

    def extended(self, more: "Transitions") -> "Transitions":
        """These transitions followed by ``more`` of the same agents (each agent's rows stay in
        collection order)."""
        if more.agent_ids != self.agent_ids or not np.array_equal(more.obs_mask, self.obs_mask):
            raise ValueError("Can only extend transitions of the same agents and observation sizes.")
        return Transitions(self.agent_ids, *(np.concatenate([getattr(self, k), getattr(more, k)])
                                             for k in ("agent", "obs", "action", "reward", "next_obs")),
                           obs_mask=self.obs_mask, episodes=self.episodes + more.episodes,
                           seconds=self.seconds + more.seconds)


def _flatten_batch(items: list, space: gym.Space) -> np.ndarray:
    """One agent's observations (or actions) -> ``(len(items), flatdim)`` float32 rows."""
    # Leaf spaces' values stack directly; Dict and Tuple values go through gymnasium's own batching.
    batch = (np.asarray(items) if isinstance(space, _LEAVES)
             else concatenate(space, items, create_empty_array(space, len(items))))
    return flatten_to_vector(batch, space)


def make_env(env_creator: EnvCreator, env_config: dict) -> Any:
    """Creates the environment and checks that it is multi-agent.

    Any env with ``possible_agents``, per-agent ``observation_spaces`` and ``action_spaces``, and
    dict-based ``reset``/``step`` works (an RLlib ``MultiAgentEnv``); no RLlib import is needed.

    Raises:
        TypeError: If the creator returns something else.
    """
    env = env_creator(dict(env_config))
    if not all(hasattr(env, name) for name in ("possible_agents", "reset", "step")):
        raise TypeError(
            f"SePS needs a multi-agent environment (ray.rllib.env.MultiAgentEnv), but the env "
            f"creator returned {type(env).__name__}. Wrap a PettingZoo ParallelEnv with "
            "rllib_seps.envs.SortedParallelEnv, or register a MultiAgentEnv."
        )
    return env


def _collect_per_agent(env_creator: EnvCreator, env_config: dict, transitions_per_agent: int,
                       seed: int, progress: bool) -> tuple[list[str], dict[str, tuple]]:
    """Steps the env with uniform random actions until every agent has enough transitions.

    Returns:
        The sorted agent ids and, per agent, four arrays in time order: flat observations
        ``(T_a, D_a)``, flat actions ``(T_a, A_a)``, rewards ``(T_a,)`` and flat next
        observations, and the number of episodes they come from.
    """
    env = make_env(env_creator, env_config)
    agent_ids = sorted(env.possible_agents)
    rng = np.random.default_rng(seed)
    for i, aid in enumerate(agent_ids):
        env.action_spaces[aid].seed(int(rng.integers(2**31)) + i)
    data = {a: ([], [], [], []) for a in agent_ids}
    counts = dict.fromkeys(agent_ids, 0)
    episode, last_episode, episodes = 0, dict.fromkeys(agent_ids, -1), dict.fromkeys(agent_ids, 0)
    # An agent that never acts would loop forever: give up after generous many steps.
    max_steps = 100 * transitions_per_agent + 10_000
    bar = tqdm(total=transitions_per_agent, desc="SePS rollouts", unit="transitions/agent",
               disable=not progress, leave=False)
    obs, _ = env.reset(seed=seed)
    steps = 0
    while min(counts.values()) < transitions_per_agent:
        if steps >= max_steps:
            short = sorted(a for a, c in counts.items() if c < transitions_per_agent)
            raise RuntimeError(
                f"After {steps} random steps agents {short[:10]} still have fewer than "
                f"{transitions_per_agent} transitions; do they ever act? Lower "
                "transitions_per_agent or check the environment's agent list."
            )
        actions = {a: env.action_spaces[a].sample() for a in obs}
        next_obs, rewards, terminateds, truncateds, _ = env.step(actions)
        steps += 1
        for a, act in actions.items():
            if a not in next_obs:  # the agent left without a final observation
                continue
            o, u, r, n = data[a]
            o.append(obs[a])
            u.append(act)
            r.append(float(rewards.get(a, 0.0)))
            n.append(next_obs[a])
            counts[a] += 1
            if last_episode[a] != episode:
                last_episode[a], episodes[a] = episode, episodes[a] + 1
        if steps % 50 == 0:
            bar.n = min(min(counts.values()), transitions_per_agent)
            bar.refresh()
        if terminateds.get("__all__") or truncateds.get("__all__"):
            obs, _ = env.reset()
            episode += 1
        else:
            obs = {a: o for a, o in next_obs.items()
                   if not (terminateds.get(a) or truncateds.get(a))}
    bar.close()
    flat = {}
    for a, (o, u, r, n) in data.items():
        obs_space, act_space = env.observation_spaces[a], env.action_spaces[a]
        flat[a] = (_flatten_batch(o, obs_space), _flatten_batch(u, act_space),
                   np.asarray(r, np.float32), _flatten_batch(n, obs_space), episodes[a])
    env.close()
    return agent_ids, flat


def _pad(x: np.ndarray, width: int) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, width - x.shape[1])))


def collect_random_rollouts(env_creator: EnvCreator, env_config: dict | None = None, *,
                            transitions_per_agent: int = 1000, seed: int = 0, num_tasks: int = 0,
                            progress: bool = True) -> Transitions:
    """Collects uniform-random-policy transitions of every agent.

    Args:
        env_creator: Callable ``env_config -> MultiAgentEnv`` (what ``register_env`` takes).
        env_config: The config passed to the creator.
        transitions_per_agent: Transitions to collect for each agent (at least).
        seed: Seed of the environment resets and the random actions.
        num_tasks: If > 0, split the collection over this many Ray tasks (Ray must be
            initialised); their results are concatenated in task order, so the data is the same
            wherever the tasks run.
        progress: Show a progress bar.

    Returns:
        The transitions, agents in sorted order, each agent's rows in time order (task by task),
        observations and actions padded to common sizes.
    """
    start = time.perf_counter()
    env_config = dict(env_config or {})
    if num_tasks > 0:
        import ray

        per_task = math.ceil(transitions_per_agent / num_tasks)
        remote = ray.remote(num_cpus=1)(_collect_per_agent)
        parts = ray.get([remote.remote(env_creator, env_config, per_task, seed + 7919 * t, False)
                         for t in range(num_tasks)])
    else:
        parts = [_collect_per_agent(env_creator, env_config, transitions_per_agent, seed, progress)]

    agent_ids = parts[0][0]
    first = parts[0][1]
    d = max(first[a][0].shape[1] for a in agent_ids)
    u = max(first[a][1].shape[1] for a in agent_ids)
    columns: dict[str, list] = {"agent": [], "obs": [], "action": [], "reward": [], "next_obs": []}
    for i, a in enumerate(agent_ids):
        for _, data in parts:
            o, act, r, n, _ = data[a]
            columns["agent"].append(np.full(len(o), i, np.int64))
            columns["obs"].append(_pad(o, d))
            columns["action"].append(_pad(act, u))
            columns["reward"].append(r)
            columns["next_obs"].append(_pad(n, d))
    obs_mask = np.zeros((len(agent_ids), d), bool)
    for i, a in enumerate(agent_ids):
        obs_mask[i, : first[a][0].shape[1]] = True
    episodes = np.array([sum(data[a][4] for _, data in parts) for a in agent_ids], np.int64)
    return Transitions(agent_ids=agent_ids, obs_mask=obs_mask, episodes=episodes,
                       seconds=time.perf_counter() - start,
                       **{k: np.concatenate(v) for k, v in columns.items()})
