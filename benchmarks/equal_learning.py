"""Do fast execution and the module path learn alike? fups and seps on BPS(1), tuned config, 3 seeds.

How to run:
    .venv/bin/python benchmarks/equal_learning.py              # resumes; hours on a busy 2-core machine
    .venv/bin/python benchmarks/equal_learning.py --report     # only print the table of the CSV
    .venv/bin/python benchmarks/equal_learning.py --env-steps 20000 --seeds 0 --csv /tmp/quick.csv  # a quick look

Every run trains the tuned config (``tuned_configs/bps_1-<strategy>-ppo.yaml``: PPO, 2000 env steps
per iteration) with ``seps.execution`` set to ``modules`` or ``fast`` and the seed set in both
``config.seed`` and ``seps.seed`` (so both paths of one seed find the same clusters), for
``--env-steps`` env steps. The EnvRunner runs in this process (``--num-env-runners 0``; the files
say 1): the same learning, without RLlib's sample timeouts that a remote EnvRunner misses on a busy
machine (an iteration then trains on nothing and only costs time). Each finished run appends its
learning curve (one row per iteration: env steps sampled, training episode return mean, wall time)
to the CSV; runs already in the CSV are skipped, so the benchmark can be completed over several
sittings.

The table gives, at a few points of the budget, the mean and std over seeds of the training
return (RLlib's mean over the last 100 episodes) per strategy and path, the difference of the
means, and whether it lies within the seeds' spread (the larger of the two stds). A second table
pairs the runs of one seed (same environment seeds; for ``fups`` also the same initial weights,
see :class:`rllib_seps.rllib.modules.SharedActorCriticModule`): the mean return over the second
half of the budget on each path and their difference.
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from learning import append_rows  # benchmarks/ is this script's folder, first on sys.path

FIELDS = ("strategy", "execution", "seed", "iteration", "env_steps", "episode_return_mean", "wall_s", "clusters")
DEFAULT_CSV = Path(__file__).parent / "results" / "equal_learning.csv"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+", default=["fups", "seps"])
    parser.add_argument("--executions", nargs="+", default=["fast", "modules"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--env-steps", type=int, default=60_000, help="env steps per run")
    parser.add_argument("--num-env-runners", type=int, default=0, help="remote EnvRunners (0: in this process)")
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--report", action="store_true", help="print the table of the CSV and exit")
    return parser.parse_args(argv)


def done_runs(path: Path, env_steps: int) -> set[tuple[str, str, int]]:
    """Runs in the CSV that reached ``env_steps``."""
    if not path.exists():
        return set()
    reached: dict[tuple[str, str, int], float] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            key = (row["strategy"], row["execution"], int(row["seed"]))
            reached[key] = max(reached.get(key, 0.0), float(row["env_steps"]))
    return {key for key, steps in reached.items() if steps >= env_steps}


def train_run(strategy: str, execution: str, seed: int, env_steps: int, num_env_runners: int) -> list[dict]:
    """One run of the tuned config; its learning curve as CSV rows."""
    from rllib_seps.cli.experiment_file import load_experiments, share

    overrides = {"seed": seed, "num_env_runners": num_env_runners,
                 "seps": {"execution": execution, "seed": seed, "progress": False}}
    (experiment,) = load_experiments(f"tuned_configs/bps_1-{strategy}-ppo.yaml", config_overrides=overrides)
    config, result = share(experiment)
    clusters = "" if result is None else "-".join(str(int(c)) for c in result.labels)
    algo = config.build()
    rows, start, iteration, steps = [], time.time(), 0, 0
    try:
        while steps < env_steps:
            out = algo.train()
            iteration += 1
            runners = out.get("env_runners", {})
            steps = int(runners.get("num_env_steps_sampled_lifetime", steps))
            rows.append({"strategy": strategy, "execution": execution, "seed": seed, "iteration": iteration,
                         "env_steps": steps, "episode_return_mean": runners.get("episode_return_mean", float("nan")),
                         "wall_s": round(time.time() - start, 1), "clusters": clusters})
            print(f"  {strategy}/{execution}/seed {seed}: iteration {iteration}, {steps} env steps, return "
                  f"{rows[-1]['episode_return_mean']:.1f}, {rows[-1]['wall_s']:.0f} s", flush=True)
    finally:
        algo.stop()
    return rows


def curve_at(rows: list[dict], steps: float) -> float:
    """The return of the first iteration that reached ``steps`` env steps and reported one (an
    iteration whose EnvRunner missed RLlib's sample timeout on a busy machine reports none)."""
    for row in rows:
        value = float(row["episode_return_mean"])
        if float(row["env_steps"]) >= steps and not np.isnan(value):
            return value
    return float("nan")


def late_mean(rows: list[dict], env_steps: int) -> float:
    """Mean training return over the iterations in the second half of the budget (nan if none)."""
    values = [float(r["episode_return_mean"]) for r in rows if float(r["env_steps"]) > env_steps / 2]
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def report(path: Path, env_steps: int) -> str:
    """The table: mean +- std over seeds at a few points, per strategy and path."""
    with path.open() as f:
        rows = list(csv.DictReader(f))
    runs: dict[tuple[str, str, str], list[dict]] = {}
    for row in rows:
        runs.setdefault((row["strategy"], row["execution"], row["seed"]), []).append(row)
    points = [env_steps * k // 5 for k in range(1, 6)]
    lines = ["| strategy | env steps | fast (mean +- std, n) | modules (mean +- std, n) | difference | within spread |",
             "| --- | --- | --- | --- | --- | --- |"]
    for strategy in sorted({k[0] for k in runs}):
        for point in points:
            cells, stats = [], {}
            for execution in ("fast", "modules"):
                values = [curve_at(r, point) for (s, e, _), r in runs.items() if s == strategy and e == execution]
                values = [v for v in values if not np.isnan(v)]
                stats[execution] = values
                cells.append(f"{np.mean(values):.1f} +- {np.std(values):.1f} ({len(values)})" if values else "-")
            if stats["fast"] and stats["modules"]:
                diff = np.mean(stats["fast"]) - np.mean(stats["modules"])
                spread = max(np.std(stats["fast"]), np.std(stats["modules"]))
                verdict = [f"{diff:+.1f}", "yes" if abs(diff) <= spread else "no"]
            else:
                verdict = ["-", "-"]
            lines.append(f"| {strategy} | {point} | {cells[0]} | {cells[1]} | {verdict[0]} | {verdict[1]} |")
    lines += ["", "| strategy | seed | fast, mean return over the 2nd half | modules | fast - modules |",
              "| --- | --- | --- | --- | --- |"]
    for strategy in sorted({k[0] for k in runs}):
        diffs = []
        for seed in sorted({k[2] for k in runs if k[0] == strategy}, key=int):
            late = {e: late_mean(runs.get((strategy, e, seed), []), env_steps) for e in ("fast", "modules")}
            if not any(np.isnan(v) for v in late.values()):
                diffs.append(late["fast"] - late["modules"])
            lines.append(f"| {strategy} | {seed} | {late['fast']:.1f} | {late['modules']:.1f} | "
                         f"{late['fast'] - late['modules']:+.1f} |")
        if diffs:
            lines.append(f"| {strategy} | mean +- std | | | {np.mean(diffs):+.1f} +- {np.std(diffs):.1f} |")
    clusters = sorted({(r["strategy"], r["execution"], r["seed"], r["clusters"]) for r in rows if r["clusters"]})
    lines.append("")
    lines.append("seps clusters per run (agents in sorted order): " +
                 "; ".join(f"{e}/seed {s}: {c}" for _, e, s, c in clusters))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", "benchmarks/equal_learning.py", *sys.argv[1:]])
    if not args.report:
        import ray
        import torch

        torch.set_num_threads(1)
        finished = done_runs(args.csv, args.env_steps)
        todo = [(s, e, seed) for seed in args.seeds for s in args.strategies for e in args.executions
                if (s, e, seed) not in finished]
        print(f"{len(todo)} runs to do, {len(finished)} already in {args.csv}", flush=True)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            for strategy, execution, seed in todo:
                append_rows(args.csv, train_run(strategy, execution, seed, args.env_steps, args.num_env_runners), FIELDS)
        finally:
            ray.shutdown()
    print(report(args.csv, args.env_steps))
    print(f"\nReproduce: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
