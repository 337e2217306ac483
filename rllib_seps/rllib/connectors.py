"""ConnectorV2 pieces that put agents with different spaces through one shared module.

- :class:`PadObservations` (env-to-module): for every agent of a shared module, packs its
  observation into the module's input with the module's
  :class:`rllib_seps.sharing.layout.InputLayout` (padded, indicated observation, action mask and,
  for AdaPS, cluster). It writes back into the episodes, so learners see the same observations,
  and declares each agent's new space, so RLlib sees every agent of a module with the module's
  space.
- :class:`UnpadActions` (module-to-env): turns each agent's padded action back into one of its
  own space (:func:`rllib_seps.sharing.spaces.unpad_action`), raising, never remapping, on an action the
  agent does not have. Episodes keep the padded action (the learner's log-probabilities need it);
  only the copy sent to the environment (``Columns.ACTIONS_FOR_ENV``) is unpadded.

Both are thin adapters over :mod:`rllib_seps.sharing`. Agents that share a module and have the
same own space form a group, which is transformed with one batched call per step, not one per
agent.
Agents of plain modules pass through unchanged.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, NamedTuple

import gymnasium as gym
import numpy as np
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.connectors.env_to_module.observation_preprocessor import (
    MultiAgentObservationPreprocessor,
)
from ray.rllib.core.columns import Columns
from ray.rllib.utils.annotations import override
from ray.rllib.utils.spaces.space_utils import batch as stack_structs
from ray.rllib.utils.spaces.space_utils import clip_action, get_base_struct_from_space, unsquash_action

from rllib_seps.sharing import spaces as sp
from rllib_seps.sharing.layout import Codes
from rllib_seps.sharing.plan import SharingPlan


def _check_own_spaces(plan: SharingPlan, spaces: gym.Space | None, kind: str) -> None:
    """Raises ValueError if the pipeline's per-agent spaces differ from the plan's."""
    if not isinstance(spaces, gym.spaces.Dict):
        return
    for agent, space in spaces.spaces.items():
        if agent not in plan.agents:
            raise ValueError(f"Agent {agent!r} of the environment is not in the sharing plan "
                             f"(which has {list(plan.agents)}). Fix: build the plan from this "
                             "environment's possible_agents.")
        own = getattr(plan.agents[agent], f"{kind}_space")
        if not sp.same_space(space, own):
            raise ValueError(f"Agent {agent!r} has {kind} space {space!r} in the environment but "
                             f"{own!r} in the sharing plan. Fix: rebuild the plan (and config) "
                             "from this environment.")


_MAX_CACHED_CODES = 256


class PadObservations(MultiAgentObservationPreprocessor):
    """Env-to-module piece: each agent of a shared module gets its module's input.

    The input (padded, indicated observation, action mask and, for AdaPS, cluster) is packed by
    the module's :class:`rllib_seps.sharing.layout.InputLayout` and lies in its
    ``layout.space``. Agents of plain modules keep their observations.

    Args:
        input_observation_space: Dict of every agent's own observation space.
        input_action_space: Dict of every agent's own action space.
        plan: The sharing plan.
    """

    def __init__(self, input_observation_space: gym.Space | None = None,
                 input_action_space: gym.Space | None = None, *, plan: SharingPlan, **kwargs) -> None:
        # Set before super().__init__, which computes the output space.
        self.plan = plan
        # Agents of one module with one own observation space are packed in one call.
        self._group_of: dict[Any, tuple[str, tuple]] = {}
        self._own_space: dict[tuple[str, tuple], gym.Space] = {}
        for agent, agent_plan in plan.agents.items():
            if agent_plan.code is not None:
                key = (agent_plan.module_id, sp.space_key(agent_plan.observation_space))
                self._group_of[agent] = key
                self._own_space[key] = agent_plan.observation_space
        self._codes: dict[tuple, Codes] = {}
        # Per ongoing episode and agent: the timestep of the newest observation packed.
        self._packed_t: dict[str, dict[Any, int]] = {}
        super().__init__(input_observation_space, input_action_space, **kwargs)

    @override(MultiAgentObservationPreprocessor)
    def recompute_output_observation_space(self, input_observation_space: gym.Space,
                                           input_action_space: gym.Space) -> gym.Space:
        """Dict of each agent's new space: its module's input space, or its own if plain.

        Raises:
            ValueError: If an agent is not in the plan or its own space differs from the plan's.
        """
        _check_own_spaces(self.plan, input_observation_space, "observation")
        if not isinstance(input_observation_space, gym.spaces.Dict):
            return input_observation_space
        return gym.spaces.Dict({
            agent: (self.plan.modules[self.plan.agents[agent].module_id].observation_space
                    if agent in self._group_of else space)
            for agent, space in input_observation_space.spaces.items()
        })

    def _codes_of(self, key: tuple[str, tuple], agents: tuple) -> Codes:
        """The stacked codes of agents that stepped together, computed once per set of agents."""
        cache_key = (key, agents)
        if cache_key not in self._codes:
            if len(self._codes) >= _MAX_CACHED_CODES:  # agents come and go: keep the cache bounded
                self._codes.clear()
            layout = self.plan.modules[key[0]].layout
            self._codes[cache_key] = layout.codes([self.plan.agents[a].code for a in agents])
        return self._codes[cache_key]

    @override(MultiAgentObservationPreprocessor)
    def preprocess(self, observations: dict, episode: Any) -> dict:
        """New observations of the given agents (one batched pack per group)."""
        out = dict(observations)
        members: dict[tuple[str, tuple], list] = defaultdict(list)
        for agent in observations:
            key = self._group_of.get(agent)
            if key is not None:
                members[key].append(agent)
        for key, agents in members.items():
            agents = tuple(agents)
            own = self._own_space[key]
            rows = [observations[a] for a in agents]
            stacked = stack_structs(rows) if isinstance(own, (gym.spaces.Dict, gym.spaces.Tuple)) else np.array(rows)
            packed = self.plan.modules[key[0]].layout.pack(stacked, own, self._codes_of(key, agents))
            if isinstance(packed, dict):  # images: one Dict per agent
                out.update((a, {k: v[i] for k, v in packed.items()}) for i, a in enumerate(agents))
            else:
                out.update(zip(agents, packed))
        return out

    @override(MultiAgentObservationPreprocessor)
    def __call__(self, *, rl_module: Any, batch: dict, episodes: list, explore: bool | None = None,
                 persistent_data: dict | None = None, **kwargs) -> Any:
        """Packs the newest observation of every agent of a shared module that has not been packed.

        Same effect as the parent's, which asks each episode for the agents that stepped last
        (``get_observations(-1)``, the slowest part of this piece). Instead each agent's newest
        observation is packed when its timestep is newer than the one packed last (kept per
        ongoing episode: a chunk cut from an episode keeps its id and its packed lookback).
        """
        packed_t = {}
        for episode in episodes:
            done = self._packed_t.get(episode.id_, {})
            new, steps = {}, {}
            for agent, sa_episode in episode.agent_episodes.items():
                if agent in self._group_of and done.get(agent) != sa_episode.t:
                    new[agent] = sa_episode.get_observations(-1)
                    steps[agent] = sa_episode.t
            if new:
                for agent, observation in self.preprocess(new, episode).items():
                    episode.agent_episodes[agent].set_observations(at_indices=-1, new_data=observation)
            packed_t[episode.id_] = {**done, **steps}
            episode.observation_space = self.observation_space
        self._packed_t = packed_t  # only ongoing episodes: finished ones are forgotten
        return batch


def env_box_actions(actions: np.ndarray, own_space: gym.spaces.Box, normalize_actions: bool) -> np.ndarray:
    """Padded Box actions `(B, D_padded)` as the environment should get them: the agents' own
    dimensions unsquashed from [-1, 1] to their bounds (if ``normalize_actions``, where bounded)
    and always clipped to them, with RLlib's functions; the padded dimensions are left alone."""
    out = np.array(actions, dtype=np.float64, copy=True)
    d = own_space.shape[0]
    own = unsquash_action(out[:, :d], own_space) if normalize_actions else out[:, :d]
    out[:, :d] = clip_action(own, own_space)
    return out


class _ActionGroup(NamedTuple):
    """Agents of one shared module with one own action space."""

    module_id: str
    own: gym.Space
    padded: gym.Space


class UnpadActions(ConnectorV2):
    """Module-to-env piece: each agent's padded action, as an action of its own space.

    Writes ``Columns.ACTIONS_FOR_ENV`` (what the environment receives); ``Columns.ACTIONS``
    (what the episode keeps, padded) is left alone. Discrete and MultiDiscrete indices get the
    agent's ``start`` added; an index outside the agent's own range raises ValueError naming the
    agent (the module's mask makes it impossible, so it signals a bug, and is never remapped).

    Box actions are sliced to the agent's dimensions, then, as RLlib's ``NormalizeAndClipActions``
    would do with the agent's own space: unsquashed from [-1, 1] to its bounds if
    ``normalize_actions`` (where bounded). They are then always clipped to the agent's own bounds,
    so the environment never receives an action outside its space. This piece does the job of
    ``NormalizeAndClipActions`` for every agent (plain ones too), which runs after it and would
    overwrite the unpadded actions: :func:`rllib_seps.rllib.configure.apply_plan` therefore turns
    RLlib's ``normalize_actions`` and ``clip_actions`` off and passes their values here.

    Args:
        input_observation_space: Dict of every agent's own observation space.
        input_action_space: Dict of every agent's own action space.
        plan: The sharing plan.
        normalize_actions: The config's ``normalize_actions`` (RLlib's default: True).
        clip_actions: The config's ``clip_actions`` (RLlib's default: False).
    """

    def __init__(self, input_observation_space: gym.Space | None = None,
                 input_action_space: gym.Space | None = None, *, plan: SharingPlan,
                 normalize_actions: bool = True, clip_actions: bool = False, **kwargs) -> None:
        self.plan = plan
        self.normalize_actions = bool(normalize_actions)
        self.clip_actions = bool(clip_actions)
        self._groups: dict[tuple[str, tuple], _ActionGroup] = {}
        self._group_of: dict[Any, tuple[str, tuple]] = {}
        self._plain_structs: dict[str, Any] = {}
        for agent, agent_plan in plan.agents.items():
            module = plan.modules[agent_plan.module_id]
            if module.plain:
                continue
            key = (agent_plan.module_id, sp.space_key(agent_plan.action_space))
            if key not in self._groups:
                sp.action_mask(agent_plan.action_space, module.action_space)  # raises if it does not fit
                self._groups[key] = _ActionGroup(agent_plan.module_id, agent_plan.action_space,
                                                 module.action_space)
            self._group_of[agent] = key
        super().__init__(input_observation_space, input_action_space, **kwargs)

    @override(ConnectorV2)
    def recompute_output_action_space(self, input_observation_space: gym.Space,
                                      input_action_space: gym.Space) -> gym.Space:
        """The environment's own action spaces, unchanged (checked against the plan)."""
        _check_own_spaces(self.plan, input_action_space, "action")
        return input_action_space

    def _plain_action(self, action: Any, agent: Any) -> Any:
        """What RLlib's NormalizeAndClipActions would send for an agent of a plain module."""
        if not (self.normalize_actions or self.clip_actions):
            return action
        if agent not in self._plain_structs:
            self._plain_structs[agent] = get_base_struct_from_space(self.plan.agents[agent].action_space)
        if self.normalize_actions:
            return unsquash_action(action, self._plain_structs[agent])
        return clip_action(action, self._plain_structs[agent])

    def _unpad(self, group: _ActionGroup, keys: list[tuple], actions: dict) -> np.ndarray:
        stacked = np.array([a for key in keys for a in actions[key]])
        if isinstance(group.own, gym.spaces.Box):
            stacked = env_box_actions(stacked, group.own, self.normalize_actions)
        try:
            return sp.unpad_action(stacked, group.own, group.padded)
        except (TypeError, ValueError) as error:
            bad = []
            for key in keys:
                for action in actions[key]:
                    try:
                        sp.unpad_action(np.asarray(action)[None], group.own, group.padded)
                    except (TypeError, ValueError):
                        bad.append((key[1], np.asarray(action).tolist()))
            raise type(error)(
                f"Module {group.module_id!r} produced actions outside the own action space "
                f"{group.own!r} of agents {bad} (padded space {group.padded!r}); they are never "
                f"remapped. Fix: mask the logits with the 'action_mask' observation. ({error})"
            ) from error

    @override(ConnectorV2)
    def __call__(self, *, rl_module: Any, batch: dict, episodes: list, explore: bool | None = None,
                 shared_data: dict | None = None, **kwargs) -> Any:
        actions = batch.get(Columns.ACTIONS)
        if not actions:
            return batch
        for_env: dict = {}
        members: dict[tuple[str, tuple], list[tuple]] = defaultdict(list)
        for key, items in actions.items():
            group = self._group_of.get(key[1])
            if group is None:
                for_env[key] = [self._plain_action(a, key[1]) for a in items]
            else:
                members[group].append(key)
        for group_key, keys in members.items():
            rows = iter(self._unpad(self._groups[group_key], keys, actions))
            for key in keys:  # back into the items' order (one item per key when sampling)
                for_env[key] = [next(rows) for _ in actions[key]]
        batch[Columns.ACTIONS_FOR_ENV] = for_env
        return batch


class _EnvToModuleFactory:
    """Picklable ``env_to_module_connector`` callable ``(env, spaces, device) -> [pieces]``."""

    def __init__(self, plan: SharingPlan) -> None:
        self.plan = plan

    def __call__(self, env: Any = None, spaces: Any = None, device: Any = None) -> list[ConnectorV2]:
        return [PadObservations(plan=self.plan)]


class _ModuleToEnvFactory:
    """Picklable ``module_to_env_connector`` callable ``(env, spaces) -> [pieces]``."""

    def __init__(self, plan: SharingPlan, normalize_actions: bool, clip_actions: bool) -> None:
        self.plan = plan
        self.normalize_actions = normalize_actions
        self.clip_actions = clip_actions

    def __call__(self, env: Any = None, spaces: Any = None) -> list[ConnectorV2]:
        return [UnpadActions(plan=self.plan, normalize_actions=self.normalize_actions,
                             clip_actions=self.clip_actions)]


def env_to_module_factory(plan: SharingPlan) -> Callable[..., list[ConnectorV2]]:
    """The ``config.env_runners(env_to_module_connector=...)`` callable of a plan.

    RLlib 2.60 calls it as ``fn(env, spaces, device)`` and puts the returned pieces before its
    default ones; the pipeline then sets their input spaces.
    """
    return _EnvToModuleFactory(plan)


def module_to_env_factory(plan: SharingPlan, *, normalize_actions: bool = True,
                          clip_actions: bool = False) -> Callable[..., list[ConnectorV2]]:
    """The ``config.env_runners(module_to_env_connector=...)`` callable of a plan.

    RLlib 2.60 calls it as ``fn(env, spaces)`` and puts the returned pieces after its
    ``RemoveSingleTsTimeRankFromBatch`` and before ``NormalizeAndClipActions``.

    Args:
        plan: The sharing plan.
        normalize_actions: The config's ``normalize_actions``; see :class:`UnpadActions`.
        clip_actions: The config's ``clip_actions``; see :class:`UnpadActions`.
    """
    return _ModuleToEnvFactory(plan, normalize_actions, clip_actions)
