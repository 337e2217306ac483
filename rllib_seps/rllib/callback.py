"""``SePSCallback``: add one callback to an existing RLlib config and get SePS.

When the algorithm is built, the callback runs SePS pretraining on the config's environment,
replaces the config's modules with one module per cluster (``cluster_0``, ``cluster_1``, ...) and
installs the cluster mapping on the learners and on every EnvRunner.

Example::

    from rllib_seps import SePSCallback

    config = (
        PPOConfig()
        .environment("bps_1")
        .multi_agent(policies={"shared"}, policy_mapping_fn=lambda aid, *a, **kw: "shared")
        .callbacks(SePSCallback.with_options(n_clusters="auto", seed=0))
    )
"""

from __future__ import annotations

import copy
import functools
import logging
from typing import Any

from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.utils.annotations import override

from rllib_seps.rllib.configure import check_algorithm, env_creator_of, env_spaces, module_specs
from rllib_seps.sharing.mapping import AgentToModuleMapping
from rllib_seps.options import SePSOptions
from rllib_seps.pretraining.pipeline import run_pretraining
from rllib_seps.pretraining.report import format_report, write_report
from rllib_seps.sharing.plan import build_plan

logger = logging.getLogger(__name__)

# Key of the pretraining report in the first training result.
RESULT_KEY = "seps"


def _install_mapping(env_runner: Any, mapping: AgentToModuleMapping, modules: list[str]) -> None:
    """Points a (restarted) EnvRunner's config at the cluster modules and mapping (a new config:
    the EnvRunner's own is frozen)."""
    config = env_runner.config.copy(copy_frozen=False)
    config.multi_agent(policies=set(modules), policy_mapping_fn=mapping, policies_to_train=modules)
    config.freeze()
    env_runner.config = config


class SePSCallback(RLlibCallback):
    """Runs SePS pretraining when the algorithm is built and trains one module per cluster.

    The config it is added to must be multi-agent already (e.g. one shared module); the callback
    replaces those modules. On restore from a checkpoint it does nothing new: the cluster modules
    and mapping come back with the checkpoint's config. When Ray restarts an EnvRunner (which comes
    back with the modules and mapping of the original config), the callback puts the clusters back.

    The pretraining report is logged, written (JSON and PNG) to ``report_dir`` or the trial's
    directory, and added to the first training result under ``"seps"``.

    Args:
        **options: :class:`rllib_seps.options.SePSOptions` fields. RLlib instantiates callbacks
            without arguments, so pass options with :meth:`with_options` (or functools.partial).
            Strategies that need padding connectors (``fups_id``, ``adaps``, heterogeneous
            clusters) must be set at config time with :func:`rllib_seps.with_sharing`.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.options = SePSOptions.from_dict(options)
        self.result = None
        self.report_files: dict = {}
        self._report_pending = False

    @classmethod
    def with_options(cls, **options: Any) -> functools.partial:
        """A zero-argument factory for ``config.callbacks(...)``; options are checked now."""
        SePSOptions.from_dict(options)
        return functools.partial(cls, **options)

    @override(RLlibCallback)
    def on_algorithm_init(self, *, algorithm: Any, metrics_logger: Any = None, **kwargs: Any) -> None:
        config = algorithm.config
        if isinstance(config.policy_mapping_fn, AgentToModuleMapping):
            return  # restored from a checkpoint: the clusters are already in place
        check_algorithm(config)
        if not config.is_multi_agent:
            raise ValueError(
                "SePSCallback needs a multi-agent config to start from; add e.g. "
                "config.multi_agent(policies={'shared'}, policy_mapping_fn=lambda aid, *a, **kw: 'shared')."
            )
        creator = env_creator_of(config)
        obs_spaces, act_spaces = env_spaces(creator, config.env_config)
        if self.options.strategy != "seps":
            raise ValueError(f"SePSCallback trains strategy 'seps'; for {self.options.strategy!r} "
                             "use rllib_seps.with_sharing(config, {'strategy': ...}) at config time.")
        if self.options.execution == "fast":  # "auto" runs the module path here
            raise ValueError("SePSCallback installs modules in a built algorithm; fast execution replaces the "
                             "EnvRunner and learner, which only a config can. Fix: use "
                             "rllib_seps.with_sharing(config, {'execution': 'fast', ...}) or execution='modules'.")
        result = run_pretraining(creator, copy.deepcopy(dict(config.env_config)), self.options)
        plan = build_plan("seps", obs_spaces, act_spaces, labels=result.labels)
        if plan.needs_connectors:
            mixed = [m for m, p in plan.modules.items() if not p.plain]
            raise ValueError(
                f"Clusters {mixed} hold agents with different observation or action spaces, which "
                "need padding connectors that cannot be added to a built algorithm. Use "
                "rllib_seps.with_sharing(config, {'strategy': 'seps'}) instead of the callback."
            )
        self._replace_modules(algorithm, plan.mapping, module_specs(plan, self.options.module_kwargs))

        self.result = result
        logger.info("\n%s", format_report(result))
        print(format_report(result), flush=True)
        directory = self.options.report_dir or getattr(algorithm, "logdir", None)
        if directory:
            self.report_files = write_report(result, directory)
        self._report_pending = True

    @staticmethod
    def _replace_modules(algorithm: Any, mapping: AgentToModuleMapping, specs: Any) -> None:
        """Adds the cluster modules, then removes the config's original ones."""
        default_class = algorithm.config.get_default_rl_module_spec().module_class
        new_ids = sorted(specs.rl_module_specs)
        old_ids = [m for m in algorithm.config.policies if m not in specs.rl_module_specs]
        for module_id in new_ids:
            spec = specs.rl_module_specs[module_id]
            spec.module_class = spec.module_class or default_class
            spec.model_config = algorithm.config.model_config | (spec.model_config or {})
            algorithm.add_module(module_id, spec, new_agent_to_module_mapping_fn=mapping,
                                 new_should_module_be_updated=new_ids)
        for module_id in old_ids:
            algorithm.remove_module(module_id, new_agent_to_module_mapping_fn=mapping,
                                    new_should_module_be_updated=new_ids)

    @override(RLlibCallback)
    def on_env_runners_recreated(self, *, algorithm: Any, env_runner_group: Any,
                                 env_runner_indices: list[int], is_evaluation: bool,
                                 **kwargs: Any) -> None:
        mapping = algorithm.config.policy_mapping_fn
        if not isinstance(mapping, AgentToModuleMapping):
            return
        modules = mapping.module_ids
        env_runner_group.foreach_env_runner(
            lambda er: _install_mapping(er, mapping, modules),
            remote_worker_ids=env_runner_indices, local_env_runner=False,
        )
        logger.warning("SePS: reinstalled the cluster mapping on restarted EnvRunners %s.",
                       env_runner_indices)

    @override(RLlibCallback)
    def on_train_result(self, *, algorithm: Any, metrics_logger: Any = None, result: dict,
                        **kwargs: Any) -> None:
        if self._report_pending:
            summary = self.result.summary()
            summary.pop("embedding_means")
            summary["report_files"] = {k: str(v) for k, v in self.report_files.items()}
            result[RESULT_KEY] = summary
            self._report_pending = False
