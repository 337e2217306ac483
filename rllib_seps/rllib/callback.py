"""``SePSCallback``: add one callback to an existing RLlib config and get any sharing strategy.

When the algorithm is built, the callback shares the algorithm's config with
:func:`rllib_seps.with_sharing` (the same code path as sharing at config time: pretraining, plan,
modules, mapping, padding connectors), then builds the algorithm's EnvRunners, learners and
helper actors again from the shared config with RLlib's own setup. Everything RLlib builds from a
config therefore holds the sharing: EnvRunners that Ray restarts (they are created with the
shared config), ``algo.restore_env_runners()``, checkpoints (they save the shared config) and
Tune trials.

Example::

    from rllib_seps import SePSCallback

    config = (
        PPOConfig()
        .environment("bps_1")
        .multi_agent(policies={"shared"}, policy_mapping_fn=lambda aid, *a, **kw: "shared")
        .callbacks(SePSCallback.with_options(strategy="seps", seed=0))
    )
"""

from __future__ import annotations

import functools
from typing import Any

from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.utils.annotations import override

from rllib_seps.options import SePSOptions
from rllib_seps.pretraining.pipeline import PretrainingResult
from rllib_seps.rllib.configure import OPTIONS_KEY, with_sharing
from rllib_seps.rllib.internals import rebuild_algorithm, tune_trial_dir

# Key of the pretraining report in the first training result.
RESULT_KEY = "seps"


class SePSCallback(RLlibCallback):
    """Shares the algorithm's modules with the chosen strategy when the algorithm is built.

    Supports what :func:`rllib_seps.with_sharing` supports: every strategy (``nops``, ``fups``,
    ``fups_id``, ``seps``, ``adaps``), padding, indication and AdaPS masks, with PPO, APPO and
    IMPALA. The config it is added to must build as it is: for agents whose spaces differ that
    means one module per agent (as RLlib requires), e.g. ``config.multi_agent(policies={str(a)
    for a in agents}, policy_mapping_fn=lambda aid, *a, **kw: str(aid))``; the callback replaces
    those modules.

    On restore from a checkpoint (whose config records the options under ``"seps"``) it does
    nothing new. The pretraining report is printed, written (JSON and PNG, paths printed) into
    ``report_dir``, else the Tune trial's directory (beside ``params.json``), else the algorithm's
    ``logdir``, and added to the first training result under ``"seps"``. The options are also
    recorded in the algorithm's config (``config.seps``).

    Note: rebuilding calls ``on_algorithm_init`` of the rebuilt algorithm's callbacks; callbacks
    listed after this one in ``config.callbacks(...)`` are also called by the first build.

    Args:
        **options: :class:`rllib_seps.options.SePSOptions` fields. RLlib instantiates callbacks
            without arguments (in the driver and in every EnvRunner), so pass options with
            :meth:`with_options`.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.options = SePSOptions.from_dict(options)
        self.result: PretrainingResult | None = None

    @classmethod
    def with_options(cls, **options: Any) -> functools.partial:
        """A zero-argument factory for ``config.callbacks(...)``, holding every option (so that its
        text in Tune's ``params.json`` shows them all); options are checked now.

        Raises:
            ValueError, TypeError: For an unknown option or a bad value.
        """
        return functools.partial(cls, **SePSOptions.from_dict(options).to_dict())

    @override(RLlibCallback)
    def on_algorithm_init(self, *, algorithm: Any, metrics_logger: Any = None, **kwargs: Any) -> None:
        recorded = getattr(algorithm.config, OPTIONS_KEY, None)
        if recorded is not None:  # restored from a checkpoint, or the rebuild below
            if SePSOptions.from_dict(recorded) != self.options.seeded(algorithm.config.seed):
                raise ValueError(f"This config is shared already, with options {recorded}, which differ "
                                 f"from SePSCallback's {self.options.to_dict()}. Fix: share once, "
                                 "either with the callback or with with_sharing.")
            return
        report_dir = tune_trial_dir(algorithm) or getattr(algorithm, "logdir", None)
        config, result = with_sharing(algorithm.config, self.options, default_report_dir=report_dir)
        rebuild_algorithm(algorithm, config)
        # The rebuild made new callback objects; hand the report to this callback's successor.
        for callback in algorithm.callbacks:
            if isinstance(callback, SePSCallback):
                callback.result = result
                break

    @override(RLlibCallback)
    def on_train_result(self, *, algorithm: Any, metrics_logger: Any = None, result: dict,
                        **kwargs: Any) -> None:
        if self.result is not None:
            summary = self.result.summary()
            summary.pop("embedding_means")
            result[RESULT_KEY] = summary
            self.result = None  # the report comes with the first result only
