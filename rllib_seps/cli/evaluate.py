"""``rllib evaluate``: rolls out a trained checkpoint and prints returns per module (cluster)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Mapping

from rllib_seps.cli.errors import UserError
from rllib_seps.cli.session import ray_running


def find_checkpoint(path: str | Path) -> Path:
    """``path`` if it is a checkpoint, else the newest checkpoint of the Tune experiment or trial
    directory at ``path``.

    Raises:
        UserError: If there is no checkpoint there.
    """
    from ray import tune
    from ray.rllib.algorithms.algorithm import Algorithm

    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise UserError(str(path), None, "no such directory; pass a checkpoint, trial or experiment "
                        "directory (e.g. results/<experiment name>)")
    if (path / Algorithm.CLASS_AND_CTOR_ARGS_FILE_NAME).is_file():
        return path
    checkpoints = []
    # An experiment directory (every trial's), or a trial directory inside one (its own).
    for experiment, trial_path in ((path, None), (path.parent, path)):
        if tune.Tuner.can_restore(str(experiment)):
            analysis = tune.ExperimentAnalysis(str(experiment))
            checkpoints = [analysis.get_last_checkpoint(trial) for trial in analysis.trials
                           if trial_path is None or Path(trial.path) == trial_path]
            break
    found = [Path(checkpoint.path) for checkpoint in checkpoints if checkpoint is not None]
    if not found:
        raise UserError(str(path), None, "no checkpoint here; pass a checkpoint_00000x directory, or "
                        "the trial or experiment directory of a run that saved one (--checkpoint-freq)")
    return max(found, key=lambda p: (p.stat().st_mtime, str(p)))


def restore_for_evaluation(checkpoint: Path, *, episodes: int, explore: bool, seed: int):
    """The checkpoint's algorithm, rebuilt to evaluate ``episodes`` episodes in this process.

    The checkpoint's own config (modules, mapping, connectors) is kept; only where it runs (one
    local EnvRunner, a local learner), the seed, exploration and the evaluation length change,
    so that evaluation needs no remote actors.
    """
    from rllib_seps.cli.experiment_file import check_env
    from rllib_seps.rllib.internals import checkpoint_config

    try:
        algo_class, config = checkpoint_config(str(checkpoint))
    except ValueError as error:
        raise UserError(str(checkpoint), None, str(error)) from None
    if isinstance(config.env, str):  # a file's "module:attribute" is registered again
        check_env(config.env, str(checkpoint), "env")
    config.env_runners(num_env_runners=0, create_local_env_runner=True, explore=explore)
    config.learners(num_learners=0)
    # Evaluated on the local EnvRunner: RLlib's evaluate() uses it when no evaluation
    # EnvRunners are configured; every episode counts in the means.
    config.evaluation(evaluation_interval=None, evaluation_num_env_runners=0,
                      evaluation_duration=episodes, evaluation_duration_unit="episodes")
    config.reporting(metrics_num_episodes_for_smoothing=episodes)
    config.debugging(seed=seed)
    return algo_class.from_checkpoint(str(checkpoint), config=config)


def agents_per_module(agents: list, mapping) -> dict[str, int]:
    """How many of ``agents`` the mapping function sends to each module."""
    counts: dict[str, int] = {}
    for agent in agents:
        module = mapping(agent, None)
        counts[module] = counts.get(module, 0) + 1
    return counts


def format_returns(runners: Mapping[str, Any], agents: Mapping[str, int]) -> str:
    """A table from RLlib's evaluation metrics: each module (cluster), its agents and its mean
    episode return (summed over its agents); then the total with its spread over episodes."""
    modules = runners.get("module_episode_returns_mean", {})
    lines = [f"{'module':<20} {'agents':>6}  {'return mean':>12}"]
    for module in sorted(modules):
        lines.append(f"{module:<20} {agents.get(module, 0):>6}  {modules[module]:>12.2f}")
    lines.append(f"{'total':<20} {sum(agents.values()):>6}  {runners['episode_return_mean']:>12.2f}  "
                 f"(min {runners['episode_return_min']:.2f}, max {runners['episode_return_max']:.2f} "
                 f"over {int(runners['num_episodes'])} episodes)")
    return "\n".join(lines)


def evaluate(args: argparse.Namespace) -> int:
    """``rllib evaluate <checkpoint>``."""
    import rllib_seps.envs  # noqa: F401  (the checkpoint's env is one of them, usually)
    from rllib_seps.rllib.fast.execution import plan_mapping

    checkpoint = find_checkpoint(args.checkpoint)
    with ray_running(args.address, args.num_cpus):
        algo = restore_for_evaluation(checkpoint, episodes=args.episodes, explore=args.explore,
                                      seed=args.seed)
        try:
            runners = algo.evaluate()["env_runners"]
            env, mapping = algo.config.env, plan_mapping(algo.config)
        finally:
            algo.stop()
    agents = agents_per_module(sorted(runners.get("agent_episode_returns_mean", {})), mapping)
    mode = "sampled" if args.explore else "greedy"
    print(f"Evaluated {checkpoint} on {env}: {int(runners['num_episodes'])} episodes, {mode} "
          f"actions, seed {args.seed}")
    print(format_returns(runners, agents), flush=True)
    return 0
