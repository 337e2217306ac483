"""``rllib`` (also ``rllib-seps``): train from classic RLlib YAML files and evaluate checkpoints.

Ray 2.60 ships no ``rllib`` command any more; this one reads the classic experiment files::

    rllib train file tuned_configs/bps_1-seps-ppo.yaml --stop '{"training_iteration": 20}'
    rllib evaluate results/bps_1-seps-ppo/PPO_bps_1_.../checkpoint_000000 --episodes 20

A file maps experiment names to ``{run, env, stop, config}`` (Tune's experiment dict). ``config``
holds RLlib settings (old keys such as ``lambda`` or ``num_workers`` are accepted, as by
``AlgorithmConfig.update_from_dict``; ``model_config`` sets the new stack's model) and an
optional ``seps:`` block of :class:`rllib_seps.SePSOptions`; without it the run is plain RLlib.
Training runs through Ray Tune, so results, checkpoints and TensorBoard logs land in
``<storage-path>/<experiment name>/`` as usual. Mistakes in a file (invalid YAML, an unknown
algorithm, environment, config key or SePS option) end in one line naming the file and the key.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import difflib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import yaml

from rllib_seps.options import MULTI_AGENT_ALGORITHMS, SePSOptions

# Keys of one experiment in a file; "config" holds the algorithm's settings.
EXPERIMENT_KEYS = ("run", "env", "stop", "config", "checkpoint_freq", "checkpoint_at_end")
# Config keys handled here rather than by AlgorithmConfig.update_from_dict.
SEPS_KEY, MODEL_KEYS = "seps", ("model_config", "model")
DEFAULT_STORAGE = "results"
CHECKPOINT_MARKER = "class_and_ctor_args.pkl"


class UserError(Exception):
    """A mistake in the command line or an experiment file, shown as one line.

    Args:
        source: The file (or command-line option) at fault.
        key: Where in it, as a dotted path (``exp.config.seps.n_clusters``), or None.
        message: What is wrong and, where possible, the fix.
    """

    def __init__(self, source: str, key: str | None, message: str) -> None:
        self.source, self.key, self.message = str(source), key, " ".join(str(message).split())
        super().__init__(str(self))

    def __str__(self) -> str:
        return ": ".join(part for part in (self.source, self.key, self.message) if part)


@dataclass
class Experiment:
    """One experiment of a file, ready to share and train.

    Attributes:
        name: The experiment's name (Tune's experiment directory under the storage path).
        source: The file it came from.
        config: The algorithm config, with environment and settings, but no sharing yet.
        seps: The ``seps:`` options, or None for a plain RLlib run.
        stop: Tune stop criteria (result key -> value).
        checkpoint_freq: Checkpoint every this many iterations (0: none on the way).
        checkpoint_at_end: Checkpoint when training stops.
        stop_source: Where ``stop`` came from if not the file (e.g. ``--stop``), for errors.
    """

    name: str
    source: str
    config: Any
    seps: SePSOptions | None
    stop: dict = field(default_factory=dict)
    checkpoint_freq: int = 0
    checkpoint_at_end: bool = True
    stop_source: str | None = None


# ---------------------------------------------------------------- YAML -> AlgorithmConfig


def _closest(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def deep_merge(base: Mapping, override: Mapping) -> dict:
    """``base`` with ``override`` merged in; nested mappings merge, everything else replaces."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_yaml(path: str | Path) -> dict:
    """Reads an experiment file.

    Raises:
        UserError: If the file cannot be read, is not valid YAML (naming line and column), or
            is not a mapping of experiment names to experiments.
    """
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise UserError(source, None, f"cannot read the file: {error.strerror or error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        raise UserError(source, where, f"invalid YAML: {error.problem}") from None
    except yaml.YAMLError as error:
        raise UserError(source, None, f"invalid YAML: {error}") from None
    if not isinstance(data, dict) or not data:
        raise UserError(source, None, "must map experiment names to {run, env, stop, config}; "
                        f"got {type(data).__name__}")
    return data


def algorithm_config(name: Any, source: str, key: str):
    """The default config of algorithm ``name``, importing that algorithm only.

    Raises:
        UserError: For an algorithm that cannot train multi-agent modules on the new stack.
    """
    if name not in MULTI_AGENT_ALGORITHMS:
        hint = (_closest(str(name), MULTI_AGENT_ALGORITHMS)
                or f"; use one of {', '.join(MULTI_AGENT_ALGORITHMS)}")
        raise UserError(source, key, f"unknown or unsupported algorithm {name!r}{hint}")
    from ray.rllib.algorithms.registry import ALGORITHMS as RLLIB_ALGORITHMS

    _, config = RLLIB_ALGORITHMS[name]()
    return config


def check_env(env: Any, source: str, key: str) -> str:
    """Checks that ``env`` names a registered RLlib or gymnasium environment.

    Raises:
        UserError: Naming the closest of rllib-seps' environments.
    """
    import gymnasium as gym
    from ray.tune.registry import ENV_CREATOR, _global_registry

    from rllib_seps.envs import ENVIRONMENTS

    if not isinstance(env, str) or not env:
        raise UserError(source, key, f"must name an environment; got {env!r}")
    if env in ENVIRONMENTS or _global_registry.contains(ENV_CREATOR, env) or env in gym.registry:
        return env
    hint = _closest(env, sorted(ENVIRONMENTS)) or f"; rllib-seps registers {sorted(ENVIRONMENTS)}"
    raise UserError(source, key, f"unknown environment {env!r}{hint}")


def seps_options(options: Any, source: str, key: str) -> SePSOptions:
    """Validates a ``seps:`` block.

    Raises:
        UserError: Naming the unknown option (and the closest valid one) or the invalid value.
    """
    if not isinstance(options, Mapping):
        raise UserError(source, key, f"must be a mapping of SePS options; got {options!r}")
    known = list(SePSOptions.__dataclass_fields__)
    for name in options:
        if name not in known:
            raise UserError(source, f"{key}.{name}",
                            f"unknown SePS option {name!r}{_closest(str(name), known)}")
    try:
        return SePSOptions.from_dict(options)
    except (TypeError, ValueError) as error:
        bad = re.search(r"SePS option (\w+)=", str(error))
        raise UserError(source, f"{key}.{bad.group(1)}" if bad else key, str(error)) from None


def apply_settings(config, settings: Mapping, source: str, key: str):
    """Applies a file's ``config:`` settings (without ``seps``, ``env``) to an AlgorithmConfig.

    Every key must be a setting of the algorithm's config (or one of the old names that
    ``update_from_dict`` translates); ``model_config`` (alias ``model``) sets the new stack's
    model config. Settings are applied one by one, so that a failing one is named.

    Raises:
        UserError: For an unknown key (naming the closest) or a value RLlib rejects.
    """
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

    known = sorted(k for k in vars(config) if not k.startswith("_")) + ["lambda", "model_config"]
    algo = getattr(config.algo_class, "__name__", "algorithm")
    for name, value in settings.items():
        where = f"{key}.{name}"
        translated = AlgorithmConfig._translate_special_keys(str(name), warn_deprecated=False)
        try:
            if name in MODEL_KEYS:
                if not isinstance(value, Mapping):
                    raise ValueError("must be a mapping such as {fcnet_hiddens: [64, 64]}; "
                                     f"got {value!r}")
                config.rl_module(model_config={**config._model_config, **value})
            elif name == "multiagent" or hasattr(config, translated):
                config.update_from_dict({name: value})
            else:
                hint = _closest(str(name), known)
                raise UserError(source, where, f"not a setting of {algo}'s config{hint}")
        except UserError:
            raise
        except Exception as error:  # RLlib raises ValueError, TypeError, DeprecationWarning ...
            raise UserError(source, where, f"{type(error).__name__}: {error}") from None
    return config


def parse_experiment(name: str, spec: Any, source: str, *, config_overrides: Mapping | None = None,
                     stop: Mapping | None = None) -> Experiment:
    """Turns one ``{run, env, stop, config}`` entry into an :class:`Experiment`.

    Args:
        name: The experiment's name (its key in the file).
        spec: The entry.
        source: The file, for error messages.
        config_overrides: Deep-merged into ``config`` (``--config``).
        stop: Replaces ``stop`` (``--stop``).

    Raises:
        UserError: For anything the file gets wrong, naming the key.
    """
    if not isinstance(spec, Mapping):
        raise UserError(source, name, "must be a mapping with run, env, stop and config; "
                        f"got {type(spec).__name__}")
    for key in spec:
        if key not in EXPERIMENT_KEYS:
            hint = _closest(str(key), EXPERIMENT_KEYS)
            raise UserError(source, f"{name}.{key}", f"unknown experiment key{hint} "
                            f"(known: {', '.join(EXPERIMENT_KEYS)})")
    config = algorithm_config(spec.get("run"), source, f"{name}.run")
    settings = spec.get("config") or {}
    if not isinstance(settings, Mapping):
        raise UserError(source, f"{name}.config", f"must be a mapping of settings; got {settings!r}")
    settings = deep_merge(settings, config_overrides or {})
    # The classic format allowed env at the top or inside config; the top wins.
    in_config = settings.pop("env", None)
    if "env" in spec:
        env = check_env(spec["env"], source, f"{name}.env")
    else:
        env = check_env(in_config, source, f"{name}.config.env")
    env_config = settings.pop("env_config", None) or {}
    options = settings.pop(SEPS_KEY, None)
    seps = None if options is None else seps_options(options, source, f"{name}.config.{SEPS_KEY}")
    apply_settings(config, settings, source, f"{name}.config")
    config.environment(env, env_config=dict(env_config))
    stop = dict(spec.get("stop") or {}) if stop is None else dict(stop)
    freq = spec.get("checkpoint_freq", 0)
    if not isinstance(freq, int) or isinstance(freq, bool) or freq < 0:
        raise UserError(source, f"{name}.checkpoint_freq", f"must be an integer >= 0; got {freq!r}")
    at_end = spec.get("checkpoint_at_end", True)
    if not isinstance(at_end, bool):
        raise UserError(source, f"{name}.checkpoint_at_end", f"must be true or false; got {at_end!r}")
    try:
        config.validate()
    except Exception as error:  # noqa: BLE001  (RLlib's own checks of the settings)
        raise UserError(source, f"{name}.config", f"{type(error).__name__}: {error}") from None
    return Experiment(name=str(name), source=source, config=config, seps=seps, stop=stop,
                      checkpoint_freq=freq, checkpoint_at_end=at_end)


def load_experiments(path: str | Path, *, config_overrides: Mapping | None = None,
                     stop: Mapping | None = None, stop_source: str | None = None) -> list[Experiment]:
    """Reads and validates every experiment of a classic RLlib YAML file.

    Importing this registers rllib-seps' environments (``bps_1``, ``crware_1``, ``lbf``, ...).

    Args:
        path: The YAML file.
        config_overrides: Deep-merged into every experiment's ``config`` (e.g. ``--config``).
        stop: Replaces every experiment's ``stop`` (e.g. ``--stop``).
        stop_source: Where ``stop`` came from (e.g. "--stop"), named in errors.

    Returns:
        The experiments in file order; nothing is trained and no pretraining runs yet.

    Raises:
        UserError: For invalid YAML or an unknown algorithm, environment, key or SePS option.
    """
    import rllib_seps.envs  # noqa: F401  (registers the paper's environments)

    data = read_yaml(path)
    experiments = [parse_experiment(name, spec, str(path), config_overrides=config_overrides, stop=stop)
                   for name, spec in data.items()]
    for experiment in experiments:
        experiment.stop_source = stop_source if stop is not None else None
    return experiments


def share(experiment: Experiment):
    """The experiment's config with its sharing strategy applied, and the pretraining result.

    Runs SePS pretraining for ``seps`` and ``adaps`` (on the driver; with ``rollout_tasks`` on
    the cluster). Plain experiments (no ``seps:``) come back unchanged, with None.

    Raises:
        UserError: For an environment that is not multi-agent or options the env rules out.
    """
    if experiment.seps is None:
        return experiment.config, None
    from rllib_seps.configure import check_algorithm, with_sharing

    name, source = experiment.name, experiment.source
    try:
        check_algorithm(experiment.config)
    except ValueError as error:
        raise UserError(source, f"{name}.run", str(error)) from None
    try:
        return with_sharing(experiment.config, experiment.seps)
    except TypeError as error:
        raise UserError(source, f"{name}.env", str(error)) from None
    except ValueError as error:
        raise UserError(source, f"{name}.config.{SEPS_KEY}", str(error)) from None


# ---------------------------------------------------------------- training


def parse_json(text: str | None, option: str) -> dict | None:
    """A JSON object given on the command line, or None.

    Raises:
        UserError: For invalid JSON or JSON that is not an object.
    """
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(option, None, f"invalid JSON: {error}") from None
    if not isinstance(value, dict):
        raise UserError(option, None, f"must be a JSON object; got {text!r}")
    return value


@contextlib.contextmanager
def ray_running(address: str | None, num_cpus: int | None) -> Iterator[None]:
    """Connects to a cluster (``--address`` or RAY_ADDRESS) or starts a local Ray instance, and
    shuts it down afterwards; a Ray instance that is already running is used and left running."""
    import ray

    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        try:
            ray.init(address=address)
        except ConnectionError as error:
            # Ray 2.60 sends its token only to a cluster it finds itself ("auto").
            hint = ("" if os.environ.get("RAY_AUTH_MODE") else "; if the cluster uses token "
                    "authentication (Ray 2.60's default), set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN "
                    "(the output of `ray get-auth-token` on the head node), or use --address auto "
                    "on the head node")
            raise UserError("--address", None, f"cannot connect to {address}: {error}{hint}") from None
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False)
    try:
        yield
    finally:
        ray.shutdown()


def _metric(result: Mapping, path: str, default: Any = None) -> Any:
    """``result["a"]["b"]`` for ``path="a/b"``, or a flattened ``result["a/b"]``."""
    if path in result:
        return result[path]
    value: Any = result
    for part in path.split("/"):
        if not isinstance(value, Mapping) or part not in value:
            return default
        value = value[part]
    return value


def progress_line(name: str, result: Mapping) -> str:
    """One line per training iteration: iteration, env steps, mean return, time."""
    steps = _metric(result, "env_runners/num_env_steps_sampled_lifetime",
                    _metric(result, "num_env_steps_sampled_lifetime", 0))
    ret = _metric(result, "env_runners/episode_return_mean")
    ret_text = "   (no episode finished yet)" if ret is None else f"{ret:11.2f}"
    return (f"[{name}] iter {result.get('training_iteration', 0):>4}  env steps {int(steps or 0):>9}  "
            f"episode return mean {ret_text}  time {result.get('time_total_s', 0.0):7.1f}s")


def _flatten(mapping: Mapping, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1}``, as Tune names result keys."""
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def checked_stopper(stop: Mapping):
    """A Tune stopper for ``{result key: value}`` (stop once ``result[key] >= value``) that, unlike
    Tune's own, stops at the first result that lacks a key and records it (Tune only warns and
    trains on without end)."""
    from ray import tune

    class CheckedStopper(tune.Stopper):
        def __init__(self) -> None:
            self.criteria = _flatten(stop)
            self.missing: list[str] = []
            self.result_keys: list[str] = []

        def __call__(self, trial_id, result) -> bool:
            flat = _flatten(result)
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
                        f"stop{_closest(key, stopper.result_keys)} (e.g. training_iteration, "
                        "env_runners/num_env_steps_sampled_lifetime, env_runners/episode_return_mean)")
    return result


def write_learning_curve(result, name: str) -> Path | None:
    """Writes ``learning_curve.png`` into the trial's directory; None if nothing to plot."""
    from rllib_seps.plots import LEARNING_CURVE_PNG, plot_learning_curve

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
        from rllib_seps.report import format_report, write_report

        print(format_report(pretraining), flush=True)
        files = write_report(pretraining, experiment_dir)
        print(f"SePS report: {files['json']} and {files['png']}", flush=True)
    print(f"Training {experiment.name} ({config.algo_class.__name__} on {config.env}), results in "
          f"{experiment_dir}", flush=True)
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


def train(args: argparse.Namespace) -> int:
    """``rllib train file <yaml>``."""
    experiments = load_experiments(args.file, config_overrides=parse_json(args.config, "--config"),
                                   stop=parse_json(args.stop, "--stop"), stop_source="--stop")
    storage = Path(args.storage_path).expanduser().resolve()
    status = 0
    with ray_running(args.address, args.num_cpus):
        for experiment in experiments:
            status = max(status, train_experiment(experiment, storage, args))
    return status


# ---------------------------------------------------------------- evaluation


def find_checkpoint(path: str | Path) -> Path:
    """``path`` if it is an algorithm checkpoint, else the newest checkpoint below it.

    Raises:
        UserError: If there is no checkpoint at or below ``path``.
    """
    path = Path(path).expanduser().resolve()
    if (path / CHECKPOINT_MARKER).is_file():
        return path
    # Only whole-algorithm checkpoints: components (learner, env runner) have markers too.
    found = [p.parent for p in (path.rglob(CHECKPOINT_MARKER) if path.is_dir() else [])
             if (p.parent / "algorithm_state.pkl").is_file()]
    found.sort(key=lambda p: (p.stat().st_mtime, str(p)))
    if not found:
        raise UserError(str(path), None, "no RLlib algorithm checkpoint here (a directory with "
                        f"{CHECKPOINT_MARKER}); pass a checkpoint_00000x directory or a trial directory")
    return found[-1]


def restore_for_evaluation(checkpoint: Path, seed: int | None):
    """The checkpoint's algorithm, rebuilt with one local EnvRunner and a local learner.

    The checkpoint's own config (modules, mapping, connectors) is kept; only where it runs and
    the seed change, so that evaluation needs no remote actors.
    """
    import pickle

    with open(checkpoint / CHECKPOINT_MARKER, "rb") as f:
        ctor = pickle.load(f)
    algo_class, stored = ctor["class"], ctor["ctor_args_and_kwargs"][0][0]
    # Under Tune the algorithm was built from the config's dict form.
    if isinstance(stored, dict):
        config = algo_class.get_default_config().update_from_dict(stored)
    else:
        config = stored.copy(copy_frozen=False)
    config.env_runners(num_env_runners=0, create_local_env_runner=True)
    config.learners(num_learners=0)
    config.evaluation(evaluation_interval=None, evaluation_num_env_runners=0)
    if seed is not None:
        config.debugging(seed=seed)
    return algo_class.from_checkpoint(str(checkpoint), config=config)


def returns_per_module(episodes) -> tuple[dict[str, list[float]], dict[str, set]]:
    """Per module: each episode's return summed over the agents mapped to it; and its agents."""
    returns: dict[str, list[float]] = {}
    agents: dict[str, set] = {}
    for episode in episodes:
        totals: dict[str, float] = {}
        for agent_id, agent_episode in episode.agent_episodes.items():
            module = episode.module_for(agent_id)
            totals[module] = totals.get(module, 0.0) + float(agent_episode.get_return())
            agents.setdefault(module, set()).add(agent_id)
        for module, total in totals.items():
            returns.setdefault(module, []).append(total)
    return returns, agents


def format_returns(returns: Mapping[str, list[float]], agents: Mapping[str, set]) -> str:
    """A table: module (cluster), its agents, mean and std of its return over episodes."""
    import numpy as np

    lines = [f"{'module':<20} {'agents':>6}  {'return mean':>12}  {'std':>9}"]
    for module in sorted(returns):
        values = np.asarray(returns[module])
        lines.append(f"{module:<20} {len(agents[module]):>6}  {values.mean():>12.2f}  "
                     f"{values.std():>9.2f}")
    total = np.sum([np.asarray(v) for v in returns.values()], axis=0) if returns else np.zeros(1)
    lines.append(f"{'total':<20} {sum(len(a) for a in agents.values()):>6}  {total.mean():>12.2f}  "
                 f"{total.std():>9.2f}")
    return "\n".join(lines)


def evaluate(args: argparse.Namespace) -> int:
    """``rllib evaluate <checkpoint>``."""
    import rllib_seps.envs  # noqa: F401  (the checkpoint's env is one of them, usually)

    checkpoint = find_checkpoint(args.checkpoint)
    with ray_running(args.address, args.num_cpus):
        algo = restore_for_evaluation(checkpoint, args.seed)
        try:
            episodes = algo.env_runner.sample(num_episodes=args.episodes, explore=args.explore,
                                              force_reset=True)
        finally:
            env = algo.config.env
            algo.stop()
    returns, agents = returns_per_module(episodes)
    mode = "sampled" if args.explore else "greedy"
    print(f"Evaluated {checkpoint} on {env}: {len(episodes)} episodes, {mode} actions, seed {args.seed}")
    print(format_returns(returns, agents), flush=True)
    return 0


# ---------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rllib", description="Train RLlib (with SePS parameter sharing) from classic YAML "
        "experiment files, and evaluate checkpoints.")
    commands = parser.add_subparsers(dest="command", required=True)

    train_parser = commands.add_parser("train", help="train from an experiment file")
    train_from = train_parser.add_subparsers(dest="source", required=True)
    file_parser = train_from.add_parser("file", help="rllib train file <yaml>")
    file_parser.add_argument("file", help="YAML file: {name: {run, env, stop, config}}")
    file_parser.add_argument("--stop", help='stop criteria as JSON, replacing the file\'s '
                             '(e.g. \'{"training_iteration": 2}\')')
    file_parser.add_argument("--config", help="settings as JSON, deep-merged into the file's "
                             "config (e.g. '{\"lr\": 0.001, \"seps\": {\"seed\": 1}}')")
    file_parser.add_argument("--checkpoint-freq", type=int, default=None,
                             help="checkpoint every N iterations (default: the file's "
                             "checkpoint_freq, else only at the end)")
    file_parser.add_argument("--storage-path", default=DEFAULT_STORAGE,
                             help="where Tune writes <experiment>/ (default: ./results)")
    file_parser.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2),
                             help="Tune's own console output (default 0: one line per iteration)")
    _add_ray_options(file_parser)
    file_parser.set_defaults(handler=train)

    eval_parser = commands.add_parser("evaluate", help="roll out a trained checkpoint")
    eval_parser.add_argument("checkpoint", help="checkpoint directory, or a trial or experiment "
                             "directory (its newest checkpoint is used)")
    eval_parser.add_argument("--episodes", type=int, default=10, help="episodes to roll out (default 10)")
    eval_parser.add_argument("--seed", type=int, default=0, help="seed of the environment (default 0)")
    eval_parser.add_argument("--explore", action="store_true",
                             help="sample actions from the policy instead of taking the greedy ones")
    _add_ray_options(eval_parser)
    eval_parser.set_defaults(handler=evaluate)
    return parser


def _add_ray_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=None,
                        help="address of a running Ray cluster (default: RAY_ADDRESS, else start "
                        "a local instance)")
    parser.add_argument("--num-cpus", type=int, default=None,
                        help="CPUs of a local Ray instance (default: all)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rllib`` and ``rllib-seps`` console scripts."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "episodes", 1) < 1:
        parser.error("--episodes must be >= 1")
    try:
        return args.handler(args)
    except UserError as error:
        print(f"rllib: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
