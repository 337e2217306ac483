"""The EnvRunner of fast execution: every agent of several environment copies in one batch.

Per step, :class:`FastEnvRunner` packs every agent of every copy into one ``(N * E, D)`` array
(agents by group, then copies: see :class:`rllib_seps.sharing.groups.GroupedPlan`), runs one
forward pass of the grouped module and one action sample, and steps the copies with arrays
(:mod:`rllib_seps.rllib.fast.arrays`). Everything is written into arrays for the whole fragment;
only at its end are the per-agent episodes built, one ``SingleAgentEpisode`` per agent and
episode chunk, from slices of those arrays. RLlib's learner pipeline (GAE, batching) takes them
as they are: the algorithm's config is single-agent, with one module (the grouped one).

Metrics have the keys of RLlib's ``MultiAgentEnvRunner``: episode return (all agents' rewards),
length and duration, per agent (``agent_episode_returns_mean/<agent>``) and per group under the
module id it replaces (``module_episode_returns_mean/<module>``), steps sampled per agent and group.
Per-episode callbacks (``on_episode_*``) are not called; the configuration refuses fast execution
for callbacks that implement them (see :mod:`rllib_seps.rllib.fast.execution`).
"""

from __future__ import annotations

import math
import time
import uuid
from collections import defaultdict
from typing import Any, Collection, NamedTuple

import gymnasium as gym
import numpy as np
import ray
import torch
from ray.rllib.callbacks.utils import make_callback
from ray.rllib.core import COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchCategorical
from ray.rllib.env import INPUT_ENV_SPACES
from ray.rllib.env.env_context import EnvContext
from ray.rllib.env.env_runner import EnvRunner
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.env.utils.infinite_lookback_buffer import InfiniteLookbackBuffer
from ray.rllib.utils import force_list
from ray.rllib.utils.annotations import override
from ray.rllib.utils.checkpoints import Checkpointable
from ray.rllib.utils.metrics import (
    EPISODE_AGENT_RETURN_MEAN,
    EPISODE_AGENT_STEPS,
    EPISODE_DURATION_SEC_MEAN,
    EPISODE_LEN_MAX,
    EPISODE_LEN_MEAN,
    EPISODE_LEN_MIN,
    EPISODE_MODULE_RETURN_MEAN,
    EPISODE_RETURN_MAX,
    EPISODE_RETURN_MEAN,
    EPISODE_RETURN_MIN,
    NUM_AGENT_STEPS_SAMPLED,
    NUM_AGENT_STEPS_SAMPLED_LIFETIME,
    NUM_ENV_STEPS_SAMPLED,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    NUM_EPISODES,
    NUM_EPISODES_LIFETIME,
    NUM_MODULE_STEPS_SAMPLED,
    NUM_MODULE_STEPS_SAMPLED_LIFETIME,
    SAMPLE_TIMER,
    WEIGHTS_SEQ_NO,
)
from ray.rllib.utils.typing import StateDict

from rllib_seps.rllib.configure import env_creator_of
from rllib_seps.rllib.fast.arrays import AgentArrays, make_arrays
from rllib_seps.rllib.modules import GROUPED_PLAN_KEY
from rllib_seps.sharing.groups import GroupedPlan


class AgentEpisode(SingleAgentEpisode):
    """One agent's episode chunk, counting its share of the environment's steps.

    The chunks of one environment segment hold its env steps once between them (the first
    chunk all of them), so that RLlib's sums of ``env_steps()`` over returned episodes count
    environment steps, not agent steps; ``agent_steps()`` is the chunk's length.
    """

    env_step_share: int = 0
    agent: Any = None
    """The agent's id (``agent_id`` stays None: RLlib's single-agent learner pipeline needs that)."""
    group: str | None = None
    """The id of the module of the sharing plan whose group serves the agent."""
    env_episode: str | None = None
    """The id shared by the chunks of all agents of one episode of one environment copy."""

    @override(SingleAgentEpisode)
    def env_steps(self) -> int:
        return self.env_step_share

    @override(SingleAgentEpisode)
    def agent_steps(self) -> int:
        return len(self)


class _End(NamedTuple):
    """How an episode of one environment copy ended."""

    rows: np.ndarray  # (N, D) the final module inputs
    terminated: bool  # as RLlib's MultiAgentEpisode.is_terminated (see FastEnvRunner._end_flags)
    truncated: bool  # as RLlib's MultiAgentEpisode.is_truncated


class _Fragment(NamedTuple):
    """Arrays of one ``sample()`` call: T steps, N agents (plan order), E copies."""

    rows: np.ndarray  # (T + 1, N, E, D) module inputs
    acting: np.ndarray  # (T + 1, N, E) bool
    actions: np.ndarray  # (T, N, E, ...)
    logp: np.ndarray | None  # (T, N, E) float32 (exploration only)
    dist_inputs: np.ndarray  # (T, N, E, L) float32
    rewards: np.ndarray  # (T, N, E) float32
    terminated: np.ndarray  # (T, N, E) bool
    truncated: np.ndarray  # (T, N, E) bool
    ends: list  # per copy: {t: _End} of the episodes that ended at step t
    episode_ids: list  # per copy: the id of each of its episodes in the fragment, in order
    ended: list  # the ids of the episodes that ended, in order

    def first(self, steps: int) -> "_Fragment":
        """The fragment's first ``steps`` steps (the copies' episodes end within them)."""
        cut = {name: getattr(self, name) for name in ("actions", "logp", "dist_inputs", "rewards", "terminated",
                                                      "truncated")}
        return self._replace(rows=self.rows[:steps + 1], acting=self.acting[:steps + 1],
                             **{k: None if v is None else v[:steps] for k, v in cut.items()})


_NO_INFO: dict = {}


class FastEnvRunner(EnvRunner, Checkpointable):
    """Samples all agents of ``num_envs_per_env_runner`` copies of a multi-agent env as one batch.

    Built by RLlib from a config made by :func:`rllib_seps.rllib.fast.execution.apply_execution`:
    one RLModuleSpec of the grouped :class:`rllib_seps.rllib.modules.SharedActorCriticModule`,
    whose model_config holds the :class:`GroupedPlan`.
    """

    @override(EnvRunner)
    def __init__(self, *, config: Any, **kwargs: Any) -> None:
        super().__init__(config=config, **kwargs)
        self._callbacks = [cls() for cls in force_list(self.config.callbacks_class)]
        self.grouped: GroupedPlan = self.config.rl_module_spec.model_config[GROUPED_PLAN_KEY]
        self.module = None
        self.make_module()
        self.envs: list[AgentArrays] = []
        self.num_envs = 0
        if (self.worker_index is None or self.worker_index > 0 or self.config.create_env_on_local_worker
                or self.config.num_env_runners == 0):
            self.make_env()
        self._weights_seq_no = 0
        self._seeded = False
        n = len(self.grouped.agents)
        self._group_of = self.grouped.group_of_agent
        self._group_ids = list(self.grouped.groups)
        self._agent_names = [str(a) for a in self.grouped.agents]
        self._reset_state(n)

    def _reset_state(self, n: int) -> None:
        """Forgets ongoing episodes: the next ``sample()`` resets every copy."""
        e = self.num_envs
        self._needs_reset = True
        self._rows = None
        self._acting = np.zeros((n, e), bool)
        self._agent_ids = np.full((n, e), None, object)  # current episode id of each agent
        self._agent_t = np.zeros((n, e), np.int64)  # steps each agent took in its episode
        self._ep_len = np.zeros(e, np.int64)
        self._ep_return = np.zeros((n, e), np.float64)
        self._ep_acted = np.zeros((n, e), bool)
        self._ep_done = np.zeros((n, e), bool)  # agents done by their own flags in the episode
        self._ep_start = np.zeros(e, np.float64)
        self._env_episode = [None] * e

    @override(EnvRunner)
    def assert_healthy(self) -> None:
        assert self.envs and self.module is not None

    @override(EnvRunner)
    def make_env(self) -> None:
        for env in self.envs:
            env.close()
        creator = env_creator_of(self.config)
        self.num_envs = int(self.config.num_envs_per_env_runner)
        self.envs = []
        for index in range(self.num_envs):
            context = EnvContext(self.config.env_config, worker_index=self.worker_index or 0,
                                 vector_index=index, num_workers=self.config.num_env_runners)
            env = creator(context)  # the context itself: creators derive seeds from its indices
            self.envs.append(make_arrays(env, self.grouped, self.config.normalize_actions))
            make_callback("on_environment_created", callbacks_objects=self._callbacks,
                          callbacks_functions=self.config.callbacks_on_environment_created,
                          kwargs=dict(env_runner=self, metrics_logger=self.metrics, env=env,
                                      env_context=context))
        self._reset_state(len(self.grouped.agents))

    @override(EnvRunner)
    def make_module(self) -> None:
        spec = self.config.get_multi_rl_module_spec(spaces=self.get_spaces(), inference_only=True)
        self.module = spec.build()

    @override(EnvRunner)
    def get_spaces(self) -> dict:
        layout = self.grouped.layout
        agents = self.grouped.agents
        return {
            INPUT_ENV_SPACES: (gym.spaces.Dict(dict(zip(agents, self.grouped.observation_spaces))),
                               gym.spaces.Dict(dict(zip(agents, self.grouped.action_spaces)))),
            DEFAULT_MODULE_ID: (layout.space, layout.action_space),
        }

    @override(EnvRunner)
    def sample(self, *, num_timesteps: int | None = None, num_episodes: int | None = None,
               explore: bool | None = None, random_actions: bool = False, force_reset: bool = False,
               **kwargs: Any) -> list[SingleAgentEpisode]:
        """Samples ``num_timesteps`` steps over all copies (default: the rollout fragment of every
        copy), counted as the config counts them (``count_steps_by``), or ``num_episodes`` whole
        episodes (default with ``batch_mode="complete_episodes"``: one per copy), as RLlib's
        EnvRunners do; returns one episode chunk per agent and episode.

        Raises:
            ValueError: Without environments (a local EnvRunner of a config with remote ones).
            NotImplementedError: For ``random_actions`` (fast execution samples with the module).
        """
        if not self.envs:
            raise ValueError(f"{self} has no environment; sample() on the remote EnvRunners.")
        if random_actions:
            raise NotImplementedError("Fast execution samples with the module; random_actions is not "
                                      "supported. Fix: use execution='modules'.")
        explore = self.config.explore if explore is None else explore
        self.metrics.log_value(WEIGHTS_SEQ_NO, self._weights_seq_no, window=1)
        if num_timesteps is None and num_episodes is None and self.config.batch_mode == "complete_episodes":
            num_episodes = self.num_envs
        with self.metrics.log_time(SAMPLE_TIMER):
            if num_episodes is not None:
                episodes = self._sample_episodes(num_episodes, explore)
            else:
                if force_reset:
                    self._needs_reset = True
                steps = num_timesteps or self.config.get_rollout_fragment_length(self.worker_index or 0) * self.num_envs
                episodes = self._sample_steps(steps, explore)
            make_callback("on_sample_end", callbacks_objects=self._callbacks,
                          callbacks_functions=self.config.callbacks_on_sample_end,
                          kwargs=dict(env_runner=self, metrics_logger=self.metrics, samples=episodes))
        return episodes

    def _sample_steps(self, n: int, explore: bool) -> list[SingleAgentEpisode]:
        """``n`` env steps over all copies (each steps ``ceil(n / copies)`` times), or with
        ``count_steps_by="agent_steps"`` steps until the agents have acted ``n`` times, as RLlib's
        EnvRunners count them (a fragment sized for the agents acting now; where fewer act later,
        the next makes up the rest)."""
        if self.config.count_steps_by == "env_steps":
            return self._episodes(self._run(math.ceil(n / self.num_envs), explore))
        whole: dict[str, AgentEpisode] = {}
        while (left := n - sum(len(episode) for episode in whole.values())) > 0:
            if self._needs_reset:
                self._reset()
            steps = math.ceil(left / max(int(self._acting.sum()), 1))
            _join(whole, self._episodes(self._run(steps, explore, agent_steps=left)))
        return list(whole.values())

    def _sample_episodes(self, n: int, explore: bool) -> list[SingleAgentEpisode]:
        """``n`` whole episodes from fresh resets (up to ``num_envs - 1`` more that end at the
        same step, as RLlib samples ``num_episodes``): every agent's whole episode, its chunks of
        successive fragments joined; unfinished episodes are dropped."""
        self._needs_reset = True
        ended, whole = [], {}
        while len(ended) < n:
            length = max(1, self.config.get_rollout_fragment_length(self.worker_index or 0))
            fragment = self._run(length, explore, episodes=n - len(ended))
            ended += fragment.ended
            _join(whole, self._episodes(fragment))
        self._needs_reset = True
        return [episode for episode in whole.values() if episode.env_episode in ended]

    def _reset(self) -> None:
        n, e = len(self.grouped.agents), self.num_envs
        self._reset_state(n)
        self._rows = np.zeros((n, e, self.grouped.layout.space.shape[0]), np.float32)
        for index, env in enumerate(self.envs):
            # Seeded once, at the first reset (as RLlib's EnvRunners): later resets go on.
            seed = None if self._seed is None or self._seeded else self._seed + index
            self._start_episode(index, env.reset(seed=seed))
        self._needs_reset, self._seeded = False, True

    def _start_episode(self, index: int, start: Any) -> None:
        self._rows[:, index] = start.rows
        self._acting[:, index] = start.acting
        self._ep_len[index] = 0
        self._ep_return[:, index] = 0.0
        self._ep_acted[:, index] = False
        self._ep_done[:, index] = False
        self._ep_start[index] = time.time()
        self._env_episode[index] = uuid.uuid4().hex

    def _run(self, steps: int, explore: bool, episodes: int | None = None,
             agent_steps: int | None = None) -> _Fragment:
        """Steps every copy ``steps`` times, or until ``episodes`` episodes ended or the agents
        have acted ``agent_steps`` times; returns the fragment's arrays."""
        if self._needs_reset:
            self._reset()
        module = self.module[DEFAULT_MODULE_ID]
        dist_cls = (module.get_exploration_action_dist_cls() if explore
                    else module.get_inference_action_dist_cls())
        n, e, d = self._rows.shape
        action_space = self.grouped.layout.action_space
        f = _Fragment(
            rows=np.empty((steps + 1, n, e, d), np.float32), acting=np.empty((steps + 1, n, e), bool),
            actions=np.empty((steps, n, e, *action_space.shape), action_space.dtype),
            logp=np.empty((steps, n, e), np.float32) if explore else None,
            dist_inputs=None, rewards=np.empty((steps, n, e), np.float32),
            terminated=np.empty((steps, n, e), bool), truncated=np.empty((steps, n, e), bool),
            ends=[{} for _ in range(e)], episode_ids=[[i] for i in self._env_episode], ended=[])
        f.rows[0], f.acting[0] = self._rows, self._acting
        categorical = dist_cls is TorchCategorical
        for t in range(steps):
            with torch.inference_mode():
                logits = module.action_dist_inputs(torch.from_numpy(f.rows[t].reshape(n * e, d)))
                if categorical:
                    action, logp = _sample_categorical(logits, explore)
                else:
                    dist = dist_cls.from_logits(logits)
                    action = dist.sample() if explore else dist.to_deterministic().sample()
                    logp = dist.logp(action) if explore else None
                if explore:
                    f.logp[t] = logp.numpy().reshape(n, e)
            if f.dist_inputs is None:
                f = f._replace(dist_inputs=np.empty((steps, n, e, logits.shape[-1]), np.float32))
            f.dist_inputs[t] = logits.numpy().reshape(n, e, -1)
            f.actions[t] = action.numpy().reshape(f.actions.shape[1:])
            self._step_copies(f, t)
            if agent_steps is not None:
                agent_steps -= int(f.acting[t].sum())
            if (episodes is not None and len(f.ended) >= episodes) or (agent_steps is not None and agent_steps <= 0):
                f = f.first(t + 1)
                break
        taken = len(f.rewards)
        self._rows, self._acting = f.rows[taken].copy(), f.acting[taken].copy()
        self._count_steps(f, taken)
        return f

    def _step_copies(self, f: _Fragment, t: int) -> None:
        for index, env in enumerate(self.envs):
            out = env.step(f.actions[t, :, index])
            acted = f.acting[t, :, index]
            f.rewards[t, :, index] = out.rewards
            f.terminated[t, :, index] = out.terminated
            f.truncated[t, :, index] = out.truncated
            self._ep_len[index] += 1
            self._ep_return[:, index] += out.rewards
            self._ep_acted[:, index] |= acted
            self._ep_done[:, index] |= acted & (out.terminated | out.truncated)
            if out.done:
                f.ends[index][t] = _End(out.rows.copy(), *self._end_flags(index, out))
                f.ended.append(self._env_episode[index])
                self._log_episode(index)
                self._start_episode(index, env.reset())
                f.episode_ids[index].append(self._env_episode[index])
                f.rows[t + 1, :, index], f.acting[t + 1, :, index] = self._rows[:, index], self._acting[:, index]
            else:
                f.rows[t + 1, :, index], f.acting[t + 1, :, index] = out.rows, out.acting

    def _end_flags(self, index: int, out: Any) -> tuple[bool, bool]:
        """Whether the episode of copy ``index`` that just ended counts as terminated and as
        truncated, as RLlib's ``MultiAgentEpisode`` counts it (and so as the module path trains on
        it): terminated if the env said so for all agents, or if every agent that acted is done
        by its own flags, truncations included; the agents acting at the last step take these
        flags too. So an episode that a time limit truncates for every agent is also terminated,
        and its last values are not bootstrapped, on both paths."""
        every_agent_done = bool(np.all(self._ep_done[:, index] | ~self._ep_acted[:, index]))
        return out.all_terminated or every_agent_done, out.all_truncated

    def _episodes(self, f: _Fragment) -> list[SingleAgentEpisode]:
        """One episode chunk per agent and stretch of steps it acted in, from the fragment."""
        steps, n, e = f.rewards.shape
        episodes = []
        for index in range(e):
            bounds = [-1, *sorted(f.ends[index]), *([] if steps - 1 in f.ends[index] else [steps - 1])]
            for start, end, env_episode in zip(np.add(bounds[:-1], 1), bounds[1:], f.episode_ids[index]):
                ended = end in f.ends[index]
                share = end - start + 1
                for agent in range(n):
                    for first, last in _runs(f.acting[start:end + 1, agent, index], start, self.grouped.agents[agent]):
                        terminated = bool(f.terminated[last, agent, index])
                        truncated = bool(f.truncated[last, agent, index])
                        final = f.rows[last + 1, agent, index]
                        if ended and last == end:
                            final = f.ends[index][end].rows[agent]
                            terminated |= f.ends[index][end].terminated
                            truncated |= f.ends[index][end].truncated
                        episodes.append(self._episode(f, index, agent, first, last, final, terminated, truncated,
                                                      share, env_episode))
                        share = 0
        return episodes

    def _episode(self, f: _Fragment, index: int, agent: int, first: int, last: int, final: np.ndarray,
                 terminated: bool, truncated: bool, share: int, env_episode: str) -> AgentEpisode:
        continuing = first == 0 and self._agent_t[agent, index] > 0
        if continuing:
            id_, t_started = self._agent_ids[agent, index], int(self._agent_t[agent, index])
        else:
            id_, t_started = uuid.uuid4().hex, 0
        length = last - first + 1
        done = terminated or truncated
        self._agent_t[agent, index] = 0 if done else t_started + length
        self._agent_ids[agent, index] = None if done else id_
        steps = slice(first, last + 1)
        observations = np.concatenate([f.rows[steps, agent, index], final[None]])
        extra = {Columns.ACTION_DIST_INPUTS: InfiniteLookbackBuffer(f.dist_inputs[steps, agent, index])}
        if f.logp is not None:
            extra[Columns.ACTION_LOGP] = InfiniteLookbackBuffer(f.logp[steps, agent, index])
        episode = AgentEpisode(
            id_, observations=InfiniteLookbackBuffer(observations),
            actions=InfiniteLookbackBuffer(f.actions[steps, agent, index]),
            rewards=InfiniteLookbackBuffer(f.rewards[steps, agent, index]),
            infos=InfiniteLookbackBuffer([_NO_INFO] * (length + 1)), extra_model_outputs=extra,
            terminated=terminated, truncated=truncated, len_lookback_buffer=0,
            t_started=t_started)
        episode.env_step_share = share
        episode.agent = self.grouped.agents[agent]
        episode.group = self._group_ids[self._group_of[agent]]
        episode.env_episode = env_episode
        return episode

    def _count_steps(self, f: _Fragment, steps: int) -> None:
        env_steps = steps * self.num_envs
        self.num_env_steps_sampled_lifetime += env_steps
        self.metrics.log_value(NUM_ENV_STEPS_SAMPLED, env_steps, reduce="sum")
        self.metrics.log_value(NUM_ENV_STEPS_SAMPLED_LIFETIME, env_steps, reduce="lifetime_sum",
                               with_throughput=True)
        per_agent = f.acting[:steps].sum(axis=(0, 2))
        per_group = np.bincount(self._group_of, per_agent, minlength=len(self._group_ids))
        for name, count in zip(self._agent_names, per_agent.tolist()):
            self.metrics.log_value((NUM_AGENT_STEPS_SAMPLED, name), count, reduce="sum")
            self.metrics.log_value((NUM_AGENT_STEPS_SAMPLED_LIFETIME, name), count, reduce="lifetime_sum")
        for group, count in zip(self._group_ids, per_group.tolist()):
            self.metrics.log_value((NUM_MODULE_STEPS_SAMPLED, group), int(count), reduce="sum")
            self.metrics.log_value((NUM_MODULE_STEPS_SAMPLED_LIFETIME, group), int(count), reduce="lifetime_sum")

    def _log_episode(self, index: int) -> None:
        """Logs the episode of copy ``index`` that just ended, with MultiAgentEnvRunner's keys."""
        acted = self._ep_acted[:, index]
        returns = self._ep_return[:, index]
        agents = {name: float(r) for name, r, a in zip(self._agent_names, returns, acted) if a}
        groups = defaultdict(float)
        for group, r, a in zip(self._group_of, returns, acted):
            if a:
                groups[self._group_ids[group]] += float(r)
        length, total = int(self._ep_len[index]), float(returns[acted].sum())
        window = max(1, math.ceil(self.config.metrics_num_episodes_for_smoothing / (self.config.num_env_runners or 1)))
        self.metrics.log_value(NUM_EPISODES, 1, reduce="sum")
        self.metrics.log_value(NUM_EPISODES_LIFETIME, 1, reduce="lifetime_sum")
        self.metrics.log_dict({
            EPISODE_LEN_MEAN: length, EPISODE_RETURN_MEAN: total,
            EPISODE_DURATION_SEC_MEAN: time.time() - self._ep_start[index],
            EPISODE_AGENT_RETURN_MEAN: agents, EPISODE_MODULE_RETURN_MEAN: dict(groups),
            EPISODE_AGENT_STEPS: {name: length for name in agents},
        }, window=window)
        self.metrics.log_dict({EPISODE_LEN_MIN: length, EPISODE_RETURN_MIN: total}, reduce="min", window=window)
        self.metrics.log_dict({EPISODE_LEN_MAX: length, EPISODE_RETURN_MAX: total}, reduce="max", window=window)

    @override(EnvRunner)
    def get_metrics(self) -> dict:
        return self.metrics.reduce()

    @override(Checkpointable)
    def get_state(self, components: str | Collection[str] | None = None, *,
                  not_components: str | Collection[str] | None = None, **kwargs: Any) -> StateDict:
        state = {NUM_ENV_STEPS_SAMPLED_LIFETIME: self.num_env_steps_sampled_lifetime}
        if self._check_component(COMPONENT_RL_MODULE, components, not_components):
            state[COMPONENT_RL_MODULE] = self.module.get_state(
                components=self._get_subcomponents(COMPONENT_RL_MODULE, components),
                not_components=self._get_subcomponents(COMPONENT_RL_MODULE, not_components), **kwargs)
            state[WEIGHTS_SEQ_NO] = self._weights_seq_no
        return state

    @override(Checkpointable)
    def set_state(self, state: StateDict) -> None:
        if COMPONENT_RL_MODULE in state:
            seq_no = state.get(WEIGHTS_SEQ_NO, 0)
            if seq_no == 0 or self._weights_seq_no < seq_no:
                module_state = state[COMPONENT_RL_MODULE]
                if isinstance(module_state, ray.ObjectRef):
                    module_state = ray.get(module_state)
                self.module.set_state(module_state)
            if seq_no > 0:
                self._weights_seq_no = seq_no
        if NUM_ENV_STEPS_SAMPLED_LIFETIME in state:
            self.num_env_steps_sampled_lifetime = state[NUM_ENV_STEPS_SAMPLED_LIFETIME]

    @override(Checkpointable)
    def get_ctor_args_and_kwargs(self) -> tuple:
        return (), {"config": self.config}

    @override(Checkpointable)
    def get_checkpointable_components(self) -> list:
        return [(COMPONENT_RL_MODULE, self.module)]

    @override(EnvRunner)
    def stop(self) -> None:
        for env in self.envs:
            env.close()


def _sample_categorical(logits: torch.Tensor, explore: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Actions (and their log-probabilities when exploring) of categorical distributions: the
    Gumbel-max trick, the distribution RLlib's TorchCategorical samples from, without its
    per-call validation and normalisation. Gumbel noise stays finite (uniforms clamped away from
    0), so a masked logit (FLOAT_MIN) is never chosen."""
    if not explore:
        return logits.argmax(dim=-1), None
    gumbel = -torch.log(-torch.log(torch.rand_like(logits).clamp_(min=1e-20)))
    action = (logits + gumbel).argmax(dim=-1)
    return action, torch.log_softmax(logits, dim=-1).gather(-1, action[:, None]).squeeze(-1)


def _runs(acting: np.ndarray, offset: int, agent: Any) -> list[tuple[int, int]]:
    """The stretch of steps (first, last; absolute) in which an agent acted within one episode
    segment: at most one (it may start late and end early).

    Raises:
        ValueError: If the agent acted in two separate stretches of one episode.
    """
    if acting.all():
        return [(offset, offset + len(acting) - 1)]
    steps = np.flatnonzero(acting)
    if not len(steps):
        return []
    if steps[-1] - steps[0] + 1 != len(steps):
        raise ValueError(f"Agent {agent!r} left an episode and came back. Fast execution supports agents "
                         "that join late or leave early, not ones that come back. Fix: use execution='modules'.")
    return [(offset + int(steps[0]), offset + int(steps[-1]))]


def _join(whole: dict[str, AgentEpisode], chunks: list[AgentEpisode]) -> None:
    """Adds ``chunks`` (of one fragment) to ``whole`` (by id), each joined to the chunk of the
    fragment before that its episode ends with."""
    for chunk in chunks:
        if chunk.id_ in whole:
            merged = whole[chunk.id_]
            merged.concat_episode(chunk)
            merged.env_step_share += chunk.env_step_share
            # concat_episode keeps one flag; the last chunk may have both (see _end_flags).
            merged.is_terminated, merged.is_truncated = chunk.is_terminated, chunk.is_truncated
        else:
            whole[chunk.id_] = chunk
