"""``rllib train``: shares, pretrains, trains through Ray Tune, and reports each experiment;
``rllib resume``: continues an interrupted, killed or failed run from its last checkpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Mapping

from rllib_seps.cli.errors import INTERRUPTED, UserError, closest
from rllib_seps.cli.experiment_file import Experiment, load_experiments, share
from rllib_seps.cli.session import ray_running


def progress_line(name: str, result: Mapping) -> str:
    """One line per training iteration: iteration, env steps, mean return, time."""
    from ray.tune.utils import flatten_dict

    flat = flatten_dict(dict(result))
    steps = flat.get("env_runners/num_env_steps_sampled_lifetime",
                     flat.get("num_env_steps_sampled_lifetime", 0))
    ret = flat.get("env_runners/episode_return_mean")
    ret_text = "   (no episode finished yet)" if ret is None else f"{ret:11.2f}"
    return (f"[{name}] iter {result.get('training_iteration', 0):>4}  env steps {int(steps or 0):>9}  "
            f"episode return mean {ret_text}  time {result.get('time_total_s', 0.0):7.1f}s")


# How many results a stop key may be missing from before the run ends with an error: RLlib
# leaves env_runners/... out of a result whose sampling timed out, and episode returns out
# until an episode ends; a key that none of this many results reports is taken as a mistake.
STOP_KEY_PATIENCE = 5


def checked_stopper(stop: Mapping, *, source: str, prefix: str = "",
                    patience: int = STOP_KEY_PATIENCE):
    """A Tune stopper for ``{result key: value}``: stops once ``result[key] >= value`` for any key.

    A result that lacks a key does not stop the trial; the key's threshold is simply not checked
    in it. A key that none of a trial's first ``patience`` results reported is taken as a
    mistake: the stopper raises, which ends the run (Tune itself would warn and train on with no
    end; :func:`run_tuner` gets the error back out of Tune).

    Args:
        stop: The criteria, nested or flat (``{"env_runners": {"episode_return_mean": -50}}``).
        source: The file or option the criteria came from, for the error.
        prefix: Dotted path of the criteria in ``source`` (``"exp.stop."``), for the error.
        patience: Results a key may be missing from before the error.

    Raises:
        UserError: When called with a trial's ``patience``-th result while some key was never
            reported; it names the key and the closest one that was.
    """
    from ray import tune
    from ray.tune.utils import flatten_dict

    class CheckedStopper(tune.Stopper):
        def __init__(self) -> None:
            self.criteria = flatten_dict(dict(stop))
            self.results: dict[str, int] = {}
            self.reported: dict[str, set] = {}

        def __call__(self, trial_id, result) -> bool:
            flat = flatten_dict(dict(result))
            self.results[trial_id] = self.results.get(trial_id, 0) + 1
            reported = self.reported.setdefault(trial_id, set())
            reported.update(key for key in self.criteria if key in flat)
            never = [key for key in self.criteria if key not in reported]
            if never and self.results[trial_id] >= patience:
                numeric = sorted(k for k, v in flat.items() if isinstance(v, (int, float)))
                raise UserError(source, f"{prefix}{never[0]}", f"none of the first {patience} "
                                "training results reported this key, so this criterion can never "
                                f"stop training{closest(never[0], numeric)} (e.g. training_iteration, "
                                "env_runners/num_env_steps_sampled_lifetime, "
                                "env_runners/episode_return_mean)")
            return any(key in flat and flat[key] >= value for key, value in self.criteria.items())

        def stop_all(self) -> bool:
            return False

    return CheckedStopper()


def _progress_callback(name: str):
    from ray import tune

    class ProgressPrinter(tune.Callback):
        """Prints :func:`progress_line` for every result of the trial."""

        def on_trial_result(self, iteration, trials, trial, result, **info):
            print(progress_line(name, result), flush=True)

    return ProgressPrinter()


def fit(experiment: Experiment, config, storage: Path, *, checkpoint_freq: int | None,
        verbose: int):
    """Trains one experiment with Ray Tune; returns Tune's ``ResultGrid`` (one trial)."""
    from ray import tune

    if checkpoint_freq is None:
        checkpoint_freq = experiment.checkpoint_freq
    if experiment.stop_source is None:
        source, prefix = experiment.source, f"{experiment.name}.stop."
    else:
        source, prefix = experiment.stop_source, ""
    run_config = tune.RunConfig(
        name=experiment.name,
        storage_path=str(storage),
        stop=checked_stopper(experiment.stop, source=source, prefix=prefix) if experiment.stop else None,
        checkpoint_config=tune.CheckpointConfig(
            checkpoint_frequency=checkpoint_freq,
            checkpoint_at_end=experiment.checkpoint_at_end),
        callbacks=[_progress_callback(experiment.name)],
        verbose=verbose,
    )
    # The class, not its name: a name lookup imports every algorithm RLlib has.
    return run_tuner(tune.Tuner(config.algo_class, param_space=config, run_config=run_config))


def run_tuner(tuner):
    """``tuner.fit()``, re-raising a :class:`UserError` of the stopper, which Tune reports as a
    ``TuneError`` raised while handling it (so it is the TuneError's ``__context__``)."""
    from ray.tune import TuneError

    try:
        return tuner.fit()
    except TuneError as error:
        cause = error.__context__
        while cause is not None and not isinstance(cause, UserError):
            cause = cause.__context__
        if cause is None:
            raise
        raise cause from None


def write_learning_curve(result, name: str) -> Path | None:
    """Writes ``learning_curve.png`` into the trial's directory; None if nothing to plot."""
    from rllib_seps.cli.plots import LEARNING_CURVE_PNG, plot_learning_curve

    frame = result.metrics_dataframe
    if frame is None or frame.empty:
        return None
    try:
        return plot_learning_curve(frame, Path(result.path) / LEARNING_CURVE_PNG, title=name)
    except ValueError as error:
        print(f"rllib: no learning curve: {error}", file=sys.stderr)
        return None


def report_run(results, name: str, experiment_dir: Path) -> int:
    """Prints how a run ended and where its files are; returns the exit status.

    Returns:
        0 when the trial finished, 1 when it failed, :data:`INTERRUPTED` when the run was
        interrupted before the trial finished (it can be resumed).
    """
    from ray import tune
    from ray.tune.experiment import Trial

    # The state saved on disk, which resume reads: after Ctrl-C Tune stops the trial and the
    # ResultGrid calls it finished, but its saved state says it was not.
    saved = tune.ExperimentAnalysis(str(experiment_dir)).trials
    if any(trial.status not in (Trial.TERMINATED, Trial.ERROR) for trial in saved):
        print(f"rllib: {name} was interrupted; continue it from its last checkpoint with: "
              f"rllib resume {experiment_dir}", file=sys.stderr, flush=True)
        return INTERRUPTED
    result = results[0]
    if result.error is not None:
        text = str(result.error).strip()
        last = text.splitlines()[-1] if text else type(result.error).__name__
        print(f"rllib: error: {name}: training failed: {last} (full error in {result.path}; "
              f"rllib resume {experiment_dir} retries from the last checkpoint)",
              file=sys.stderr, flush=True)
        return 1
    curve = write_learning_curve(result, name)
    if result.checkpoint is not None:
        print(f"Checkpoint: {result.checkpoint.path}")
    if curve is not None:
        print(f"Learning curve: {curve}")
    print(f"TensorBoard: tensorboard --logdir {experiment_dir}", flush=True)
    return 0


def train_experiment(experiment: Experiment, storage: Path, args: argparse.Namespace) -> int:
    """Shares, pretrains (reporting the clusters), trains and reports one experiment."""
    experiment_dir = storage / experiment.name
    config, _ = share(experiment, default_report_dir=experiment_dir)
    from rllib_seps.rllib.fast.execution import execution_of

    print(f"Training {experiment.name} ({config.algo_class.__name__} on {config.env}, "
          f"execution: {execution_of(config)}), "
          f"results in {experiment_dir}", flush=True)
    results = fit(experiment, config, storage, checkpoint_freq=args.checkpoint_freq,
                  verbose=args.verbose)
    return report_run(results, experiment.name, experiment_dir)


def train(args: argparse.Namespace, *, config_overrides: Mapping | None = None,
          stop: Mapping | None = None) -> int:
    """``rllib train file <yaml>``, with ``--config`` and ``--stop`` already parsed.

    Returns:
        The worst exit status of the experiments (see :func:`report_run`); an interrupted run
        starts no further experiment of the file.
    """
    experiments = load_experiments(args.file, config_overrides=config_overrides, stop=stop,
                                   stop_source="--stop")
    storage = Path(args.storage_path).expanduser().resolve()
    status = 0
    with ray_running(args.address, args.num_cpus):
        for i, experiment in enumerate(experiments):
            status = max(status, train_experiment(experiment, storage, args))
            if status == INTERRUPTED:
                rest = [e.name for e in experiments[i + 1:]]
                if rest:
                    print(f"rllib: not started: {', '.join(rest)}", file=sys.stderr, flush=True)
                break
    return status


def trained_algorithm(experiment_dir: Path) -> type:
    """The algorithm class that the Tune experiment at ``experiment_dir`` trains; its environment
    is made known again where a file named a user's (``"module:attribute"``).

    Raises:
        UserError: If the directory is not a restorable Tune experiment, or its environment can no
            longer be found.
    """
    from ray import tune

    from rllib_seps.cli.experiment_file import algorithm_config, check_env

    source = str(experiment_dir)
    if not tune.Tuner.can_restore(source):
        raise UserError(source, None, "not an experiment directory of rllib train (no tuner.pkl "
                        "in it); pass <storage path>/<experiment name>, e.g. results/bps_1-seps-ppo")
    trials = tune.ExperimentAnalysis(source).trials
    if not trials:
        raise UserError(source, None, "the experiment has no trial to resume")
    check_env(trials[0].config["env"], source, "env")
    return algorithm_config(trials[0].trainable_name, source, "trainable").algo_class


def resume(args: argparse.Namespace) -> int:
    """``rllib resume <experiment dir>``: continues an interrupted, killed or failed run from its
    last checkpoint, with the config it was started with (the same modules and clusters; no
    pretraining). Stop criteria, checkpoint frequency and progress lines are the run's own.

    Returns:
        The exit status, as for ``rllib train`` (:func:`report_run`).
    """
    from ray import tune

    import rllib_seps.envs  # noqa: F401  (registers the paper's environments)

    experiment_dir = Path(args.experiment).expanduser().resolve()
    algo_class = trained_algorithm(experiment_dir)
    with ray_running(args.address, args.num_cpus):
        print(f"Resuming {experiment_dir.name} ({algo_class.__name__}) from its last checkpoint, "
              f"results in {experiment_dir}", flush=True)
        tuner = tune.Tuner.restore(str(experiment_dir), trainable=algo_class,
                                   resume_unfinished=True, resume_errored=True)
        return report_run(run_tuner(tuner), experiment_dir.name, experiment_dir)
