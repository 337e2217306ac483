"""Random-policy rollouts for SePS pretraining, collected by stepping the environment directly.

RLlib's EnvRunners could sample random actions too, but they still run connectors, callbacks and
metrics (random episodes would pollute the reported returns) and spend most of their time in
per-agent episode bookkeeping. Stepping the ``MultiAgentEnv`` directly avoids both.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, NoReturn

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import concatenate, create_empty_array
from tqdm.auto import tqdm

from rllib_seps.sharing.mapping import AgentID, sorted_agents
from rllib_seps.sharing.spaces import ENV_MASK_KEY, check_env_action_mask, flatten_to_vector, has_env_action_mask

EnvCreator = Callable[[dict], Any]
_LEAVES = (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)


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
        episodes: ``(N,)`` int64, how many episodes each agent's transitions come from.
        seconds: Wall time of the collection.
    """

    agent_ids: list[AgentID]
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

    def reward_events(self) -> list[np.ndarray]:
        """Per agent, in collection order, whether each of its transitions has a reward other than
        the agent's most common one: where rewards are rare, what tells types apart."""
        # One stable sort by agent, not a pass over all rows per agent (1000 agents: 1000 passes).
        counts = np.bincount(self.agent, minlength=len(self.agent_ids))
        events = []
        for reward in np.split(self.reward[np.argsort(self.agent, kind="stable")], np.cumsum(counts)[:-1]):
            found, found_counts = np.unique(reward, return_counts=True)
            events.append(reward != found[found_counts.argmax()])
        return events

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
        ValueError: If the env lists no agents, gives an agent no space, or a legal-action mask
            that does not fit the agent's actions.
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
    for agent in agents:
        check_env_action_mask(spaces[0][agent], spaces[1][agent], f"Agent {agent!r}")
    return agents, spaces[0], spaces[1]


def _first_not_finite(values: np.ndarray) -> int | None:
    """Index of the first row of ``values`` that holds NaN or inf, else None."""
    bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    return int(np.argmax(bad)) if bad.any() else None


def _raise_not_finite(agent: Any, what: str, step: int, episode_step: int) -> NoReturn:
    raise ValueError(
        f"Agent {agent!r} got {what} with NaN or inf at step {step} of the random rollouts "
        f"(step {episode_step} of its episode). SePS pretraining cannot learn from it. "
        "Fix: make the environment return finite values."
    )


def _legal_actions(obs: dict, space: gym.spaces.Discrete | gym.spaces.MultiDiscrete) -> np.ndarray | tuple:
    """The env's legal-action mask in ``obs`` as gymnasium's ``sample(mask=...)`` takes it."""
    mask = np.asarray(obs[ENV_MASK_KEY], np.int8).ravel()
    if isinstance(space, gym.spaces.Discrete):
        return mask
    return tuple(np.split(mask, np.cumsum(space.nvec)[:-1]))


def _collect_per_agent(env_creator: EnvCreator, env_config: dict, transitions_per_agent: int,
                       seed: int, progress: bool, min_episodes: int = 0,
                       max_transitions_per_agent: int | None = None) -> tuple[list, dict[Any, tuple]]:
    """Steps the env with uniform random actions (among the legal ones where the env gives a
    legal-action mask) until every agent has enough transitions (and, short of
    ``max_transitions_per_agent``, transitions from ``min_episodes`` episodes).

    An agent's transition ends at its next observation, whenever that comes: at the next step
    in parallel envs, after the other agents' turns in turn-based (AEC) ones; rewards received
    in between are summed, as RLlib does.

    Returns:
        The agent ids (:func:`agent_spaces` order) and, per agent, in time order: flat
        observations ``(T_a, D_a)``, flat actions ``(T_a, A_a)``, rewards ``(T_a,)``, flat next
        observations, and the number of episodes they come from.

    Raises:
        ValueError: If an observation or reward holds NaN or inf (naming the agent and step).
        RuntimeError: If some agent never collects enough transitions.
    """
    env = make_env(env_creator, env_config)
    agent_ids, obs_spaces, act_spaces = agent_spaces(env)
    rng = np.random.default_rng(seed)
    for i, aid in enumerate(agent_ids):
        act_spaces[aid].seed(int(rng.integers(2**31)) + i)
    legal = {a: has_env_action_mask(obs_spaces[a]) for a in agent_ids}
    # Per agent: obs, action, reward, when obs came (step, episode step), next obs, when it came.
    data = {a: ([], [], [], [], [], []) for a in agent_ids}
    counts = dict.fromkeys(agent_ids, 0)
    episode, last_episode, episodes = 0, dict.fromkeys(agent_ids, -1), dict.fromkeys(agent_ids, 0)
    cap = max(transitions_per_agent, max_transitions_per_agent or 0)

    def enough() -> bool:
        fewest = min(counts.values())
        return fewest >= transitions_per_agent and (fewest >= cap or min(episodes.values()) >= min_episodes)

    # An agent that never acts would loop forever: give up after generous many steps.
    max_steps = 100 * transitions_per_agent + 10_000
    bar = tqdm(total=transitions_per_agent, desc="SePS rollouts", unit="transitions/agent",
               disable=not progress, leave=False)
    obs, _ = env.reset(seed=seed)
    # Agent -> [obs, action, reward so far, when obs came], until its next observation arrives.
    pending: dict[Any, list] = {}
    steps = episode_step = 0
    while not enough():
        if steps >= max_steps and min(counts.values()) < transitions_per_agent:
            short = [a for a, c in counts.items() if c < transitions_per_agent]
            raise RuntimeError(
                f"After {steps} random steps agents {short[:10]} still have fewer than "
                f"{transitions_per_agent} transitions; do they ever act? Lower "
                "transitions_per_agent or check the environment's agent list."
            )
        actions = {a: act_spaces[a].sample(_legal_actions(obs[a], act_spaces[a]) if legal[a] else None)
                   for a in obs}
        for a, act in actions.items():
            pending[a] = [obs[a], act, 0.0, (steps, episode_step)]
        next_obs, rewards, terminateds, truncateds, _ = env.step(actions)
        steps += 1
        episode_step += 1
        for a, r in rewards.items():
            if a in pending:
                if not np.isfinite(r):
                    _raise_not_finite(a, "a reward", steps, episode_step)
                pending[a][2] += float(r)
        for a, o in next_obs.items():
            if a in pending:
                for column, value in zip(data[a], (*pending.pop(a), o, (steps, episode_step))):
                    column.append(value)
                counts[a] += 1
                if last_episode[a] != episode:
                    last_episode[a], episodes[a] = episode, episodes[a] + 1
        if steps % 50 == 0:
            bar.n = min(min(counts.values()), transitions_per_agent)
            bar.refresh()
        if terminateds.get("__all__") or truncateds.get("__all__"):
            obs, _ = env.reset()
            pending.clear()  # agents that left without a final observation
            episode, episode_step = episode + 1, 0
        else:
            gone = {a for a in (*terminateds, *truncateds) if terminateds.get(a) or truncateds.get(a)}
            for a in gone:
                pending.pop(a, None)
            obs = {a: o for a, o in next_obs.items() if a not in gone}
    bar.close()
    env.close()
    flat = {}
    for a, (o, u, r, obs_at, n, next_at) in data.items():
        # Flattened a batch at a time (fast); non-finite values are named by the step they came at.
        o, n = _flatten_batch(o, obs_spaces[a]), _flatten_batch(n, obs_spaces[a])
        bad = [at[row] for x, at in ((o, obs_at), (n, next_at)) if (row := _first_not_finite(x)) is not None]
        if bad:
            _raise_not_finite(a, "an observation", *min(bad))
        flat[a] = (o, _flatten_batch(u, act_spaces[a]), np.asarray(r, np.float32), n, episodes[a])
    return agent_ids, flat


def _pad(x: np.ndarray, width: int) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, width - x.shape[1])))


STREAMS = 4
"""Rollout streams of ``rollout_tasks="auto"``: independent copies of the env, each with its own
seed, whose transitions are concatenated in stream order. The data is theirs wherever they run
(one after another in-process, or at once as Ray tasks), so it does not depend on the machine."""
REMOTE_AFTER_S = 4.0
"""With ``rollout_tasks="auto"`` on one node, streams run as Ray tasks (when Ray runs) only where
they would take longer than this in-process: starting a task's worker costs about a second."""


def rollout_plan(rollout_tasks: int | str, expected_seconds: float) -> tuple[int, bool]:
    """How many streams to collect, and whether as Ray tasks, for the ``rollout_tasks`` option.

    Args:
        rollout_tasks: 0 (one stream, in-process), a number (that many streams as Ray tasks; Ray
            must be initialised) or "auto" (:data:`STREAMS` streams: as Ray tasks on a cluster of
            several nodes, or on one node where the work is expected to take more than
            :data:`REMOTE_AFTER_S`; else in-process).
        expected_seconds: How long the rollouts would take in-process (0 if not known yet).
    """
    if rollout_tasks != "auto":
        return max(int(rollout_tasks), 1), rollout_tasks > 0
    import ray

    if not ray.is_initialized():
        return STREAMS, False
    several_nodes = sum(1 for node in ray.nodes() if node["Alive"]) > 1
    return STREAMS, several_nodes or expected_seconds > REMOTE_AFTER_S


def collect_random_rollouts(env_creator: EnvCreator, env_config: dict | None = None, *,
                            transitions_per_agent: int = 1000, seed: int = 0, streams: int = 1,
                            remote: bool = False, progress: bool = True, min_episodes: int = 0,
                            max_transitions_per_agent: int | None = None) -> Transitions:
    """Collects uniform-random-policy transitions of every agent.

    Args:
        env_creator: Callable ``env_config -> MultiAgentEnv`` (what ``register_env`` takes).
        env_config: The config passed to the creator.
        transitions_per_agent: Transitions to collect for each agent (at least).
        seed: Seed of the environment resets and the random actions.
        streams: Independent streams (env copies with seeds ``seed + 7919 * s``), each collecting
            its share; their transitions are concatenated in stream order, so the data is the
            same wherever they run.
        remote: Run the streams as Ray tasks at once, spread over the cluster's nodes (Ray must be
            initialised); else one after another in this process.
        progress: Show a progress bar.
        min_episodes: Go on until every agent's transitions come from at least this many episodes
            (each stream: its share), but not beyond ``max_transitions_per_agent``.
        max_transitions_per_agent: The most transitions per agent that ``min_episodes`` may ask
            for (None: ``transitions_per_agent``).

    Returns:
        The transitions, agents in sorted order, observations and actions padded to common sizes.
    """
    start = time.perf_counter()
    env_config = dict(env_config or {})
    share = [math.ceil(x / streams) if x else x
             for x in (transitions_per_agent, min_episodes, max_transitions_per_agent)]
    seeds = [seed + 7919 * s for s in range(streams)]
    if remote:
        import ray

        # No CPU reserved: on the callback's route the EnvRunners hold the CPUs (idle while
        # pretraining runs), and a task waiting for one would wait for ever.
        task = ray.remote(num_cpus=0, scheduling_strategy="SPREAD")(_collect_per_agent)
        parts = ray.get([task.remote(env_creator, env_config, share[0], s, False, *share[1:]) for s in seeds])
    else:
        parts = [_collect_per_agent(env_creator, env_config, share[0], s, progress, *share[1:]) for s in seeds]

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
