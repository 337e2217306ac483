"""Puts a sharing strategy into an RLlib ``AlgorithmConfig``.

:func:`with_sharing` is the one path from a config and :class:`SePSOptions` to the shared config
and the pretraining result, for every route: users who build configs in code call it,
``rllib train`` calls it, and :class:`rllib_seps.rllib.callback.SePSCallback` calls it when the
algorithm is built. It checks everything that can be known before any work, runs SePS
pretraining (``seps``, ``adaps``), builds the sharing plan, and hands it to :func:`apply_plan`,
the one place where a plan becomes config settings (policies, mapping, module specs, padding
connectors).
"""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.models.utils import get_filter_config

from rllib_seps.options import MULTI_AGENT_ALGORITHMS, UNSUPPORTED_ALGORITHMS, SePSOptions
from rllib_seps.pretraining.pipeline import PretrainingResult, run_pretraining
from rllib_seps.pretraining.report import publish_report
from rllib_seps.pretraining.rollouts import EnvCreator, agent_spaces, make_env
from rllib_seps.rllib.internals import custom_connectors
from rllib_seps.rllib.learners import sync_every_module
from rllib_seps.sharing.adaps import CENTRES_KEY, adaps_model_config, mask_report, masks_for_module
from rllib_seps.sharing.mapping import AgentToModuleMapping, sorted_agents
from rllib_seps.sharing.plan import SharingPlan, build_plan, is_flat_vector

OPTIONS_KEY = "seps"
"""Config key that records the options a config was shared with: ``config.seps`` (set through
``update_from_dict``, so it is in ``to_dict()``, Tune's ``params.json`` and checkpoints). A config
that has it is shared already; :class:`SePSCallback` then does nothing new (on restore)."""


def check_algorithm(config: AlgorithmConfig) -> None:
    """Raises ValueError unless the config's algorithm trains every strategy (by name, with the fix)."""
    name = getattr(config.algo_class, "__name__", str(config.algo_class))
    if not config.enable_rl_module_and_learner:
        raise ValueError(f"rllib-seps needs RLlib's new API stack, but this {name} config has it "
                         "disabled; call config.api_stack(enable_rl_module_and_learner=True, "
                         "enable_env_runner_and_connector_v2=True).")
    if name in UNSUPPORTED_ALGORITHMS:
        raise ValueError(f"Algorithm {name} is not supported by rllib-seps: "
                         f"{UNSUPPORTED_ALGORITHMS[name]}. Fix: use one of {', '.join(MULTI_AGENT_ALGORITHMS)}.")
    if name not in MULTI_AGENT_ALGORITHMS:
        raise ValueError(f"Algorithm {name} cannot train multi-agent modules on the new API "
                         f"stack; use one of {', '.join(MULTI_AGENT_ALGORITHMS)}.")


ACTION_MASKING_MODULE = "ray.rllib.examples.rl_modules.classes.action_masking_rlm.ActionMaskingTorchRLModule"
"""RLlib's action-masking module: a config may name it, since the shared module masks the logits
with the env's ``"action_mask"`` observation as it does (compared by name: importing costs seconds)."""


def check_modules(config: AlgorithmConfig) -> None:
    """Raises ValueError if the config sets for its modules what the shared config would drop: a
    module class of the user's own (other than :data:`ACTION_MASKING_MODULE`), a spec's own
    ``model_config``, or ``policies_to_train`` that leaves a module out (the plan replaces every
    module and trains all; ``config.model_config`` reaches every module).

    Raises:
        ValueError: Naming the module, its setting and the fix.
    """
    trained = config.policies_to_train
    if trained is not None and (callable(trained) or set(config.policies) - set(trained)):
        raise ValueError(
            f"This config trains only some of its modules (policies_to_train={trained!r}), but "
            "rllib-seps replaces the config's modules with its own and trains every one of them. "
            "Fix: leave policies_to_train out.")
    default = config.get_default_rl_module_spec().module_class
    spec = config.rl_module_spec  # the user's specs, filled in with the algorithm's defaults
    specs = spec.rl_module_specs if isinstance(spec, MultiRLModuleSpec) else {"(every module)": spec}
    for module_id, module_spec in sorted(specs.items(), key=lambda item: str(item[0])):
        cls = module_spec.module_class
        if cls not in (None, default) and f"{cls.__module__}.{cls.__qualname__}" != ACTION_MASKING_MODULE:
            raise ValueError(
                f"Module {module_id!r} of this config is a {cls.__name__}, but rllib-seps builds every "
                "module itself (RLlib's default module, or its shared module where agents need "
                "padding, indication, AdaPS masks or the env's 'action_mask'), so that class would "
                "not be used. Fix: leave module_class out of config.rl_module(rl_module_spec=...); set "
                "sizes with config.rl_module(model_config=...) or the SePS option module_kwargs.")
        if module_spec.model_config:
            raise ValueError(
                f"Module {module_id!r} of this config sets its own model_config "
                f"{module_spec.model_config}, but rllib-seps replaces the config's modules with its "
                "own (one per cluster), so it would not be used. Fix: set it for every module with "
                "config.rl_module(model_config=...), or with the SePS option module_kwargs.")


def env_creator_of(config: AlgorithmConfig) -> EnvCreator:
    """The creator RLlib's EnvRunners use for ``config.env``: a name registered with
    ``register_env``, a gymnasium id (made with ``gym.make(id, **env_config)``) or a class."""
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
        if env in gym.registry:
            return lambda env_config: gym.make(env, **env_config)
        raise ValueError(f"Environment {env!r} is not registered with RLlib; call "
                         "ray.tune.registry.register_env(name, creator) first, or import "
                         "rllib_seps.envs for the paper's environments.")
    if isinstance(env, type):
        return env
    raise ValueError(f"config.env must be a registered name, a gymnasium id or a MultiAgentEnv "
                     f"class; got {env!r}.")


def env_spaces(env_creator: EnvCreator, env_config: dict) -> tuple[dict, dict]:
    """Every agent's observation and action space (agents in ``sorted_agents`` order), read
    through the env's public ``get_observation_space(agent)`` / ``get_action_space(agent)``.

    Raises:
        TypeError: If the env is not multi-agent (a raw PettingZoo env, named with its fix).
    """
    env = make_env(env_creator, env_config)
    try:
        _refuse_raw_pettingzoo(env)
        _, observation_spaces, action_spaces = agent_spaces(env)
    finally:
        env.close()
    return observation_spaces, action_spaces


def _refuse_raw_pettingzoo(env: Any) -> None:
    """Raises TypeError for a PettingZoo env RLlib's EnvRunners cannot step without its wrapper."""
    from pettingzoo import AECEnv, ParallelEnv

    for kind, wrapper in ((ParallelEnv, "ParallelPettingZooEnv"), (AECEnv, "PettingZooEnv")):
        if isinstance(env, kind):
            raise TypeError(
                f"The env creator returns a PettingZoo {kind.__name__} ({type(env).__name__}), which "
                f"RLlib's EnvRunners cannot step. Fix: wrap it in RLlib's {wrapper}, e.g. "
                f"register_env(name, lambda cfg: {wrapper}(make_env(**cfg))) with "
                f"from ray.rllib.env.wrappers.pettingzoo_env import {wrapper}.")


def default_module_reads(model_config: dict) -> Callable[[gym.Space], bool]:
    """Whether RLlib's default module (its catalog) reads an observation space as it is: flat
    vectors, and images of the shapes it has CNN filters for (or with ``conv_filters`` set).
    Anything else (Dict, Tuple, Discrete, small images) goes through a layout and the shared
    module (:func:`rllib_seps.sharing.plan.build_plan`)."""

    def reads(space: gym.Space) -> bool:
        if is_flat_vector(space):
            return True
        if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 3):
            return False
        if model_config.get("conv_filters"):
            return True
        try:
            get_filter_config(space.shape)
        except ValueError:  # "No default CNN configuration for obs shape ..."
            return False
        return True

    return reads


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


class UnmappedAgentsLog:
    """The agents that EnvRunners could not map, kept by a named Ray actor: RLlib ends an
    EnvRunner whose ``sample()`` raises (its memory goes with it) and only logs the error."""

    def __init__(self) -> None:
        self.agents: list = []

    def add(self, agent: Any) -> None:
        if agent not in self.agents:
            self.agents.append(agent)

    def get(self) -> list:
        return list(self.agents)


class RecordUnmappedAgent:
    """``on_unmapped`` hook of a config's :class:`AgentToModuleMapping`: records the agent in the
    config's :class:`UnmappedAgentsLog` actor (created on the first unmappable agent), where
    :func:`raise_on_unmapped_agents` finds it. Picklable; every copy of a config shares the name."""

    def __init__(self) -> None:
        self.actor_name = f"rllib_seps_unmapped_agents_{uuid.uuid4().hex}"

    def __call__(self, agent: Any) -> None:
        import ray

        if ray.is_initialized():
            log = ray.remote(UnmappedAgentsLog).options(
                name=self.actor_name, lifetime="detached", get_if_exists=True, num_cpus=0).remote()
            ray.get(log.add.remote(agent))


def raise_on_unmapped_agents(*, algorithm: Any, **kwargs: Any) -> None:
    """``on_train_result`` hook: raises on the driver when an EnvRunner met an agent that the SePS
    mapping has no module for (otherwise iterations would train nothing, with a logged error).

    Raises:
        ValueError: Naming the agents and the fix.
    """
    import ray

    mapping = algorithm.config.policy_mapping_fn
    record = getattr(mapping, "on_unmapped", None)
    if not isinstance(record, RecordUnmappedAgent):
        return
    try:
        log = ray.get_actor(record.actor_name)
    except ValueError:  # no EnvRunner met an unmappable agent
        return
    unmapped = sorted_agents(ray.get(log.get.remote()))
    ray.kill(log)
    known = list(mapping.agent_to_module)
    raise ValueError(
        f"EnvRunners met agents {unmapped[:10]} that the SePS mapping has no module for (it knows "
        f"{len(known)} agents: {known[:10]}); RLlib stopped those EnvRunners and dropped their "
        "samples. Fix: list every agent that can ever act in the environment's possible_agents (on "
        "every EnvRunner, whatever its env_config), then build the config again.")


def check_connectors(config: AlgorithmConfig, plan: SharingPlan) -> None:
    """Raises ValueError if agents of the plan need the padding connectors and the config has an
    env-to-module or module-to-env connector of its own: RLlib takes one factory of each, so the
    padding connectors would take its place and it would not run.

    Raises:
        ValueError: Naming the connectors, the agents and the fix.
    """
    if not plan.needs_connectors:
        return
    own = [name for name in custom_connectors(config) if name != "learner_connector"]
    if own:
        served = [agent for agent, agent_plan in plan.agents.items() if agent_plan.code is not None]
        raise ValueError(
            f"This config sets its own {' and '.join(own)}, but agents {served[:10]} get their "
            "input through rllib-seps's padding connectors (agents of different spaces, agent "
            "indication, AdaPS masks, or an observation RLlib's default module cannot read), which "
            "would take its place: it would not run. Fix: do its work in an env wrapper instead.")


def apply_plan(config: AlgorithmConfig, plan: SharingPlan, model_config: dict | None = None,
               execution: str = "modules") -> AlgorithmConfig:
    """Returns a copy of ``config`` whose modules, mapping and connectors follow ``plan``, with a
    learner that cannot hang when one of several learners gets no rows of a module
    (:func:`rllib_seps.rllib.learners.sync_every_module`).

    Also adds :func:`raise_on_unmapped_agents` to the config's ``on_train_result`` callbacks.

    Args:
        execution: ``"modules"``, ``"fast"`` or ``"auto"``: see :attr:`SePSOptions.execution`.

    Raises:
        ValueError: If the config's model_config has settings a shared module would not honour,
            ``execution="fast"`` does not apply, or the padding connectors would take the place of
            the config's own (:func:`check_connectors`).
    """
    from rllib_seps.rllib.fast.execution import apply_execution

    fast = apply_execution(config, plan, model_config, execution)
    if fast is not None:
        return fast
    check_connectors(config, plan)
    config = sync_every_module(config.copy(copy_frozen=False))
    if plan.needs_connectors:
        from rllib_seps.rllib.modules import check_model_config

        # RLlib merges the config's model_config into every module's: check what they will see.
        check_model_config({**config.model_config, **(model_config or {})})
    mapping = AgentToModuleMapping(plan.mapping.agent_to_module, on_unmapped=RecordUnmappedAgent())
    config.multi_agent(policies=set(plan.modules), policy_mapping_fn=mapping,
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
    hooks = config.callbacks_on_train_result
    hooks = [] if hooks is None else list(hooks) if isinstance(hooks, (list, tuple)) else [hooks]
    config.callbacks(on_train_result=[*hooks, raise_on_unmapped_agents])
    return config


def check_before_pretraining(config: AlgorithmConfig, options: SePSOptions, observation_spaces: dict,
                             action_spaces: dict) -> None:
    """Raises for what the environment's spaces tell before pretraining: more clusters than
    agents, and spaces the strategy cannot serve (for ``seps``, whose clusters are not known yet,
    each agent's own spaces; for ``adaps``, all agents in one module).

    Raises:
        ValueError, TypeError: Naming the option, agent or space at fault and the fix.
    """
    n_agents = len(observation_spaces)
    if options.strategy in ("seps", "adaps") and options.n_clusters != "auto" and options.n_clusters > n_agents:
        raise ValueError(f"SePS option n_clusters={options.n_clusters} is larger than the number of "
                         f"agents ({n_agents}) in the environment. Fix: n_clusters <= {n_agents}, or "
                         '"auto".')
    model_config = {**config.model_config, **options.module_kwargs}
    reads = default_module_reads(model_config)
    if options.strategy == "seps":  # every agent alone through a layout: its spaces can be padded
        build_plan("nops", observation_spaces, action_spaces, default_reads=lambda space: False)
        # An agent whose space the default module cannot read needs the connectors in any cluster.
        check_connectors(config, build_plan("nops", observation_spaces, action_spaces, default_reads=reads))
        return
    labels = [0] * n_agents if options.strategy == "adaps" else None
    plan = build_plan(options.strategy, observation_spaces, action_spaces, labels, default_reads=reads)
    check_connectors(config, plan)
    if plan.needs_connectors:
        from rllib_seps.rllib.modules import check_model_config

        check_model_config(model_config)


def with_sharing(config: AlgorithmConfig, options: SePSOptions | dict[str, Any] | None = None, *,
                 default_report_dir: str | Path | None = None) -> tuple[AlgorithmConfig, PretrainingResult | None]:
    """Returns a copy of ``config`` set up for the chosen sharing strategy, ready to build.

    For ``seps`` and ``adaps`` this runs SePS pretraining now, on the config's environment, and
    prints the report (:func:`rllib_seps.pretraining.report.publish_report`). For ``adaps`` each
    cluster's centre is the mean of its agents' encoder means; the masks' densities and overlaps
    are stored in ``result.adaps_masks`` (and so in the report). The options are recorded in the
    new config under ``"seps"`` (see :data:`OPTIONS_KEY`).

    Args:
        config: An RLlib config of PPO, APPO or IMPALA with a multi-agent env (any hashable agent
            ids; one module or one per agent, it does not matter: the plan replaces them).
        options: :class:`SePSOptions` or a dict of them (``strategy`` picks the sharing).
        default_report_dir: Where to write the report when ``options.report_dir`` is None (the
            callback passes the trial's directory, ``rllib train`` the experiment's); if both
            are None the report is printed only.

    Returns:
        The new config and the pretraining result (None for strategies without clusters).

    Raises:
        ValueError, TypeError: Before any pretraining, for bad options, an unsupported algorithm
            or space, module specs that the shared config would drop (:func:`check_modules`),
            more clusters than agents, or an environment that is not multi-agent.
    """
    options = options if isinstance(options, SePSOptions) else SePSOptions.from_dict(options)
    options = options.seeded(config.seed)
    recorded = getattr(config, OPTIONS_KEY, None)
    if recorded is not None:
        raise ValueError(f"This config is shared already (strategy {recorded.get('strategy')!r}); "
                         "share the original config once, with one set of options.")
    check_algorithm(config)
    check_modules(config)
    creator = env_creator_of(config)
    obs_spaces, act_spaces = env_spaces(creator, config.env_config)
    check_before_pretraining(config, options, obs_spaces, act_spaces)
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
                      labels=None if result is None else result.labels, centres=centres,
                      default_reads=default_module_reads({**config.model_config, **model_config}))
    shared = apply_plan(config, plan, model_config, options.execution)
    if result is not None:
        from rllib_seps.rllib.fast.execution import execution_of

        result.execution = execution_of(shared)
    shared.update_from_dict({OPTIONS_KEY: options.to_dict()})
    if result is not None:
        publish_report(result, options.report_dir or default_report_dir)
    return shared, result


def _adaps_mask_report(config: AlgorithmConfig, model_config: dict, centres: np.ndarray) -> dict[str, Any]:
    """Densities and overlaps of the masks the AdaPS module will build (see rllib_seps.sharing.adaps)."""
    from rllib_seps.rllib.modules import DEFAULT_HIDDENS

    # The module sees the algorithm's model_config updated with the spec's (as RLlib merges them).
    merged = {**config.model_config, **model_config, CENTRES_KEY: centres.tolist()}
    widths = [int(h) for h in merged.get("fcnet_hiddens") or DEFAULT_HIDDENS]
    return mask_report(masks_for_module(merged, len(centres), widths))
