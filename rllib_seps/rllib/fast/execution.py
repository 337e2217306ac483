"""Choosing the execution of a sharing plan, and configuring fast execution.

``execution`` (see :attr:`rllib_seps.options.SePSOptions.execution`):

- ``"modules"``: RLlib's multi-agent path: one RLModule per module of the plan,
  ``MultiAgentEnvRunner``, per-agent per-step episode bookkeeping.
- ``"fast"``: one grouped module holds every module's parameters as a group
  (:mod:`rllib_seps.sharing.groups`); :class:`rllib_seps.rllib.fast.env_runner.FastEnvRunner` steps
  every agent of several env copies as one batch; :class:`rllib_seps.rllib.fast.learner.FastPPOTorchLearner`
  trains every group as RLlib would train its own module. The config it makes is single-agent:
  one module, ``default_policy``.
- ``"auto"``: fast where it applies, else modules; :func:`apply_execution` logs which and why.

Fast execution applies to PPO (any number of groups) and to APPO and IMPALA with one group
(``fups``, ``fups_id``, ``adaps``: their own learners then train the one group as it is), for
vector observations, agents whose actions pad to one space (all Discrete/MultiDiscrete or all
Box), environments where every live agent acts at every step (agents may join late or leave
early), without user connectors, per-episode callbacks, custom learner classes, recurrent models,
or (with several groups) gradient clipping by norm, which RLlib applies per module.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils import force_list

from rllib_seps.options import EXECUTIONS
from rllib_seps.rllib.internals import custom_connectors
from rllib_seps.rllib.modules import GROUPED_PLAN_KEY, LAYOUT_KEY, SharedActorCriticModule, check_model_config
from rllib_seps.sharing.adaps import CENTRES_KEY
from rllib_seps.sharing.groups import GroupedPlan, grouped_plan
from rllib_seps.sharing.mapping import AgentToModuleMapping
from rllib_seps.sharing.plan import SharingPlan

EPISODE_HOOKS = ("on_episode_created", "on_episode_start", "on_episode_step", "on_episode_end")
PROBE_STEPS = 64
"""Steps the check of an environment takes with random actions (see :func:`_probe_env`)."""


def uses_fast_execution(config: AlgorithmConfig) -> bool:
    """Whether ``config`` runs fast execution (made by :func:`apply_execution`)."""
    from rllib_seps.rllib.fast.env_runner import FastEnvRunner

    return config.env_runner_cls is FastEnvRunner


def execution_of(config: AlgorithmConfig) -> str:
    """``"fast"`` or ``"modules"``: the path that ``config`` runs."""
    return "fast" if uses_fast_execution(config) else "modules"


def plan_mapping(config: AlgorithmConfig) -> AgentToModuleMapping:
    """Agent -> module of the sharing plan that ``config`` runs, on either execution path (fast
    execution's own ``policy_mapping_fn`` sends every agent to the one grouped module)."""
    if not uses_fast_execution(config):
        return config.policy_mapping_fn
    grouped = config.rl_module_spec.model_config[GROUPED_PLAN_KEY]
    return AgentToModuleMapping({agent: grouped.groups[group]
                                 for agent, group in zip(grouped.agents, grouped.group_of_agent)})


def _callback_classes(config: AlgorithmConfig) -> list[type]:
    classes = []
    for entry in force_list(config.callbacks_class):
        entry = getattr(entry, "func", entry)  # functools.partial(cls, ...)
        if isinstance(entry, type):
            classes.append(entry)
    return classes


def _probe_env(config: AlgorithmConfig, grouped: GroupedPlan) -> None:
    """Steps one copy of the env with random actions through the fast EnvRunner's adapter, which
    raises for agents that do not act at every step (turn-based envs) or come back after leaving."""
    from rllib_seps.rllib.configure import env_creator_of
    from rllib_seps.rllib.fast.arrays import make_arrays

    arrays = make_arrays(env_creator_of(config)(dict(config.env_config)), grouped, config.normalize_actions)
    rng = np.random.default_rng(0)
    padding = grouped.stacked_codes().action_mask
    try:
        rows = arrays.reset(seed=0).rows
        for _ in range(PROBE_STEPS):
            # The input's masks: each agent's own actions, and only legal ones where the env says.
            out = arrays.step(_random_actions(rng, grouped.layout.unpack(rows).action_mask, padding, grouped))
            rows = arrays.reset().rows if out.done else out.rows
    finally:
        arrays.close()


def _random_actions(rng: np.random.Generator, masks: np.ndarray, padding: np.ndarray,
                    grouped: GroupedPlan) -> np.ndarray:
    """Random padded actions within each agent's mask (its padding mask where the mask allows
    nothing: an agent that does not act, or a component with no legal action)."""
    space = grouped.layout.action_space

    def choice(mask: np.ndarray, fallback: np.ndarray) -> int:
        allowed = np.flatnonzero(mask)
        return rng.choice(allowed if len(allowed) else np.flatnonzero(fallback))

    if hasattr(space, "n"):  # Discrete
        return np.array([choice(m, p) for m, p in zip(masks, padding)], space.dtype)
    if hasattr(space, "nvec"):  # MultiDiscrete: one component at a time
        bounds = np.cumsum(np.concatenate([[0], space.nvec]))
        return np.array([[choice(m[lo:hi], p[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])]
                         for m, p in zip(masks, padding)], space.dtype)
    return rng.uniform(-1.0, 1.0, (len(padding), *space.shape)).astype(space.dtype) * padding


def fast_blockers(config: AlgorithmConfig, plan: SharingPlan, model_config: dict | None = None) -> list[str]:
    """Why fast execution does not apply to ``plan`` on ``config`` (empty when it does).

    Checks the algorithm, spaces, connectors, callbacks, model and gradient clipping first, then
    steps one copy of the environment (:data:`PROBE_STEPS` random steps).
    """
    name = getattr(config.algo_class, "__name__", str(config.algo_class))
    n_groups = len(plan.modules)
    if name not in ("PPO", "APPO", "IMPALA") or (name != "PPO" and n_groups > 1):
        return [f"{name} with {n_groups} groups (fast execution trains PPO with any number of groups, "
                "APPO and IMPALA with one)"]
    try:
        grouped = grouped_plan(plan)
    except (TypeError, ValueError) as error:
        return [f"the agents' spaces cannot share one padded input ({error})"]
    reasons = []
    if grouped.layout.image:
        reasons.append("image observations (a grouped module has no CNN)")
    connectors = custom_connectors(config)
    if connectors:
        reasons.append(f"custom connectors ({', '.join(connectors)}), which the fast EnvRunner does not run")
    hooks = sorted({hook for cls in _callback_classes(config) for hook in EPISODE_HOOKS
                    if getattr(cls, hook, None) is not getattr(RLlibCallback, hook)}
                   | {hook for hook in EPISODE_HOOKS if getattr(config, f"callbacks_{hook}", None)})
    if hooks:
        reasons.append(f"callbacks with per-episode hooks ({', '.join(hooks)}), which the fast EnvRunner does not call")
    try:
        check_model_config({**config.model_config, **(model_config or {})})
    except ValueError as error:
        reasons.append(f"a model_config the grouped module does not honour ({error})")
    if n_groups > 1 and config.grad_clip and config.grad_clip_by != "value":
        reasons.append(f"grad_clip by {config.grad_clip_by!r} with {n_groups} groups (RLlib clips each module's "
                       "gradients by its own norm)")
    if config.learner_class is not config.get_default_learner_class():
        reasons.append(f"a custom learner class ({config.learner_class.__name__})")
    if config.num_aggregator_actors_per_learner:
        reasons.append("aggregator actors (the fast learner runs its own learner connector)")
    if not reasons:
        try:
            _probe_env(config, grouped)
        except ValueError as error:
            reasons.append(f"the environment ({error})")
    return reasons


def fast_module_spec(grouped: GroupedPlan, model_config: dict | None = None) -> RLModuleSpec:
    """The spec of the grouped module: :class:`SharedActorCriticModule` over ``grouped.layout``."""
    own = dict(model_config or {})
    if grouped.cluster_centres:
        own[CENTRES_KEY] = [list(row) for row in grouped.cluster_centres]
    return RLModuleSpec(module_class=SharedActorCriticModule, observation_space=grouped.layout.space,
                        action_space=grouped.layout.action_space,
                        model_config={**own, LAYOUT_KEY: grouped.layout, GROUPED_PLAN_KEY: grouped})


def apply_execution(config: AlgorithmConfig, plan: SharingPlan, model_config: dict | None = None,
                    execution: str = "auto") -> AlgorithmConfig | None:
    """The fast-execution config of ``plan``, or None when the module path runs.

    Args:
        config: The user's config (not modified).
        plan: The sharing plan.
        model_config: Extra model_config for the modules (as given to ``apply_plan``).
        execution: ``"fast"``, ``"modules"`` or ``"auto"`` (fast where it applies).

    Returns:
        A copy of ``config`` with one grouped module, the fast EnvRunner and (PPO) the fast
        learner, or None for the module path.

    Raises:
        ValueError: For an unknown ``execution``, or ``"fast"`` where it does not apply (naming why).
    """
    if execution not in EXECUTIONS:
        raise ValueError(f"execution={execution!r} is invalid: must be one of {EXECUTIONS}.")
    if execution == "modules":
        return None
    reasons = fast_blockers(config, plan, model_config)
    if reasons:
        if execution == "fast":
            raise ValueError(f"execution='fast' does not apply here: {'; '.join(reasons)}. Fix: use "
                             "execution='modules' (or 'auto', which falls back to it).")
        print(f"SePS execution: modules (fast execution does not apply: {'; '.join(reasons)}).", flush=True)
        return None
    from rllib_seps.rllib.fast.env_runner import FastEnvRunner
    from rllib_seps.rllib.fast.learner import FastPPOTorchLearner

    grouped = grouped_plan(plan)
    fast = config.copy(copy_frozen=False)
    fast.multi_agent(policies={DEFAULT_MODULE_ID},
                     policy_mapping_fn=AgentToModuleMapping(dict.fromkeys(grouped.agents, DEFAULT_MODULE_ID)),
                     policies_to_train=[DEFAULT_MODULE_ID])
    fast.rl_module(rl_module_spec=fast_module_spec(grouped, model_config))
    fast.env_runners(env_runner_cls=FastEnvRunner)
    if getattr(config.algo_class, "__name__", "") == "PPO":
        fast.learners(learner_class=FastPPOTorchLearner)
    shown = ", ".join(grouped.groups[:5]) + (" ..." if len(grouped.groups) > 5 else "")
    n = len(grouped.groups)
    print(f"SePS execution: fast (one grouped module, {n} group{'s' if n > 1 else ''}: {shown}).", flush=True)
    return fast
