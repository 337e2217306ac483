"""SePS pretraining on a public panel of environments: does automatic K find the truth, with how
much data, and how fast?

How to run (the package defaults; every task's truth is known):

    python benchmarks/pretraining.py --tasks panel --seeds 5    # every env below
    python benchmarks/pretraining.py --tasks paper --seeds 5    # the paper's 11 tasks
    python benchmarks/pretraining.py --tasks bps_1000 --seeds 1 # 1000 agents, 4 colours of 250
    python benchmarks/pretraining.py --tasks lbf simple_spread --seeds 2 --set max_updates=5000
    python benchmarks/pretraining.py --plot docs/results/pretraining_panel_2026-12-08.txt

The panel (``--tasks panel``):

- alike agents, truth K=1: mpe2 ``simple_spread_v3`` (discrete and Box actions), butterfly
  ``pistonball_v6`` (grey 16x16 images, Box actions; needs ``pymunk``, see below), sisl
  ``pursuit_v5``, BPS with one colour, LBF with all levels equal, C-RWARE with one colour, and for
  N=2 mpe2 ``simple_reference_v3`` and BPS with two agents of one colour;
- different agents, truth their types: the paper's 11 tasks (BPS(1)-(4), BPS-h(1)-(3),
  C-RWARE(1)-(3), LBF), mpe2 ``simple_world_comm_v3``, ``simple_tag_v3``, ``simple_crypto_v3``,
  butterfly knights-archers-zombies (``kaz_vector``), and for N=2 mpe2 ``simple_push_v3``,
  ``simple_speaker_listener_v4`` and BPS with two colours. Types of PettingZoo agents are their
  name prefixes (``adversary_0`` -> ``adversary``).

PettingZoo environments are wrapped as users would: ``rllib_seps.envs.SortedParallelEnv`` (images
shrunk with SuperSuit). Pistonball needs ``pymunk``, which the library does not: install it with
the test extra (``pip install -e .[test]``) or PettingZoo's ``butterfly`` extra; without it the
task is skipped with a note.

Ray runs locally (this machine's CPUs, as it does under an RLlib algorithm), so that rollouts that
would take more than a few seconds run as parallel Ray tasks; the data is the same either way.

Printed per task and seed: agents, true K, K found, ARI against the truth (for K=1 truths: 1 if
K=1 else 0), whether the decision was confident, transitions per agent and the rounds that
collected them, encoder updates (last round), wall time of rollouts, encoder and clustering and
in total, the CPU time of this process (pretraining runs on one thread, so on a busy machine
this is close to the wall time it would take on a quiet one, less any rollouts that ran as Ray
tasks), and the process's peak memory; then a summary line per task and overall. The first line
names the versions, the CPU and its kernels, which set the fit's rounding.

``--plot`` draws saved outputs of this script (the printed rows, as many files as the panel took
commands) into one figure beside the first file: every run's wall time, right or wrong, against
the time it should take (:func:`target_seconds`).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import ray
import sklearn
import torch
import yaml
from sklearn.metrics import adjusted_rand_score

from rllib_seps.envs import ENVIRONMENTS
from rllib_seps.envs.adapter import SortedParallelEnv
from rllib_seps.envs.bps import BlindParticleSpread
from rllib_seps.envs.crware import ColouredWarehouse
from rllib_seps.envs.lbf import LevelBasedForaging
from rllib_seps.options import SePSOptions
from rllib_seps.pretraining.pipeline import run_pretraining

PAPER_TASKS = ["bps_1", "bps_2", "bps_3", "bps_4", "bps_h_1", "bps_h_2", "bps_h_3",
               "crware_1", "crware_2", "crware_3", "lbf"]


def _mpe(name: str, **kwargs) -> Callable:
    def make():
        import importlib

        return importlib.import_module(f"mpe2.{name}").parallel_env(max_cycles=25, **kwargs)

    return make


def _pistonball():
    import supersuit
    from pettingzoo.butterfly import pistonball_v6

    env = pistonball_v6.parallel_env(n_pistons=20, max_cycles=125)
    return supersuit.resize_v1(supersuit.color_reduction_v0(env, mode="full"), 16, 16)


def _pursuit():
    from pettingzoo.sisl import pursuit_v5

    return pursuit_v5.parallel_env(max_cycles=100)


# name -> (ParallelEnv factory, truth): None for alike agents (K=1), "prefix" for PettingZoo name
# prefixes, "env" for the env's own agent_types.
HOMOGENEOUS: dict[str, tuple[Callable, str | None]] = {
    "simple_spread": (_mpe("simple_spread_v3", N=3), None),
    "simple_spread_box": (_mpe("simple_spread_v3", N=3, continuous_actions=True), None),
    "pistonball": (_pistonball, None),
    "pursuit": (_pursuit, None),
    "bps_one_colour": (lambda: BlindParticleSpread((8,)), None),
    "lbf_equal_levels": (lambda: LevelBasedForaging((12,), (2,)), None),
    "crware_one_colour": (lambda: ColouredWarehouse("tiny", 4, n_colours=1), None),
    "simple_reference": (_mpe("simple_reference_v3"), None),  # N=2
    "bps_two_alike": (lambda: BlindParticleSpread((2,)), None),  # N=2
}
HETEROGENEOUS: dict[str, tuple[Callable, str | None]] = {
    **{name: (ENVIRONMENTS[name], "env") for name in PAPER_TASKS},
    "simple_world_comm": (ENVIRONMENTS["simple_world_comm"], "prefix"),
    "kaz_vector": (ENVIRONMENTS["kaz_vector"], "prefix"),
    "simple_tag": (_mpe("simple_tag_v3"), "prefix"),
    "simple_crypto": (_mpe("simple_crypto_v3"), "prefix"),
    "simple_push": (_mpe("simple_push_v3"), "prefix"),  # N=2
    "simple_speaker_listener": (_mpe("simple_speaker_listener_v4"), "prefix"),  # N=2
    "bps_two_different": (lambda: BlindParticleSpread((1, 1)), "env"),  # N=2
}
TASKS = {**HOMOGENEOUS, **HETEROGENEOUS,
         "bps_1000": (lambda: BlindParticleSpread((250, 250, 250, 250)), "env")}


def creator(task: str) -> Callable[[dict], SortedParallelEnv]:
    make = TASKS[task][0]
    return lambda env_config: SortedParallelEnv(make())


def truth(task: str) -> list[int]:
    """The true type of every agent, in sorted agent order."""
    env = creator(task)({})
    agents, kind = env.possible_agents, TASKS[task][1]
    if kind is None:
        return [0] * len(agents)
    if kind == "env":
        return [env.agent_types[a] for a in agents]
    prefixes = [a.rsplit("_", 1)[0] for a in agents]
    return [sorted(set(prefixes)).index(p) for p in prefixes]


def peak_memory_gib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def cpu_name() -> str:
    """The CPU's name and model numbers: MKL dispatches its kernels, and so their rounding, on the
    CPU itself, so hosts that report the same capability (AVX512) may still round differently."""
    try:
        first = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:  # not Linux
        return platform.processor() or platform.machine()
    info = {key.strip(): value.strip()
            for key, value in (line.split(":", 1) for line in first.splitlines() if ":" in line)}
    return f"{info.get('model name', '?')} (family {info.get('cpu family', '?')}, model {info.get('model', '?')})"


def target_seconds(task: str, n_agents: int) -> float | None:
    """The most wall time a task's pretraining should take on a quiet machine: 15 s with up to 8
    agents, 60 s for the 200 agents of BPS-h(3), 82 s for LBF (half of its 150-165 s with the
    paper's fixed budget); None where no target is set."""
    if n_agents <= 8:
        return 15.0
    return {"bps_h_3": 60.0, "lbf": 82.0}.get(task)


def read_rows(paths: list[Path]) -> list[dict]:
    """The per-run rows of saved outputs of this script (header, summary and other lines skipped)."""
    rows = []
    for path in paths:
        for line in path.read_text().splitlines():
            fields = line.split()
            if len(fields) == 16 and fields[0] in TASKS and fields[1].isdigit():
                rows.append({"task": fields[0], "seed": int(fields[1]), "n": int(fields[2]),
                             "ari": float(fields[5]), "confident": fields[6] == "yes",
                             "wall": float(fields[13])})
    return rows


def plot_rows(rows: list[dict], path: Path, title: str) -> Path:
    """One line per task (alike agents first, then by the number of agents): every seed's wall time
    (filled: right and confident; hollow: right, not confident; red cross: wrong) and the task's
    target (grey bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agents = {r["task"]: r["n"] for r in rows}
    tasks = sorted(agents, key=lambda t: (t not in HOMOGENEOUS, agents[t], t))
    fig, ax = plt.subplots(figsize=(9, 0.3 * len(tasks) + 1.5))
    for y, task in enumerate(tasks):
        runs = [r for r in rows if r["task"] == task]
        target = target_seconds(task, agents[task])
        if target is not None:
            ax.plot([target, target], [y - 0.4, y + 0.4], color="grey", linewidth=3, alpha=0.6)
        for r in runs:
            if r["ari"] < 1.0:
                ax.plot(r["wall"], y, "x", color="C3", markersize=7)
            else:
                ax.plot(r["wall"], y, "o", color="C0", markersize=5, alpha=0.8,
                        markerfacecolor="C0" if r["confident"] else "none")
    ax.set_yticks(range(len(tasks)),
                  [f"{t} (N={agents[t]}{', alike' if t in HOMOGENEOUS else ''})" for t in tasks], fontsize=8)
    ax.axhline(sum(t in HOMOGENEOUS for t in tasks) - 0.5, color="black", linewidth=0.5)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xticks([2, 5, 10, 15, 20, 50, 100, 200], ["2", "5", "10", "15", "20", "50", "100", "200"])
    ax.set_xlabel("pretraining wall time per seed, s (grey: target)")
    ax.grid(axis="x", alpha=0.3)
    right = sum(r["ari"] == 1.0 for r in rows)
    ax.set_title(f"{title}: right in {right} of {len(rows)} (filled: confident; red x: wrong)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _run(tasks: list[str], seeds: int, overrides: dict, failures: list[str], per_task: dict) -> None:
    """Pretrains every task for every seed; prints a row each and collects failures and timings."""
    for task in tasks:
        try:
            types = truth(task)
        except ImportError as error:  # pistonball without pymunk
            print(f"{task:<24} skipped: {error}")
            continue
        true_k = len(set(types))
        for seed in range(seeds):
            options = SePSOptions(**{"seed": seed, "progress": False, **overrides})
            start, cpu = time.perf_counter(), time.process_time()
            result = run_pretraining(creator(task), {}, options)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            k = result.clustering.k
            ari = adjusted_rand_score(types, result.labels) if true_k > 1 else float(k == 1)
            t = result.timings
            rounds = "->".join(str(r.transitions_per_agent) for r in result.rounds)
            print(f"{task:<24} {seed:>4} {len(types):>4} {true_k:>6} {k:>3} {ari:>5.2f} "
                  f"{'yes' if result.confident else 'no':>5} {min(result.transitions.values()):>11} "
                  f"{rounds:>22} {result.embeddings.updates:>7} {t['rollouts']:>9.1f} {t['encoder']:>9.1f} "
                  f"{t['clustering']:>9.1f} {wall:>7.1f} {cpu:>6.1f} {peak_memory_gib():>8.2f}", flush=True)
            per_task.setdefault(task, []).append((ari, wall, cpu))
            if ari < 1.0:
                failures.append(f"{task} seed {seed}: K={k} (true {true_k}), ARI {ari:.2f}; "
                                f"{result.clustering.reason}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["panel"],
                        help=f"task names, 'panel' (all but bps_1000) or 'paper'; known: {sorted(TASKS)}")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per task")
    parser.add_argument("--set", nargs="*", default=[], metavar="OPTION=VALUE",
                        help="SePS options other than the defaults (YAML values), e.g. max_updates=5000")
    parser.add_argument("--plot", nargs="+", type=Path, metavar="OUTPUT",
                        help="draw saved outputs of this script into a PNG beside the first, and stop")
    args = parser.parse_args()
    if args.plot:
        path = plot_rows(read_rows(args.plot), args.plot[0].with_suffix(".png"), args.plot[0].stem)
        print(f"Wrote {path}")
        return 0
    groups = {"panel": [*HOMOGENEOUS, *HETEROGENEOUS], "paper": PAPER_TASKS}
    tasks = [t for task in args.tasks for t in groups.get(task, [task])]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        parser.error(f"unknown tasks {unknown}; known: {sorted(TASKS)}")
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    warnings.simplefilter("ignore")

    # Decisions near the edge move with the rounding of the fit (docs/pretraining.md): name what sets it.
    print(f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()} kernels), numpy {np.__version__}, "
          f"scikit-learn {sklearn.__version__}; CPU {cpu_name()}")
    print(f"{'task':<24} {'seed':>4} {'N':>4} {'true K':>6} {'K':>3} {'ARI':>5} {'conf':>5} "
          f"{'trans/agent':>11} {'rounds':>22} {'updates':>7} {'rollout s':>9} {'encoder s':>9} "
          f"{'cluster s':>9} {'total s':>7} {'cpu s':>6} {'peak GiB':>8}")
    failures, per_task = [], {}
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        _run(tasks, args.seeds, overrides, failures, per_task)
    finally:
        ray.shutdown()
    runs = sum(len(v) for v in per_task.values())
    print()
    for task, rows in per_task.items():
        print(f"{task:<24} right in {sum(a == 1.0 for a, _, _ in rows)} of {len(rows)}; slowest "
              f"{max(w for _, w, _ in rows):.1f} s wall, {max(c for _, _, c in rows):.1f} s cpu")
    print(f"\nSummary: right (K=1 for alike agents, ARI 1.0 otherwise) in {runs - len(failures)} of {runs} "
          f"runs over {len(per_task)} tasks; peak memory {peak_memory_gib():.2f} GiB.")
    for failure in failures:
        print("  wrong:", failure)
    print("Reproduce: python benchmarks/pretraining.py --tasks " + " ".join(args.tasks)
          + f" --seeds {args.seeds}" + (" --set " + " ".join(args.set) if args.set else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
