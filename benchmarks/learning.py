"""Learning curves of the five sharing strategies on the paper's tasks, as in Table 2 of the SePS
paper (max evaluation return, mean +- std over seeds), resumable over several sittings.

How to run:

    python benchmarks/learning.py --quick                      # minutes: BPS(1), fups and seps, tiny budget
    python benchmarks/learning.py --tasks bps_1 --seeds 0 1 2 --env-steps 200000
    python benchmarks/learning.py --report-only                # plots and table from the CSV alone

Every run trains the task's tuned config (``tuned_configs/<task>-<strategy>-ppo.yaml``) with its seed
set for RLlib and for SePS, for ``--env-steps`` env steps. Every ``--eval-every`` training iterations
(and after the last) RLlib's own evaluation rolls out ``--eval-episodes`` episodes with greedy actions
(``explore=False``) on a separate EnvRunner; the best of these returns is the run's "max evaluation
return", the name of Table 2's measure. A finished run appends its rows (task, strategy, seed, env steps,
evaluation and training return, wall time, pretraining env steps) to the CSV and is skipped on
the next call with the same budget, so a long benchmark can be completed over several sittings;
an interrupted run starts again. Calls on one CSV may run at once (a run keeps about one core busy:
one call per strategy uses more), each appending its finished runs under a file lock. ``--config``
deep-merges settings into every run's config (e.g. the execution path); it is part of a run's key,
so runs with other settings are never mixed up. Settings are relative to the tuned file, so each row
also keeps ``config_hash``, a digest of the values the run trained with: where a tuned file changes
under committed runs, every call stops with the runs to relabel (give them the settings they ran
with, e.g. the file's earlier ``minibatch_size``) instead of reporting them as runs of the new file.

Outputs (next to the CSV unless ``--out`` says otherwise): ``learning_<task>_<budget>k.png``
(mean and std over seeds of the evaluation and the training return, one line per strategy and
settings; settings that change the environment, ``env_config``, get a plot of their own) and
``learning_table.md`` (Table 2's shape; the sampling policy's max and final training return;
the pretraining cost next to the RL budget, and the wall time per run). The plot's second panel and
the max training return show the sampling policy, the returns that the paper's released code
(``uoe-agents/seps``, ``ac.py``) logs: it has no greedy evaluation.
"""

from __future__ import annotations

import argparse
import copy
import csv
import fcntl
import hashlib
import json
import os
import shlex
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
TUNED = ROOT / "tuned_configs"
TASKS = ["bps_1", "bps_h_1", "crware_1", "lbf"]
STRATEGIES = ["nops", "fups", "fups_id", "seps", "adaps"]
COLUMNS = ["task", "strategy", "seed", "budget", "settings", "iteration", "env_steps", "eval_return",
           "train_return", "wall_s", "pretraining_env_steps", "k", "config_hash"]
STEPS_KEY = "num_env_steps_sampled_lifetime"


def run_key(task: str, strategy: str, seed: int, budget: int, settings: str) -> tuple:
    return task, strategy, str(seed), str(budget), settings


def finished_runs(path: Path) -> set[tuple]:
    """Keys of the runs already in the CSV."""
    if not path.exists():
        return set()
    with path.open() as f:
        return {run_key(r["task"], r["strategy"], r["seed"], r["budget"], r["settings"]) for r in csv.DictReader(f)}


def append_rows(path: Path, rows: list[dict], fields: Sequence[str]) -> None:
    """Appends a finished run's rows to a CSV of runs, with a header if the file is new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # calls in parallel processes may share the CSV
        writer = csv.DictWriter(f, fieldnames=fields)
        if os.fstat(f.fileno()).st_size == 0:
            writer.writeheader()
        writer.writerows(rows)


def config_hash(task: str, strategy: str, settings: str) -> str:
    """12 hex digits of a SHA-256 of what a run trains with: the ``config`` of its tuned file with
    ``settings`` merged in (the seeds, which the CSV keeps apart, and the file's comments left out)."""
    from ray.tune.utils import deep_update

    (spec,) = yaml.safe_load((TUNED / f"{task}-{strategy}-ppo.yaml").read_text()).values()
    config = deep_update(copy.deepcopy(spec["config"]), json.loads(settings) if settings else {},
                         new_keys_allowed=True)
    config.pop("seed", None)
    config.get("seps", {}).pop("seed", None)
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def check_csv(path: Path) -> None:
    """Fails where the CSV's rows would be read or written wrongly: columns of another version of
    this script, or runs whose tuned file's values changed since (their settings, relative to the
    file, would then claim values the runs did not train with)."""
    if not path.exists():
        return
    with path.open() as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != COLUMNS:
            raise ValueError(f"{path} has the columns {reader.fieldnames}, this script writes {COLUMNS}: "
                             "an earlier version wrote it; pass another --csv or move it aside.")
        expected: dict[tuple, str] = {}
        stale: dict[tuple, int] = defaultdict(int)
        for r in reader:
            key = (r["task"], r["strategy"], r["settings"])
            if key not in expected:
                expected[key] = config_hash(*key)
            if r["config_hash"] != expected[key]:
                stale[key] += 1
    if stale:
        runs = "\n".join(f"  tuned_configs/{task}-{strategy}-ppo.yaml with settings {settings or '{}'}: {n} rows"
                         for (task, strategy, settings), n in sorted(stale.items()))
        raise ValueError(
            f"Runs in {path} trained with other values than their tuned file and settings give now (the file "
            f"changed since):\n{runs}\nSet their `settings` to the values they ran with (the file's earlier "
            "values, in its git history); their config_hash then matches again.")


def train_one(task: str, strategy: str, seed: int, budget: int, settings: dict, *, eval_every: int,
              eval_episodes: int) -> list[dict]:
    """Trains one tuned config for ``budget`` env steps; returns one row per training
    iteration from the first evaluation on."""
    from ray.tune.utils import deep_update

    from rllib_seps.cli.experiment_file import load_experiments, share

    overrides = deep_update({"seed": seed, "seps": {"seed": seed, "progress": False}}, settings,
                            new_keys_allowed=True)
    (experiment,) = load_experiments(TUNED / f"{task}-{strategy}-ppo.yaml", config_overrides=overrides)
    start = time.perf_counter()
    config, pretraining = share(experiment)
    # RLlib's own evaluation, every eval_every iterations, on its own EnvRunner, greedy actions.
    config.evaluation(evaluation_interval=eval_every, evaluation_duration=eval_episodes,
                      evaluation_duration_unit="episodes", evaluation_num_env_runners=0,
                      evaluation_config={"explore": False})
    # Every agent acts at every random step: the most transitions of an agent are the env steps.
    pretraining_steps = 0 if pretraining is None else int(max(pretraining.transitions.values()))
    k = "" if pretraining is None else pretraining.clustering.k
    algo = config.build_algo()
    rows, iteration, steps = [], 0, 0
    try:
        while steps < budget:
            result = algo.train()
            iteration += 1
            steps = int(result.get(STEPS_KEY) or result["env_runners"].get(STEPS_KEY, steps))
            # RLlib evaluates in every eval_every-th iteration and repeats that result in the next
            # one's: read it only where it is new.
            evaluation = result.get("evaluation") if iteration % eval_every == 0 else None
            if evaluation is None and steps >= budget:  # the last point of every curve
                evaluation = algo.evaluate()
            if evaluation is None and not rows:  # every curve starts at its first evaluation
                continue
            eval_return = evaluation["env_runners"]["episode_return_mean"] if evaluation else float("nan")
            train_return = result["env_runners"].get("episode_return_mean", float("nan"))
            rows.append({"iteration": iteration, "env_steps": steps, "eval_return": eval_return,
                         "train_return": train_return, "wall_s": round(time.perf_counter() - start, 1),
                         "pretraining_env_steps": pretraining_steps, "k": k})
            print(f"  {task} {strategy} seed {seed}: iter {iteration:4d}  env steps {steps:8d}  "
                  f"eval return {eval_return:9.2f}  train return {train_return:9.2f}  "
                  f"{rows[-1]['wall_s']:7.0f}s", flush=True)
    finally:
        algo.stop()
    return rows


def load_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def runs_by_seed(rows: list[dict]) -> dict[tuple, dict[str, list[dict]]]:
    """(task, settings, budget, strategy) -> seed -> that run's rows, in order."""
    out: dict = defaultdict(lambda: defaultdict(list))
    for r in rows:
        out[(r["task"], r["settings"], r["budget"], r["strategy"])][r["seed"]].append(r)
    return out


def curves(rows: list[dict], column: str = "eval_return") -> dict[tuple, dict[str, dict[str, list[tuple[int, float]]]]]:
    """(task, settings, budget) -> strategy -> seed -> [(env steps, ``column``)], at the rows that
    hold it (``eval_return`` is NaN in the iterations without an evaluation)."""
    out: dict = defaultdict(dict)
    for (task, settings, budget, strategy), seeds in runs_by_seed(rows).items():
        out[(task, settings, budget)][strategy] = {
            seed: [(int(r["env_steps"]), float(r[column])) for r in run if not np.isnan(float(r[column]))]
            for seed, run in seeds.items()}
    return out


PANELS = {"eval_return": "evaluation return (greedy)", "train_return": "training return (sampling policy)"}


LINESTYLES = ["-", "--", ":", "-."]  # a strategy's runs with the tuned file, then with other settings


def plot_task(lines_by_column: dict[str, dict], path: Path, title: str) -> Path:
    """Side by side, the greedy evaluation return and the sampling policy's training return
    against env steps: mean and std over seeds, a line per strategy and settings
    (``lines_by_column[column][(strategy, settings)]``: seed -> points)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(12, 4.2), sharey=True)
    for ax, (column, label) in zip(axes, PANELS.items()):
        lines = lines_by_column[column]
        for strategy, settings in sorted(lines, key=lambda line: (STRATEGIES.index(line[0]), line[1] != "", line[1])):
            seeds = lines[(strategy, settings)]
            length = min(len(points) for points in seeds.values())
            steps = np.array([p[0] for p in next(iter(seeds.values()))[:length]])
            returns = np.array([[p[1] for p in points[:length]] for points in seeds.values()])
            mean, std = returns.mean(0), returns.std(0)
            colour = f"C{STRATEGIES.index(strategy)}"  # one colour per strategy on every plot
            variants = sorted({other for s, other in lines if s == strategy}, key=lambda other: (other != "", other))
            ax.plot(steps, mean, color=colour, linestyle=LINESTYLES[variants.index(settings)],
                    label=f"{strategy}{' ' + settings if settings else ''} "
                          f"({len(seeds)} seed{'s' if len(seeds) > 1 else ''})")
            ax.fill_between(steps, mean - std, mean + std, color=colour, alpha=0.2)
        ax.set_xlabel("env steps")
        ax.set_ylabel(f"{label}, sum over agents")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def split_settings(settings: str) -> tuple[str, str]:
    """``settings`` (a JSON object) as those that change the environment (``env_config``) and the
    others, each a JSON object, empty where there are none."""
    parsed = json.loads(settings) if settings else {}
    env = {k: v for k, v in parsed.items() if k == "env_config"}
    others = {k: v for k, v in parsed.items() if k != "env_config"}
    return tuple(json.dumps(part, sort_keys=True) if part else "" for part in (env, others))


def environment(task: str, settings: str) -> str:
    """The task, and the ``env_config`` of ``settings`` where they change the environment."""
    env_settings = split_settings(settings)[0]
    return task + (f" {json.dumps(json.loads(env_settings)['env_config'], sort_keys=True)}" if env_settings else "")


def reach_thresholds(train: dict[tuple, dict]) -> dict[str, float]:
    """Per environment (:func:`environment`), 90% of the way from its lowest to its highest
    training return over all runs (``train``: :func:`curves` of ``train_return``): a level every
    strategy is measured against, whatever the sign and scale of the returns."""
    returns: dict[str, list[float]] = defaultdict(list)
    for (task, settings, _), strategies in train.items():
        returns[environment(task, settings)] += [
            value for seeds in strategies.values() for points in seeds.values() for _, value in points]
    return {env: min(v) + 0.9 * (max(v) - min(v)) for env, v in returns.items()}


def _reach(seeds: dict[str, list[tuple[int, float]]], threshold: float) -> str:
    """Fewest-most over seeds of the env steps at which the training return first reaches threshold."""
    if not seeds:
        return ""
    firsts = [next((steps for steps, value in points if value >= threshold), None) for points in seeds.values()]
    reached = [f for f in firsts if f is not None]
    missed = len(firsts) - len(reached)
    return ", ".join(filter(None, [_range(reached), f"never in {missed}" if missed else ""]))


def _range(values: list[int]) -> str:
    """``fewest-most`` (one number where they agree); empty for none."""
    if not values:
        return ""
    return f"{min(values):,}" + (f"-{max(values):,}" if max(values) > min(values) else "")


def _mean_std(values: list[float], n: bool = False) -> str:
    if not values:
        return ""
    return f"{np.mean(values):.2f} +- {np.std(values):.2f}" + (f" (n={len(values)})" if n else "")


def table(rows: list[dict]) -> str:
    """Table 2's shape: per task, max evaluation return (greedy; mean +- std over seeds) of each
    strategy; then the max training return of the sampling policy (the measure the paper's released
    code logs), its final training return, and the budget, the pretraining cost against it and the
    wall time per run."""
    header = ["| task | settings | env steps | " + " | ".join(STRATEGIES) + " |",
              "| --- | --- | --- | " + " | ".join("---" for _ in STRATEGIES) + " |"]
    runs, evaluation, train = runs_by_seed(rows), curves(rows), curves(rows, "train_return")

    def best(by_task: dict, key: tuple, strategy: str) -> list[float]:
        """Each seed's best value over its run."""
        return [max(r for _, r in points) for points in by_task[key].get(strategy, {}).values()]

    thresholds = reach_thresholds(train)
    best_lines, best_train_lines, final_lines, reach_lines, costs = [], [], [], [], []
    for task, settings, budget in sorted(evaluation, key=lambda key: (key[0], key[1], int(key[2]))):
        key = (task, settings, budget)
        best_cells, best_train_cells, final_cells, reach_cells = [], [], [], []
        for strategy in STRATEGIES:
            best_cells.append(_mean_std(best(evaluation, key, strategy), n=True))
            best_train_cells.append(_mean_std(best(train, key, strategy)))
            reach_cells.append(_reach(train[key].get(strategy, {}), thresholds[environment(task, settings)]))
            seeds = runs.get((task, settings, budget, strategy), {})
            final_cells.append(_mean_std([np.nanmean([float(r["train_return"]) for r in run[-5:]])
                                          for run in seeds.values()]))
            if seeds:
                last = [run[-1] for run in seeds.values()]  # the last row of each seed holds its totals
                pretraining = [int(r["pretraining_env_steps"] or 0) for r in last]
                costs.append(f"| {task} | {settings or 'tuned'} | {strategy} | {int(budget):,} | {_range(pretraining)} | "
                             f"{max(pretraining) / int(budget):.3f} | "
                             f"{np.mean([float(r['wall_s']) for r in last]) / 60:.1f} |")
        prefix = f"| {task} | {settings or 'tuned'} | {int(budget):,} | "
        best_lines.append(prefix + " | ".join(best_cells) + " |")
        best_train_lines.append(prefix + " | ".join(best_train_cells) + " |")
        final_lines.append(prefix + " | ".join(final_cells) + " |")
        reach_lines.append(prefix + " | ".join(reach_cells) + " |")
    return "\n".join([
        *header, *best_lines, "",
        "Max training return (the sampling policy: the best of the iterations' "
        "`episode_return_mean`; the paper's released code logs only this), mean +- std over seeds:", "",
        *header, *best_train_lines, "",
        "Training return (the sampling policy, not greedy) over the last 5 iterations of each run, "
        "mean +- std over seeds:", "", *header, *final_lines, "",
        "Env steps until the training return first reaches 90% of the way from the environment's lowest to its "
        "highest training return in this file (" + ", ".join(f"{t}: {v:.2f}" for t, v in sorted(thresholds.items()))
        + "), fewest-most over seeds (never: a seed that did not):", "", *header, *reach_lines, "",
        "Pretraining (random-policy env steps, fewest-most over seeds) against the RL budget "
        "(ratio: the most), and wall time per run:", "",
        "| task | settings | strategy | RL env steps | pretraining env steps | ratio | minutes per run |",
        "| --- | --- | --- | --- | --- | --- | --- |", *costs])


def report(csv_path: Path, out: Path) -> None:
    rows = load_rows(csv_path)
    if not rows:
        print(f"No runs in {csv_path} yet.")
        return
    out.mkdir(parents=True, exist_ok=True)
    # A plot per environment and budget, on which each strategy's runs with other settings are lines
    # beside its tuned runs.
    plots: dict[tuple, dict[str, dict]] = defaultdict(lambda: {column: {} for column in PANELS})
    for column in PANELS:
        for (task, settings, budget), strategies in curves(rows, column).items():
            env_settings, other_settings = split_settings(settings)
            for strategy, seeds in strategies.items():
                plots[(task, env_settings, budget)][column][(strategy, other_settings)] = seeds
    for (task, env_settings, budget), lines in sorted(plots.items()):
        suffix = "" if not env_settings else "_" + "".join(c if c.isalnum() else "_" for c in env_settings)[:40]
        path = plot_task(lines, out / f"learning_{task}_{int(budget) // 1000}k{suffix}.png",
                         f"{task}, {int(budget):,} env steps" + (f", {env_settings}" if env_settings else ""))
        print(f"Plot: {path}")
    text = table(rows)
    (out / "learning_table.md").write_text(text + "\n")
    print(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=TASKS)
    parser.add_argument("--strategies", nargs="+", default=STRATEGIES, choices=STRATEGIES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--env-steps", type=int, default=200_000, help="RL budget per run")
    parser.add_argument("--eval-every", type=int, default=5, help="evaluate every N training iterations")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--config", default="{}", help="JSON settings deep-merged into every run's config")
    parser.add_argument("--csv", type=Path, default=None,
                        help="runs file (default docs/results/learning.csv; with --quick results/learning_quick.csv)")
    parser.add_argument("--out", type=Path, default=None, help="folder of plots and table (default: the CSV's)")
    parser.add_argument("--quick", action="store_true", help="BPS(1), fups and seps, 1 seed, 6k env steps")
    parser.add_argument("--report-only", action="store_true", help="only write plots and table")
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.strategies, args.seeds = ["bps_1"], ["fups", "seps"], [0]
        args.env_steps, args.eval_every, args.eval_episodes = 6000, 1, 2
        args.config = json.dumps({"seps": {"transitions_per_agent": 500}, **json.loads(args.config)})
    if args.csv is None:
        args.csv = ROOT / ("results/learning_quick.csv" if args.quick else "docs/results/learning.csv")
    out = args.out or args.csv.parent
    settings = json.loads(args.config)
    settings_key = json.dumps(settings, sort_keys=True) if settings else ""
    print(f"Reproduce: python benchmarks/learning.py {shlex.join(sys.argv[1:])}", flush=True)
    try:
        check_csv(args.csv)
    except ValueError as error:
        sys.exit(f"error: {error}")

    if not args.report_only:
        import ray

        import rllib_seps.envs  # noqa: F401  (registers the tasks)

        done = finished_runs(args.csv)
        todo = [(t, s, seed) for t in args.tasks for seed in args.seeds for s in args.strategies
                if run_key(t, s, seed, args.env_steps, settings_key) not in done]
        print(f"{len(todo)} run(s) to do, {len(args.tasks) * len(args.seeds) * len(args.strategies) - len(todo)} "
              f"already in {args.csv}", flush=True)
        ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
        try:
            for task, strategy, seed in todo:
                trained_with = config_hash(task, strategy, settings_key)
                rows = train_one(task, strategy, seed, args.env_steps, settings,
                                 eval_every=args.eval_every, eval_episodes=args.eval_episodes)
                append_rows(args.csv, [{"task": task, "strategy": strategy, "seed": seed, "budget": args.env_steps,
                                        "settings": settings_key, "config_hash": trained_with, **row}
                                       for row in rows], COLUMNS)
        finally:
            ray.shutdown()
    report(args.csv, out)
    print(f"Reproduce: python benchmarks/learning.py {shlex.join(sys.argv[1:])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
