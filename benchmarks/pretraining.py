"""SePS pretraining on the paper's tasks: time of each stage, data used, and whether the clusters
recover the true agent types (adjusted Rand index against the environments' ``agent_types``).

How to run (defaults: the core tasks, 5 seeds each):

    python benchmarks/pretraining.py
    python benchmarks/pretraining.py --tasks bps_h_1 crware_1 lbf --seeds 5

Each task runs with the SePS options of its tuned config (``tuned_configs/<task>-seps-ppo.yaml``,
e.g. more random transitions for sparse-reward tasks) where one exists, else the defaults.

Targets: ARI 1.0 for every seed, and under 60 s end to end for the 200-agent BPS on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import yaml

from sklearn.metrics import adjusted_rand_score

from rllib_seps.envs import ENVIRONMENTS, make_env
from rllib_seps.envs.adapter import rllib_creator
from rllib_seps.options import SePSOptions
from rllib_seps.pretraining.pipeline import run_pretraining

CORE_TASKS = ["bps_1", "bps_2", "bps_3", "bps_4", "bps_200"]
PAPER_TASKS = ["bps_h_1", "bps_h_2", "bps_h_3", "crware_1", "crware_2", "crware_3", "lbf"]


TUNED = Path(__file__).resolve().parent.parent / "tuned_configs"


def tuned_options(task: str) -> dict:
    """The pretraining options of the task's tuned SePS config, if it has one."""
    path = TUNED / f"{task}-seps-ppo.yaml"
    if not path.exists():
        return {}
    (experiment,) = yaml.safe_load(path.read_text()).values()
    options = dict(experiment["config"].get("seps", {}))
    for key in ("strategy", "seed", "progress", "report_dir"):
        options.pop(key, None)
    return options


def true_types(task: str) -> list[int]:
    types = make_env(task).agent_types
    return [types[a] for a in sorted(types)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=CORE_TASKS,
                        help=f"registered env names; 'paper' adds {PAPER_TASKS}")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per task")
    args = parser.parse_args()
    tasks = [t for task in args.tasks for t in (PAPER_TASKS if task == "paper" else [task])]
    warnings.simplefilter("ignore")

    print(f"{'task':<10} {'seed':>4} {'agents':>6} {'K':>3} {'ARI':>5} {'transitions':>11} "
          f"{'rollouts s':>10} {'encoder s':>9} {'cluster s':>9} {'total s':>7}")
    failures, worst = [], {}
    for task in tasks:
        truth = true_types(task)
        options = tuned_options(task)
        if options:
            print(f"{task}: options from its tuned config: {options}")
        for seed in range(args.seeds):
            result = run_pretraining(rllib_creator(ENVIRONMENTS[task]), {},
                                     SePSOptions(seed=seed, progress=False, **options))
            ari = adjusted_rand_score(truth, result.labels)
            t = result.timings
            print(f"{task:<10} {seed:>4} {len(truth):>6} {result.clustering.k:>3} {ari:>5.2f} "
                  f"{sum(result.transitions.values()):>11} {t['rollouts']:>10.1f} "
                  f"{t['encoder']:>9.1f} {t['clustering']:>9.1f} {t['total']:>7.1f}", flush=True)
            worst[task] = max(worst.get(task, 0.0), t["total"])
            if ari < 1.0:
                failures.append(f"{task} seed {seed}: ARI {ari:.2f}")
    print(f"\nARI 1.0 in {sum(args.seeds for _ in tasks) - len(failures)} of "
          f"{args.seeds * len(tasks)} runs. Slowest run per task (s): "
          + ", ".join(f"{k} {v:.1f}" for k, v in worst.items()))
    for failure in failures:
        print("  not recovered:", failure)
    print("Reproduce: python benchmarks/pretraining.py --tasks " + " ".join(args.tasks)
          + f" --seeds {args.seeds}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
