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
from tqdm.auto import tqdm

from rllib_seps.sharing.mapping import AgentID, sorted_agents

EnvCreator = Callable[[dict], Any]


@dataclass
class Transitions:
    """Every agent's transitions, flattened and zero-padded to common sizes.

    Attributes:
        agent_ids: Agents in ``sorted_agents`` order; ``agent`` indexes into it.
        agent: ``(T,)`` int64, the agent of each transition.
        obs: ``(T, D)`` float32 observations (flattened, padded to the largest size D).
        action: ``(T, A)`` float32 action encodings (one-hot for discrete, raw for Box).
        reward: ``(T,)`` float32 the agent's own reward.
        next_obs: ``(T, D)`` float32 next observations.
        obs_mask: ``(N, D)`` bool, True where an agent's observation has a real (not padded) entry.
        seconds: Wall time of the collection.
    """

    agent_ids: list[AgentID]
    agent: np.ndarray
    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    obs_mask: np.ndarray
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.agent)

    def per_agent_counts(self) -> dict[str, int]:
        """Number of transitions collected for each agent."""
        counts = np.bincount(self.agent, minlength=len(self.agent_ids))
        return dict(zip(self.agent_ids, counts.tolist()))


def _flattener(space: gym.Space) -> Callable[[Any], np.ndarray]:
    # Box observations and actions are by far the most common: skip gymnasium's generic dispatch.
    if isinstance(space, gym.spaces.Box):
        return lambda x: np.asarray(x, np.float32).reshape(-1)
    return lambda x: np.asarray(gym.spaces.flatten(space, x), np.float32)


def make_env(env_creator: EnvCreator, env_config: dict) -> Any:
    """Creates the environment and checks that it is multi-agent.

    Any env with ``possible_agents`` and dict-based ``reset``/``step`` works (an RLlib
    ``MultiAgentEnv``, also behind gymnasium's wrappers); no RLlib import is needed.

    Raises:
        TypeError: If the creator returns something else.
    """
    env = env_creator(dict(env_config))
    if not hasattr(env, "possible_agents") and hasattr(getattr(env, "unwrapped", None), "possible_agents"):
        env = env.unwrapped  # gym.make() of a registered multi-agent env wraps it
    if not all(hasattr(env, name) for name in ("possible_agents", "reset", "step")):
        raise TypeError(
            f"SePS needs a multi-agent environment (ray.rllib.env.MultiAgentEnv), but the env "
            f"creator returned {type(env).__name__}. Fix: register a MultiAgentEnv, or wrap a "
            "PettingZoo env in RLlib's ParallelPettingZooEnv (parallel) or PettingZooEnv (AEC)."
        )
    return env


def _space_getter(env: Any, kind: str) -> Callable[[Any], gym.Space]:
    """The env's public per-agent space accessor: RLlib's ``get_<kind>_space(agent)``, PettingZoo's
    ``<kind>_space(agent)``, else the ``<kind>_spaces`` dict (which RLlib's wrappers may leave None)."""
    getter = getattr(env, f"get_{kind}_space", None)
    if callable(getter):
        return getter
    method = getattr(env, f"{kind}_space", None)
    if callable(method):
        return method
    return lambda agent: getattr(env, f"{kind}_spaces")[agent]


def agent_spaces(env: Any) -> tuple[list, dict, dict]:
    """Every agent of a multi-agent env, with its observation and action space.

    Returns:
        The agents in :func:`rllib_seps.sharing.mapping.sorted_agents` order (never the hash-seed
        dependent order of a set), and their observation and action spaces.

    Raises:
        ValueError: If the env lists no agents, or gives an agent no space.
    """
    agents = sorted_agents(env.possible_agents)
    if not agents:
        raise ValueError(f"The environment {type(env).__name__} lists no possible_agents; SePS needs "
                         "every agent that can act. Fix: set possible_agents in the env's __init__.")
    spaces = []
    for kind in ("observation", "action"):
        get = _space_getter(env, kind)
        found = {a: get(a) for a in agents}
        missing = [a for a, space in found.items() if not isinstance(space, gym.Space)]
        if missing:
            raise ValueError(f"The environment {type(env).__name__} gives agents {missing[:10]} no "
                             f"{kind} space. Fix: return each agent's space from get_{kind}_space(agent).")
        spaces.append(found)
    return agents, spaces[0], spaces[1]


def _check_finite(values: np.ndarray, agent: Any, what: str, step: int, episode_step: int) -> None:
    """Raises ValueError naming the agent and step if ``values`` hold NaN or inf."""
    if not np.isfinite(values).all():
        bad = np.flatnonzero(~np.isfinite(np.atleast_1d(values)))
        raise ValueError(
            f"Agent {agent!r} got {what} with NaN or inf at step {step} of the random rollouts "
            f"(step {episode_step} of its episode; entries {bad[:10].tolist()}). SePS pretraining "
            "cannot learn from them. Fix: make the environment return finite values."
        )


def _collect_per_agent(env_creator: EnvCreator, env_config: dict, transitions_per_agent: int,
                       seed: int, progress: bool) -> tuple[list, dict[Any, list[list]]]:
    """Steps the env with uniform random actions until every agent has enough transitions.

    An agent's transition ends at its next observation, whenever that comes: at the next step
    in parallel envs, after the other agents' turns in turn-based (AEC) ones; rewards received
    in between are summed, as RLlib does.

    Returns:
        The agent ids (:func:`agent_spaces` order) and, per agent, four lists: obs, action,
        reward, next_obs.

    Raises:
        ValueError: If an observation or reward holds NaN or inf (naming the agent and step).
        RuntimeError: If some agent never collects enough transitions.
    """
    env = make_env(env_creator, env_config)
    agent_ids, obs_spaces, act_spaces = agent_spaces(env)
    rng = np.random.default_rng(seed)
    for i, aid in enumerate(agent_ids):
        act_spaces[aid].seed(int(rng.integers(2**31)) + i)
    flat_obs = {a: _flattener(obs_spaces[a]) for a in agent_ids}
    flat_act = {a: _flattener(act_spaces[a]) for a in agent_ids}
    data = {a: ([], [], [], []) for a in agent_ids}
    counts = dict.fromkeys(agent_ids, 0)
    # An agent that never acts would loop forever: give up after generous many steps.
    max_steps = 100 * transitions_per_agent + 10_000
    bar = tqdm(total=transitions_per_agent, desc="SePS rollouts", unit="transitions/agent",
               disable=not progress, leave=False)
    obs, _ = env.reset(seed=seed)
    # Agent -> [flat obs, flat action, reward so far], until its next observation arrives.
    pending: dict[Any, list] = {}
    steps = episode_step = 0
    while min(counts.values()) < transitions_per_agent:
        if steps >= max_steps:
            short = [a for a, c in counts.items() if c < transitions_per_agent]
            raise RuntimeError(
                f"After {steps} random steps agents {short[:10]} still have fewer than "
                f"{transitions_per_agent} transitions; do they ever act? Lower "
                "transitions_per_agent or check the environment's agent list."
            )
        actions = {a: act_spaces[a].sample() for a in obs}
        for a, act in actions.items():
            o = flat_obs[a](obs[a])
            _check_finite(o, a, "an observation", steps, episode_step)
            pending[a] = [o, flat_act[a](act), 0.0]
        next_obs, rewards, terminateds, truncateds, _ = env.step(actions)
        steps += 1
        episode_step += 1
        for a, r in rewards.items():
            if a in pending:
                _check_finite(np.asarray(r, np.float64), a, "a reward", steps, episode_step)
                pending[a][2] += float(r)
        for a, o in next_obs.items():
            if a in pending:
                n = flat_obs[a](o)
                _check_finite(n, a, "an observation", steps, episode_step)
                for column, value in zip(data[a], (*pending.pop(a), n)):
                    column.append(value)
                counts[a] += 1
        if steps % 50 == 0:
            bar.n = min(min(counts.values()), transitions_per_agent)
            bar.refresh()
        if terminateds.get("__all__") or truncateds.get("__all__"):
            obs, _ = env.reset()
            pending.clear()  # agents that left without a final observation
            episode_step = 0
        else:
            gone = {a for a in (*terminateds, *truncateds) if terminateds.get(a) or truncateds.get(a)}
            for a in gone:
                pending.pop(a, None)
            obs = {a: o for a, o in next_obs.items() if a not in gone}
    bar.close()
    env.close()
    return agent_ids, data


def _pad(arrays: Sequence[np.ndarray], width: int) -> np.ndarray:
    out = np.zeros((len(arrays), width), np.float32)
    for row, a in zip(out, arrays):
        row[: a.shape[0]] = a
    return out


def tasks_per_node() -> int:
    """One rollout task per alive node when Ray runs on several nodes, else 0 (in-process)."""
    import ray

    if not ray.is_initialized():
        return 0
    nodes = sum(1 for node in ray.nodes() if node["Alive"])
    return nodes if nodes > 1 else 0


def collect_random_rollouts(env_creator: EnvCreator, env_config: dict | None = None, *,
                            transitions_per_agent: int = 1000, seed: int = 0,
                            num_tasks: int | str = 0, progress: bool = True) -> Transitions:
    """Collects uniform-random-policy transitions of every agent.

    Args:
        env_creator: Callable ``env_config -> MultiAgentEnv`` (what ``register_env`` takes).
        env_config: The config passed to the creator.
        transitions_per_agent: Transitions to collect for each agent (at least).
        seed: Seed of the environment resets and the random actions.
        num_tasks: If > 0, split the collection over this many Ray tasks (Ray must be
            initialised), spread over the cluster's nodes; their results are concatenated in
            task order, so the data is the same wherever the tasks run. "auto":
            :func:`tasks_per_node`.
        progress: Show a progress bar.

    Returns:
        The transitions, agents in sorted order, observations and actions padded to common sizes.
    """
    start = time.perf_counter()
    env_config = dict(env_config or {})
    if num_tasks == "auto":
        num_tasks = tasks_per_node()
    if num_tasks > 0:
        import ray

        per_task = math.ceil(transitions_per_agent / num_tasks)
        remote = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(_collect_per_agent)
        parts = ray.get([remote.remote(env_creator, env_config, per_task, seed + 7919 * t, False)
                         for t in range(num_tasks)])
    else:
        parts = [_collect_per_agent(env_creator, env_config, transitions_per_agent, seed, progress)]

    agent_ids = parts[0][0]
    obs_dims = {a: parts[0][1][a][0][0].shape[0] for a in agent_ids}
    act_dims = {a: parts[0][1][a][1][0].shape[0] for a in agent_ids}
    d, u = max(obs_dims.values()), max(act_dims.values())
    columns: dict[str, list] = {"agent": [], "obs": [], "action": [], "reward": [], "next_obs": []}
    for i, a in enumerate(agent_ids):
        for _, data in parts:
            o, act, r, n = data[a]
            columns["agent"].append(np.full(len(o), i, np.int64))
            columns["obs"].append(_pad(o, d))
            columns["action"].append(_pad(act, u))
            columns["reward"].append(np.asarray(r, np.float32))
            columns["next_obs"].append(_pad(n, d))
    obs_mask = np.zeros((len(agent_ids), d), bool)
    for i, a in enumerate(agent_ids):
        obs_mask[i, : obs_dims[a]] = True
    return Transitions(agent_ids=agent_ids, obs_mask=obs_mask,
                       seconds=time.perf_counter() - start,
                       **{k: np.concatenate(v) for k, v in columns.items()})
