"""One copy of a multi-agent environment as arrays of every agent, for the fast EnvRunner.

Both adapters give the same :class:`AgentArrays` interface: module input rows of every agent of a
:class:`rllib_seps.sharing.groups.GroupedPlan` (in its agent order), rewards and done flags as
arrays, actions taken as one padded array.

- :class:`NativeArrays`: environments with the array API (``reset_arrays`` / ``step_arrays``:
  every agent at once, one observation shape, no dicts; BPS and BPS-h's permutation variant).
- :class:`DictArrays`: any RLlib ``MultiAgentEnv`` (our ``SortedParallelEnv``, RLlib's
  ``ParallelPettingZooEnv``, ...): dicts in and out, packed with one call per observation space.

Agents may join late and leave early (:attr:`Transition.acting` says who acts next), but every
live agent must act at every step, as in a PettingZoo parallel env: an agent that skips a step
without being done, or comes back in the episode it left, raises ``ValueError``.
"""

from __future__ import annotations

import abc
from collections import defaultdict
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import tree
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from rllib_seps.rllib.connectors import env_box_actions
from rllib_seps.sharing import spaces as sp
from rllib_seps.sharing.groups import GroupedPlan

_ALL = "__all__"


class Transition(NamedTuple):
    """What one environment copy returns from a reset or a step (N agents, plan order).

    Attributes:
        rows: ``(N, D)`` float32 module inputs; an agent without a new observation keeps its row.
        rewards: ``(N,)`` float32 (0 for agents that did not act).
        terminated: ``(N,)`` bool, agents whose episode terminated in this step (their own flags).
        truncated: ``(N,)`` bool, agents whose episode was truncated in this step (their own flags).
        acting: ``(N,)`` bool, agents that act at the next step.
        done: Whether the copy's episode is over (reset it).
        all_terminated: Whether the env ended the episode by termination for all agents.
        all_truncated: Whether the env ended the episode by truncation for all agents.
    """

    rows: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    acting: np.ndarray
    done: bool
    all_terminated: bool = False
    all_truncated: bool = False


class AgentArrays(abc.ABC):
    """One environment copy seen as arrays of the plan's agents.

    Args:
        grouped: The grouped plan (agents, their own spaces, codes and the module's layout).
    """

    def __init__(self, grouped: GroupedPlan) -> None:
        self.grouped = grouped
        self.n_agents = len(grouped.agents)
        self.rows = np.zeros((self.n_agents, grouped.layout.space.shape[0]), np.float32)
        self._none = np.zeros(self.n_agents, bool)
        self._zeros = np.zeros(self.n_agents, np.float32)

    @abc.abstractmethod
    def reset(self, seed: int | None = None) -> Transition:
        """Starts an episode (``seed`` as in ``env.reset``)."""

    @abc.abstractmethod
    def step(self, actions: np.ndarray) -> Transition:
        """Steps with ``(N, ...)`` padded actions (those of agents that do not act are ignored)."""

    def close(self) -> None:
        """Releases the environment."""


class NativeArrays(AgentArrays):
    """A PettingZoo parallel env with the array API: ``reset_arrays(seed) -> obs`` and
    ``step_arrays(actions) -> (obs, rewards, terminated, truncated)``, every agent at once in
    ``possible_agents`` order, all agents with one observation space and one action space.

    Args:
        env: The environment (e.g. :class:`rllib_seps.envs.bps.BlindParticleSpread`).
        grouped: The grouped plan of its agents.
    """

    def __init__(self, env: Any, grouped: GroupedPlan) -> None:
        super().__init__(grouped)
        self.env = env
        index = {agent: i for i, agent in enumerate(env.possible_agents)}
        self._order = np.array([index[a] for a in grouped.agents])  # plan order -> env order
        self._obs_space = grouped.observation_spaces[0]
        self._action_space = grouped.action_spaces[0]
        self._codes = grouped.stacked_codes()
        self._env_actions = None
        self._all = np.ones(self.n_agents, bool)

    def _pack(self, obs: np.ndarray) -> np.ndarray:
        self.rows = self.grouped.layout.pack(obs[self._order], self._obs_space, self._codes)
        return self.rows

    def reset(self, seed: int | None = None) -> Transition:
        return Transition(self._pack(self.env.reset_arrays(seed)), self._zeros, self._none, self._none,
                          self._all, False)

    def step(self, actions: np.ndarray) -> Transition:
        own = sp.unpad_action(actions, self._action_space, self.grouped.layout.action_space)
        if self._env_actions is None:
            self._env_actions = np.empty_like(own)
        self._env_actions[self._order] = own
        obs, rewards, terminated, truncated = self.env.step_arrays(self._env_actions)
        terminated, truncated = bool(terminated), bool(truncated)
        done = terminated or truncated
        return Transition(self._pack(obs), rewards[self._order], np.full(self.n_agents, terminated),
                          np.full(self.n_agents, truncated), ~self._all if done else self._all, done,
                          terminated, truncated)

    def close(self) -> None:
        self.env.close()


class DictArrays(AgentArrays):
    """Any RLlib ``MultiAgentEnv`` (dict observations and actions) as arrays.

    Args:
        env: The environment; its agent ids must be the plan's.
        grouped: The grouped plan of its agents.
        normalize_actions: Unsquash Box actions from [-1, 1] to the agents' bounds (RLlib's
            ``normalize_actions``); Box actions are always clipped to the agents' own bounds.
    """

    def __init__(self, env: MultiAgentEnv, grouped: GroupedPlan, normalize_actions: bool = True) -> None:
        super().__init__(grouped)
        self.env = env
        self.normalize_actions = normalize_actions
        self._index = {agent: i for i, agent in enumerate(grouped.agents)}
        by_obs, by_action = defaultdict(list), defaultdict(list)
        for i, (obs, act) in enumerate(zip(grouped.observation_spaces, grouped.action_spaces)):
            by_obs[sp.space_key(obs)].append(i)
            by_action[sp.space_key(act)].append(i)
        # One batched pack (unpad) per own observation (action) space.
        self._obs_classes = [(np.array(ix), grouped.observation_spaces[ix[0]], grouped.stacked_codes(ix))
                             for ix in by_obs.values()]
        self._action_classes = [(np.array(ix), grouped.action_spaces[ix[0]]) for ix in by_action.values()]
        self._acting = np.zeros(self.n_agents, bool)
        self._left = np.zeros(self.n_agents, bool)  # done earlier in this episode

    def _indices(self, agents: Any) -> np.ndarray:
        try:
            return np.array([self._index[a] for a in agents], np.int64)
        except KeyError as error:
            raise ValueError(f"The environment returned agent {error.args[0]!r}, which is not in the sharing "
                             f"plan ({len(self._index)} agents). Fix: build the plan from this environment's "
                             "possible_agents.") from None

    def _pack(self, observations: dict) -> np.ndarray:
        """Writes the rows of the agents in ``observations``; returns their indices."""
        present = self._indices(observations)
        values = list(observations.values())
        for indices, space, codes in self._obs_classes:
            members = np.flatnonzero(np.isin(present, indices))
            if not len(members):
                continue
            members = members[np.argsort(present[members])]  # plan order
            rows = present[members]
            if len(rows) != len(indices) or not np.array_equal(rows, indices):
                codes = self.grouped.stacked_codes(rows)
            stacked = tree.map_structure(lambda *xs: np.stack(xs), *[values[m] for m in members])
            self.rows[rows] = self.grouped.layout.pack(stacked, space, codes)
        return present

    def reset(self, seed: int | None = None) -> Transition:
        observations, _ = self.env.reset(seed=seed)
        self._left[:] = False
        self._acting[:] = False
        self._acting[self._pack(observations)] = True
        return Transition(self.rows, self._zeros, self._none, self._none, self._acting.copy(), False)

    def _action_dict(self, actions: np.ndarray) -> dict:
        out = {}
        agents = self.grouped.agents
        for indices, space in self._action_classes:
            acting = indices[self._acting[indices]]
            if not len(acting):
                continue
            padded = actions[acting]
            if isinstance(space, gym.spaces.Box):
                padded = env_box_actions(padded, space, self.normalize_actions)
            for i, action in zip(acting, sp.unpad_action(padded, space, self.grouped.layout.action_space)):
                out[agents[i]] = action.item() if isinstance(space, gym.spaces.Discrete) else action
        return out

    def step(self, actions: np.ndarray) -> Transition:
        observations, rewards, terminateds, truncateds, _ = self.env.step(self._action_dict(actions))
        n = self.n_agents
        reward = np.zeros(n, np.float32)
        terminated, truncated = np.zeros(n, bool), np.zeros(n, bool)
        for target, values in ((reward, rewards), (terminated, terminateds), (truncated, truncateds)):
            values = {a: v for a, v in values.items() if a != _ALL}
            if values:
                target[self._indices(values)] = list(values.values())
        present = self._pack(observations)
        all_terminated, all_truncated = bool(terminateds.get(_ALL)), bool(truncateds.get(_ALL))
        done = all_terminated or all_truncated
        ended = terminated | truncated
        acting = np.zeros(n, bool)
        acting[present] = True
        acting &= ~ended
        acted = self._acting
        if not done:
            self._check_parallel(acting, ended)
        self._acting = acting
        return Transition(self.rows, reward * acted, terminated & acted, truncated & acted, acting.copy(), done,
                          all_terminated, all_truncated)

    def _check_parallel(self, acting: np.ndarray, ended: np.ndarray) -> None:
        """Raises unless every live agent acts at every step and none comes back after leaving."""
        agents = self.grouped.agents
        skipped = self._acting & ~acting & ~ended
        if skipped.any():
            raise ValueError(
                f"Agents {[agents[i] for i in np.flatnonzero(skipped)][:5]} did not act at a step without "
                "being done. Fast execution needs every live agent to act at every step (a PettingZoo "
                "parallel env); turn-based (AEC) envs are not supported. Fix: use execution='modules'.")
        self._left |= self._acting & ended
        back = self._left & acting
        if back.any():
            raise ValueError(
                f"Agents {[agents[i] for i in np.flatnonzero(back)][:5]} acted again in the episode they "
                "had left. Fast execution supports agents that join late or leave early, not ones that "
                "come back. Fix: use execution='modules'.")

    def close(self) -> None:
        self.env.close()


def make_arrays(env: MultiAgentEnv, grouped: GroupedPlan, normalize_actions: bool = True) -> AgentArrays:
    """The adapter for ``env``: native array steps when the env underneath offers them for agents
    of one observation space and one action space, else dicts.

    Args:
        env: What the config's env creator returned (an RLlib ``MultiAgentEnv``; for a PettingZoo
            env wrapped by ``SortedParallelEnv`` or ``ParallelPettingZooEnv``, the wrapped env is
            checked for the array API).
        grouped: The grouped plan of its agents.
        normalize_actions: See :class:`DictArrays`.
    """
    inner = getattr(env, "par_env", env)
    homogeneous = (len({sp.space_key(s) for s in grouped.observation_spaces}) == 1
                   and len({sp.space_key(s) for s in grouped.action_spaces}) == 1)
    native = (homogeneous and callable(getattr(inner, "reset_arrays", None))
              and callable(getattr(inner, "step_arrays", None))
              and sorted(inner.possible_agents) == sorted(grouped.agents))
    if native and isinstance(grouped.action_spaces[0], gym.spaces.Discrete):
        return NativeArrays(inner, grouped)
    return DictArrays(env, grouped, normalize_actions)

