"""Puts a sharing plan into an RLlib ``AlgorithmConfig``: policies, mapping, module specs and the
padding connectors. :func:`with_sharing` does it all at config time, for users who build configs
in code (the callback does the same when the algorithm is built).
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from rllib_seps.sharing.adaps import CENTRES_KEY, adaps_model_config, mask_report, masks_for_module
from rllib_seps.options import MULTI_AGENT_ALGORITHMS, SePSOptions
from rllib_seps.pretraining.pipeline import PretrainingResult, run_pretraining
from rllib_seps.pretraining.rollouts import EnvCreator, make_env
from rllib_seps.sharing.plan import SharingPlan, build_plan



def check_algorithm(config: AlgorithmConfig) -> None:
    """Raises ValueError unless the config's algorithm can train several modules."""
    name = getattr(config.algo_class, "__name__", str(config.algo_class))
    if not config.enable_rl_module_and_learner:
        raise ValueError(f"rllib-seps needs RLlib's new API stack, but this {name} config has it "
                         "disabled; call config.api_stack(enable_rl_module_and_learner=True, "
                         "enable_env_runner_and_connector_v2=True).")
    if name not in MULTI_AGENT_ALGORITHMS:
        raise ValueError(f"Algorithm {name} cannot train multi-agent modules on the new API "
                         f"stack; use one of {', '.join(MULTI_AGENT_ALGORITHMS)}.")


def env_creator_of(config: AlgorithmConfig) -> EnvCreator:
    """The creator RLlib would use for ``config.env`` (a registered name or a class)."""
    env = config.env
    if isinstance(env, str):
        from rllib_seps.envs import ENVIRONMENTS
        from rllib_seps.envs.adapter import rllib_creator
        from rllib_seps.rllib.internals import registered_env_creator

        creator = registered_env_creator(env)
        if creator is not None:
            return creator
        if env in ENVIRONMENTS:  # ours, also between ray.shutdown() and the next ray.init()
            return rllib_creator(ENVIRONMENTS[env])
        if env in gym.registry:  # a gymnasium id: RLlib would gym.make it (single-agent)
            return lambda env_config: gym.make(env)
        raise ValueError(f"Environment {env!r} is not registered with RLlib; call "
                         "ray.tune.registry.register_env(name, creator) first, or import "
                         "rllib_seps.envs for the paper's environments.")
    if isinstance(env, type) and issubclass(env, MultiAgentEnv):
        return env
    raise ValueError(f"config.env must be a registered name or a MultiAgentEnv class; got {env!r}.")


def env_spaces(env_creator: EnvCreator, env_config: dict) -> tuple[dict, dict]:
    """Every agent's observation and action space, agents sorted."""
    env = make_env(env_creator, env_config)
    agents = sorted(env.possible_agents)
    spaces = ({a: env.observation_spaces[a] for a in agents}, {a: env.action_spaces[a] for a in agents})
    env.close()
    return spaces


def module_specs(plan: SharingPlan, model_config: dict | None = None) -> MultiRLModuleSpec:
    """One ``RLModuleSpec`` per module of the plan, with explicit spaces.

    Plain modules leave ``module_class`` empty so that RLlib fills in the algorithm's default;
    shared modules use :class:`rllib_seps.rllib.modules.SharedActorCriticModule`. An AdaPS module's
    cluster centres (from the plan) join its model_config, where the module finds them.
    """
    specs = {}
    for module_id, module in plan.modules.items():
        if module.plain:
            specs[module_id] = RLModuleSpec(observation_space=module.observation_space,
                                            action_space=module.action_space,
                                            model_config=dict(model_config or {}) or None)
        else:
            from rllib_seps.rllib.modules import padded_module_spec

            own_config = dict(model_config or {})
            if module.cluster_centres:
                own_config[CENTRES_KEY] = [list(row) for row in module.cluster_centres]
            specs[module_id] = padded_module_spec(module, own_config)
    return MultiRLModuleSpec(rl_module_specs=specs)


def apply_plan(config: AlgorithmConfig, plan: SharingPlan, model_config: dict | None = None,
               execution: str = "modules") -> AlgorithmConfig:
    """Returns a copy of ``config`` whose modules, mapping and connectors follow ``plan``.

    Args:
        execution: ``"modules"``, ``"fast"`` or ``"auto"``: see :attr:`SePSOptions.execution`.

    Raises:
        ValueError: If the config's model_config has settings a shared module would not honour,
            or ``execution="fast"`` does not apply.
    """
    from rllib_seps.rllib.fast.execution import apply_execution

    fast = apply_execution(config, plan, model_config, execution)
    if fast is not None:
        return fast
    config = config.copy(copy_frozen=False)
    if plan.needs_connectors:
        from rllib_seps.rllib.modules import check_model_config

        # RLlib merges the config's model_config into every module's: check what they will see.
        check_model_config({**config.model_config, **(model_config or {})})
    config.multi_agent(policies=set(plan.modules), policy_mapping_fn=plan.mapping,
                       policies_to_train=sorted(plan.modules))
    config.rl_module(rl_module_spec=module_specs(plan, model_config))
    if plan.needs_connectors:
        from rllib_seps.rllib.connectors import env_to_module_factory, module_to_env_factory

        # RLlib's NormalizeAndClipActions runs after our unpadding and would overwrite it with
        # the padded actions: our piece does its job per agent, with the config's settings.
        to_env = module_to_env_factory(plan, normalize_actions=config.normalize_actions,
                                       clip_actions=config.clip_actions)
        config.env_runners(env_to_module_connector=env_to_module_factory(plan),
                           module_to_env_connector=to_env)
        config.environment(normalize_actions=False, clip_actions=False)
    return config


def with_sharing(config: AlgorithmConfig, options: SePSOptions | dict[str, Any] | None = None,
                 ) -> tuple[AlgorithmConfig, PretrainingResult | None]:
    """Returns a copy of ``config`` set up for the chosen sharing strategy, ready to build.

    For ``seps`` and ``adaps`` this runs SePS pretraining now, on the config's environment.
    For ``adaps`` each cluster's centre is the mean of its agents' encoder means; the masks'
    densities and overlaps are stored in ``result.adaps_masks`` (and so in the report).

    Args:
        config: An RLlib config of a multi-agent capable algorithm with a multi-agent env.
        options: :class:`SePSOptions` or a dict of them (``strategy`` picks the sharing).

    Returns:
        The new config and the pretraining result (None for strategies without clusters).

    Raises:
        ValueError: For an algorithm or environment that cannot do multi-agent, or bad options.
    """
    options = options if isinstance(options, SePSOptions) else SePSOptions.from_dict(options)
    check_algorithm(config)
    creator = env_creator_of(config)
    obs_spaces, act_spaces = env_spaces(creator, config.env_config)
    result = None
    if options.strategy in ("seps", "adaps"):
        result = run_pretraining(creator, copy.deepcopy(dict(config.env_config)), options)
    model_config, centres = dict(options.module_kwargs), None
    if options.strategy == "adaps":
        labels = np.asarray(result.labels)
        means = result.embeddings.means
        centres = np.stack([means[labels == k].mean(axis=0) for k in range(labels.max() + 1)])
        model_config.update(adaps_model_config(drop_threshold=options.adaps_drop_threshold,
                                               masked_layers=options.adaps_masked_layers, seed=options.seed))
        result.adaps_masks = _adaps_mask_report(config, model_config, centres)
    plan = build_plan(options.strategy, obs_spaces, act_spaces,
                      labels=None if result is None else result.labels, centres=centres)
    return apply_plan(config, plan, model_config, options.execution), result


def _adaps_mask_report(config: AlgorithmConfig, model_config: dict, centres: np.ndarray) -> dict[str, Any]:
    """Densities and overlaps of the masks the AdaPS module will build (see rllib_seps.sharing.adaps)."""
    from rllib_seps.rllib.modules import DEFAULT_HIDDENS

    # The module sees the algorithm's model_config updated with the spec's (as RLlib merges them).
    merged = {**config.model_config, **model_config, CENTRES_KEY: centres.tolist()}
    widths = [int(h) for h in merged.get("fcnet_hiddens") or DEFAULT_HIDDENS]
    return mask_report(masks_for_module(merged, len(centres), widths))
