"""``rllib evaluate``: rolls out a trained checkpoint and prints returns per module (cluster)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Mapping

from rllib_seps.cli.errors import UserError
from rllib_seps.cli.session import ray_running

CHECKPOINT_MARKER = "class_and_ctor_args.pkl"


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


def _agent_returns(episodes) -> list[tuple[object, str, object, float]]:
    """(episode, module, agent, return) of every agent of every episode: of RLlib's
    MultiAgentEpisodes, or of the per-agent episodes of fast execution (which name the module
    whose group serves the agent, and the environment episode they belong to)."""
    rows = []
    for episode in episodes:
        if hasattr(episode, "agent_episodes"):
            rows += [(episode.id_, episode.module_for(agent), agent, float(e.get_return()))
                     for agent, e in episode.agent_episodes.items()]
        else:
            rows.append((episode.env_episode, episode.group, episode.agent, float(episode.get_return())))
    return rows


def returns_per_module(episodes) -> tuple[dict[str, list[float]], dict[str, set]]:
    """Per module: each episode's return summed over the agents mapped to it; and its agents."""
    totals: dict[tuple, float] = {}
    agents: dict[str, set] = {}
    for episode, module, agent, value in _agent_returns(episodes):
        totals[episode, module] = totals.get((episode, module), 0.0) + value
        agents.setdefault(module, set()).add(agent)
    returns: dict[str, list[float]] = {}
    for (_, module), total in totals.items():
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
    n_episodes = len({row[0] for row in _agent_returns(episodes)})
    print(f"Evaluated {checkpoint} on {env}: {n_episodes} episodes, {mode} actions, seed {args.seed}")
    print(format_returns(returns, agents), flush=True)
    return 0
