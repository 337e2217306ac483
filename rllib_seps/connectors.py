"""ConnectorV2 pieces that put agents with different spaces through one padded module.

- :class:`PadObservations` (env-to-module): for every agent of a padded module, pads its
  observation into the module's space, appends its indicator, action mask and (AdaPS) cluster,
  and emits the module's input (one float32 vector, or a Dict for images: see
  :attr:`rllib_seps.specs.ModulePlan.observation_space`). It writes back into the episodes, so
  learners see the same observations, and declares each agent's new space, so RLlib sees every
  agent of a module with the module's space.
- :class:`UnpadActions` (module-to-env): turns each agent's padded action back into one of its
  own space (:func:`rllib_seps.spaces.unpad_action`), raising, never remapping, on an action the
  agent does not have. Episodes keep the padded action (the learner's log-probabilities need it);
  only the copy sent to the environment (``Columns.ACTIONS_FOR_ENV``) is unpadded.

Both are thin adapters over :mod:`rllib_seps.spaces`. Agents that share a module and have the same
own space form a group, which is transformed with one batched call per step, not one per agent.
Agents of plain modules pass through unchanged.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

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

from rllib_seps import spaces as sp
from rllib_seps.specs import CLUSTER_KEY, MASK_KEY, OBS_KEY, AgentPlan, SharingPlan


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
        if space != own:
            raise ValueError(f"Agent {agent!r} has {kind} space {space!r} in the environment but "
                             f"{own!r} in the sharing plan. Fix: rebuild the plan (and config) "
                             "from this environment.")


_MAX_CACHED_TAILS = 256


@dataclass
class _ObsGroup:
    """Agents of one padded module with one own observation space.

    Attributes:
        own: The agents' own observation space.
        padded: The module's padded observation space (before indication).
        method: Indication method, or None.
        n: Number of indicator values.
        image: True for (H, W, C) images (Dict output), False for vectors (flat output).
        indicator: Indicator value of each agent.
        tail: Vectors only: each agent's constant float32 tail, appended to its padded
            observation: ``[indicator code, action mask, cluster index (AdaPS)]``.
        tails: Stacked tails per tuple of agents that stepped together (a bounded cache).
    """

    own: gym.Space
    padded: gym.spaces.Box
    method: str | None
    n: int
    image: bool
    indicator: dict[str, int] = field(default_factory=dict)
    tail: dict[str, np.ndarray] = field(default_factory=dict)
    tails: dict[tuple, np.ndarray] = field(default_factory=dict)

    @property
    def identity(self) -> bool:
        """True if padding is only a cast (a Box of the padded shape): pad_observation is skipped."""
        return isinstance(self.own, gym.spaces.Box) and self.own.shape == self.padded.shape

    def _tails(self, agents: tuple[str, ...]) -> np.ndarray:
        """`(len(agents), tail size)`, computed once per set of agents."""
        if agents not in self.tails:
            if len(self.tails) >= _MAX_CACHED_TAILS:  # agents come and go: keep the cache bounded
                self.tails.clear()
            self.tails[agents] = np.stack([self.tail[a] for a in agents])
        return self.tails[agents]

    def transform(self, observations: list[Any], agents: tuple[str, ...]) -> np.ndarray:
        """`(len(agents), *module obs shape)`: padded, then indicated, in one batched call each;
        vectors get each agent's tail."""
        if isinstance(self.own, (gym.spaces.Dict, gym.spaces.Tuple)):
            stacked = stack_structs(observations)  # leaf by leaf
        else:
            stacked = np.array(observations)
        if self.identity and stacked.shape[1:] == self.padded.shape:
            x = stacked
        else:
            x = sp.pad_observation(stacked, self.own, self.padded)
        if self.image:
            x = x.astype(self.padded.dtype, copy=False)
            if self.method is None:
                return x
            index = np.array([self.indicator[a] for a in agents], np.int64)
            return sp.indicate_image(x, self.padded, index, self.method, self.n)
        x = x.reshape(len(x), -1).astype(np.float32, copy=False)
        return np.concatenate([x, self._tails(agents)], axis=-1)


class PadObservations(MultiAgentObservationPreprocessor):
    """Env-to-module piece: padded, indicated observations plus action masks per agent.

    For an agent of a padded module the new observation holds its padded (and indicated)
    observation, its float32 mask over the module's logits (or Box dimensions) and, for AdaPS,
    its cluster index: for vectors one float32 vector ``[observation, indicator code, mask,
    cluster]``, for images ``{"observations", "action_mask", "cluster"}``. It lies in
    ``plan.modules[module].observation_space``. Agents of plain modules keep theirs.

    Args:
        input_observation_space: Dict of every agent's own observation space.
        input_action_space: Dict of every agent's own action space.
        plan: The sharing plan.
    """

    def __init__(self, input_observation_space: gym.Space | None = None,
                 input_action_space: gym.Space | None = None, *, plan: SharingPlan, **kwargs) -> None:
        # Set before super().__init__, which computes the output space.
        self.plan = plan
        self._groups: dict[tuple[str, str], _ObsGroup] = {}
        self._group_of: dict[str, tuple[str, str]] = {}
        self._extras: dict[str, dict[str, np.ndarray]] = {}  # image modules: mask, cluster
        self._out_shape: dict[str, tuple[int, ...]] = {}  # vector modules: the flat input's shape
        self._ambiguous: set[str] = set()
        for agent, agent_plan in plan.agents.items():
            if not plan.modules[agent_plan.module_id].plain:
                self._add_agent(agent, agent_plan)
        super().__init__(input_observation_space, input_action_space, **kwargs)

    def _add_agent(self, agent: str, agent_plan: AgentPlan) -> None:
        """Puts a padded agent in its group and computes its constant parts (code, mask, cluster)."""
        module = self.plan.modules[agent_plan.module_id]
        own = agent_plan.observation_space
        key = (agent_plan.module_id, repr(own))
        if key not in self._groups:
            self._groups[key] = _ObsGroup(own, module.padded_observation_space, module.indication,
                                          module.n_indicators, module.image)
        group = self._groups[key]
        self._group_of[agent] = key
        if module.indication is not None:
            group.indicator[agent] = int(agent_plan.indicator)
        mask = sp.action_mask(agent_plan.action_space, module.action_space).astype(np.float32)
        cluster = [agent_plan.cluster] if module.n_clusters else []
        if group.image:
            # Computed once and shared by every step; read-only, as episodes keep references.
            extras = {MASK_KEY: mask}
            if cluster:
                extras[CLUSTER_KEY] = np.array(cluster[0], dtype=np.int64)
            for value in extras.values():
                value.flags.writeable = False
            self._extras[agent] = extras
            if isinstance(own, gym.spaces.Dict) and set(own.spaces) == {OBS_KEY, *extras}:
                self._ambiguous.add(agent)
        else:
            code = (sp.indicate(np.zeros((1, 0), np.float32), np.array([group.indicator[agent]]),
                                module.indication, module.n_indicators)[0]
                    if module.indication is not None else np.zeros(0, np.float32))
            group.tail[agent] = np.concatenate([code, mask, cluster]).astype(np.float32)
            self._out_shape[agent] = module.observation_space.shape

    @override(MultiAgentObservationPreprocessor)
    def recompute_output_observation_space(self, input_observation_space: gym.Space,
                                           input_action_space: gym.Space) -> gym.Space:
        """Dict of each agent's new space: its module's Dict space, or its own if plain.

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

    @override(MultiAgentObservationPreprocessor)
    def preprocess(self, observations: dict, episode: Any) -> dict:
        """New observations of the given agents (one batched transform per group)."""
        out = dict(observations)
        members: dict[tuple[str, str], list[str]] = defaultdict(list)
        for agent in observations:
            key = self._group_of.get(agent)
            if key is not None:
                members[key].append(agent)
        for key, agents in members.items():
            agents = tuple(agents)
            rows = self._groups[key].transform([observations[a] for a in agents], agents)
            if self._groups[key].image:
                for agent, row in zip(agents, rows):
                    out[agent] = {OBS_KEY: row, **self._extras[agent]}
            else:
                out.update(zip(agents, rows))
        return out

    def _is_new(self, agent: str, observation: Any) -> bool:
        """False if `observation` is one this connector produced.

        Vector modules: ours are float32 vectors of the module's size, which is larger than any
        own observation of the group (the tail holds at least the action mask), so the shape
        tells. Image modules: ours carry the agent's constant mask array itself; copies of ours
        (an episode chunk's lookback after a cut) are recognised by their keys, unless the
        agent's own space is a Dict with exactly these keys.
        """
        shape = self._out_shape.get(agent)
        if shape is not None:
            return not (isinstance(observation, np.ndarray) and observation.shape == shape
                        and observation.dtype == np.float32)
        if not isinstance(observation, dict):
            return True
        extras = self._extras[agent]
        if observation.get(MASK_KEY) is extras[MASK_KEY]:
            return False
        return agent in self._ambiguous or observation.keys() != extras.keys() | {OBS_KEY}

    @override(MultiAgentObservationPreprocessor)
    def __call__(self, *, rl_module: Any, batch: dict, episodes: list, explore: bool | None = None,
                 persistent_data: dict | None = None, **kwargs) -> Any:
        """Transforms the newest observation of every padded agent that has not been transformed.

        Same effect as the parent's, which asks each episode for the agents that stepped last
        (``get_observations(-1)``, the slowest part of this piece): an agent that did not step
        still holds the observation transformed earlier, recognised by :meth:`_is_new`, so looking
        at each agent's newest observation is enough.
        """
        for episode in episodes:
            new = {}
            for agent, sa_episode in episode.agent_episodes.items():
                if agent in self._group_of:
                    observation = sa_episode.get_observations(-1)
                    if self._is_new(agent, observation):
                        new[agent] = observation
            if new:
                for agent, observation in self.preprocess(new, episode).items():
                    episode.agent_episodes[agent].set_observations(at_indices=-1, new_data=observation)
            episode.observation_space = self.observation_space
        return batch


@dataclass
class _ActionGroup:
    """Agents of one padded module with one own action space."""

    module_id: str
    own: gym.Space
    padded: gym.Space
    low: np.ndarray | None = None
    high: np.ndarray | None = None


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
    overwrite the unpadded actions: :func:`rllib_seps.configure.apply_plan` therefore turns
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
        self._groups: dict[tuple[str, str], _ActionGroup] = {}
        self._group_of: dict[str, tuple[str, str]] = {}
        self._plain_structs: dict[str, Any] = {}
        for agent, agent_plan in plan.agents.items():
            module = plan.modules[agent_plan.module_id]
            if module.plain:
                continue
            key = (agent_plan.module_id, repr(agent_plan.action_space))
            if key not in self._groups:
                self._groups[key] = self._action_group(agent_plan.module_id, agent_plan.action_space,
                                                       module.action_space)
            self._group_of[agent] = key
        super().__init__(input_observation_space, input_action_space, **kwargs)

    def _action_group(self, module_id: str, own: gym.Space, padded: gym.Space) -> _ActionGroup:
        group = _ActionGroup(module_id, own, padded)
        if isinstance(own, gym.spaces.Box):
            sp.action_mask(own, padded)  # raises if own does not fit padded
            group.low = own.low.astype(np.float64)
            group.high = own.high.astype(np.float64)
        return group

    @override(ConnectorV2)
    def recompute_output_action_space(self, input_observation_space: gym.Space,
                                      input_action_space: gym.Space) -> gym.Space:
        """The environment's own action spaces, unchanged (checked against the plan)."""
        _check_own_spaces(self.plan, input_action_space, "action")
        return input_action_space

    def _env_box_actions(self, group: _ActionGroup, actions: np.ndarray) -> np.ndarray:
        """Box actions `(B, D_padded)`: own dimensions unsquashed (if set) and clipped."""
        d = group.own.shape[0]
        own = actions[:, :d].astype(np.float64)
        if self.normalize_actions and np.issubdtype(group.own.dtype, np.floating):
            bounded = np.isfinite(group.low) & np.isfinite(group.high)
            if np.all(bounded):  # as RLlib: only spaces bounded in every dimension
                own = group.low + (own + 1.0) * (group.high - group.low) / 2.0
        out = np.array(actions, dtype=np.float64, copy=True)
        out[:, :d] = np.clip(own, group.low, group.high)
        return out

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
            stacked = self._env_box_actions(group, stacked)
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
        members: dict[tuple[str, str], list[tuple]] = defaultdict(list)
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
