"""``rllib train``: shares, pretrains, trains through Ray Tune, and reports each experiment."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Mapping

from rllib_seps.cli.errors import UserError, closest
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


def checked_stopper(stop: Mapping):
    """A Tune stopper for ``{result key: value}`` (stop once ``result[key] >= value``) that, unlike
    Tune's own, stops at the first result that lacks a key and records it (Tune only warns and
    trains on without end)."""
    from ray import tune
    from ray.tune.utils import flatten_dict

    class CheckedStopper(tune.Stopper):
        def __init__(self) -> None:
            self.criteria = flatten_dict(dict(stop))
            self.missing: list[str] = []
            self.result_keys: list[str] = []

        def __call__(self, trial_id, result) -> bool:
            flat = flatten_dict(dict(result))
            self.missing = [key for key in self.criteria if key not in flat]
            if self.missing:
                self.result_keys = sorted(k for k, v in flat.items() if isinstance(v, (int, float)))
                return True
            return any(flat[key] >= value for key, value in self.criteria.items())

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
    """Trains one experiment with Ray Tune; returns the trial's ``ray.tune.Result``."""
    from ray import tune

    if checkpoint_freq is None:
        checkpoint_freq = experiment.checkpoint_freq
    stopper = checked_stopper(experiment.stop) if experiment.stop else None
    run_config = tune.RunConfig(
        name=experiment.name,
        storage_path=str(storage),
        stop=stopper,
        checkpoint_config=tune.CheckpointConfig(
            checkpoint_frequency=checkpoint_freq,
            checkpoint_at_end=experiment.checkpoint_at_end),
        callbacks=[_progress_callback(experiment.name)],
        verbose=verbose,
    )
    # The class, not its name: a name lookup imports every algorithm RLlib has.
    tuner = tune.Tuner(config.algo_class, param_space=config, run_config=run_config)
    result = tuner.fit()[0]
    if stopper is not None and stopper.missing:
        key = stopper.missing[0]
        source, where = ((experiment.source, f"{experiment.name}.stop.{key}")
                         if experiment.stop_source is None else (experiment.stop_source, key))
        raise UserError(source, where, "not a key of the training results, so training would never "
                        f"stop{closest(key, stopper.result_keys)} (e.g. training_iteration, "
                        "env_runners/num_env_steps_sampled_lifetime, env_runners/episode_return_mean)")
    return result


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


def train_experiment(experiment: Experiment, storage: Path, args: argparse.Namespace) -> int:
    """Shares, pretrains (reporting the clusters), trains and reports one experiment."""
    config, pretraining = share(experiment)
    experiment_dir = storage / experiment.name
    if pretraining is not None:
        from rllib_seps.pretraining.report import format_report, write_report

        print(format_report(pretraining), flush=True)
        files = write_report(pretraining, experiment_dir)
        print(f"SePS report: {files['json']} and {files['png']}", flush=True)
    from rllib_seps.rllib.fast.execution import uses_fast_execution

    execution = "fast" if uses_fast_execution(config) else "modules"
    print(f"Training {experiment.name} ({config.algo_class.__name__} on {config.env}, execution: {execution}), "
          f"results in {experiment_dir}", flush=True)
    result = fit(experiment, config, storage, checkpoint_freq=args.checkpoint_freq,
                 verbose=args.verbose)
    if result.error is not None:
        last = str(result.error).strip().splitlines()[-1] if str(result.error).strip() else ""
        print(f"rllib: error: {experiment.name}: training failed: {last} (full error in "
              f"{result.path})", file=sys.stderr)
        return 1
    curve = write_learning_curve(result, experiment.name)
    if result.checkpoint is not None:
        print(f"Checkpoint: {result.checkpoint.path}")
    if curve is not None:
        print(f"Learning curve: {curve}")
    print(f"TensorBoard: tensorboard --logdir {experiment_dir}", flush=True)
    return 0


def train(args: argparse.Namespace, *, config_overrides: Mapping | None = None,
          stop: Mapping | None = None) -> int:
    """``rllib train file <yaml>``, with ``--config`` and ``--stop`` already parsed."""
    experiments = load_experiments(args.file, config_overrides=config_overrides, stop=stop,
                                   stop_source="--stop")
    storage = Path(args.storage_path).expanduser().resolve()
    status = 0
    with ray_running(args.address, args.num_cpus):
        for experiment in experiments:
            status = max(status, train_experiment(experiment, storage, args))
    return status
