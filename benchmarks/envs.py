"""Env steps per second of our LBF and C-RWARE, against the stock code they build on.

Both compute their observations (LBF also its valid actions) from arrays instead of the packages'
per-agent Python, with the same values (``tests/test_envs.py`` compares them at every step). This
measures what that buys, in random-action steps (resets included), alternating rounds on one
process; a figure is the median over rounds:

- LBF (the paper's, 12 agents): lbforaging's stock methods against ours, on the same env;
- C-RWARE(1) and C-RWARE(3): the bare ``rware`` warehouse that C-RWARE wraps (same map and
  robots, its own observations) against the whole C-RWARE step (colours, rotated actions, shelf
  colours in view and permuted observations included).

How to run:
    .venv/bin/python benchmarks/envs.py
    .venv/bin/python benchmarks/envs.py --steps 2000 --rounds 3
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from typing import Callable

import numpy as np
from lbforaging.foraging.environment import ForagingEnv
from rware.warehouse import Warehouse

from rllib_seps.envs.crware import CRWARE_ENVIRONMENTS, ColouredWarehouse
from rllib_seps.envs.lbf import LevelBasedForaging


def parallel_env_stepper(env) -> Callable[[list[int]], None]:
    """One env step of a PettingZoo ParallelEnv, reset where the episode ended."""
    env.reset(seed=0)

    def step(actions: list[int]) -> None:
        if not env.agents:
            env.reset()
        env.step(dict(zip(env.possible_agents, actions)))

    return step


def warehouse_stepper(env: ColouredWarehouse) -> Callable[[list[int]], None]:
    """One step of the bare rware warehouse inside ``env``, with rware's own observations."""
    warehouse = env.warehouse
    warehouse._make_obs = Warehouse._make_obs.__get__(warehouse)  # the stock method back
    warehouse.reset(seed=0)

    def step(actions: list[int]) -> None:
        if warehouse.step(actions)[2]:
            warehouse.reset()

    return step


def steps_per_second(step: Callable[[list[int]], None], actions: np.ndarray) -> float:
    start = time.perf_counter()
    for row in actions.tolist():
        step(row)
    return len(actions) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000, help="env steps per measure")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    stock_lbf, ours_lbf = LevelBasedForaging(), LevelBasedForaging()
    # lbforaging's stock methods, called on an instance of ours.
    stock_lbf.base._gen_valid_moves = ForagingEnv._gen_valid_moves.__get__(stock_lbf.base)
    stock_lbf.base._make_gym_obs = ForagingEnv._make_gym_obs.__get__(stock_lbf.base)
    cases = {"LBF, 12 agents": ("lbforaging", parallel_env_stepper(stock_lbf), parallel_env_stepper(ours_lbf), 6,
                                len(ours_lbf.possible_agents))}
    for name in ("crware_1", "crware_3"):
        ours = CRWARE_ENVIRONMENTS[name]()
        robots = len(ours.possible_agents)
        cases[f"{name}, {robots} robots"] = ("rware", warehouse_stepper(CRWARE_ENVIRONMENTS[name]()),
                                             parallel_env_stepper(ours), ours.n_actions, robots)
    print(f"{args.steps} random env steps per measure, median of {args.rounds} rounds:")
    for name, (stock_name, stock, ours, n_actions, n_agents) in cases.items():
        actions = rng.integers(n_actions, size=(args.steps, n_agents))
        rates: dict[str, list[float]] = {stock_name: [], "ours": []}
        for _ in range(args.rounds):
            for who, step in ((stock_name, stock), ("ours", ours)):
                rates[who].append(steps_per_second(step, actions))
        median = {who: statistics.median(r) for who, r in rates.items()}
        print(f"  {name:20s} {stock_name:10s} {median[stock_name]:7.0f}  ours {median['ours']:7.0f} env steps/s"
              f"  ours / {stock_name}: {median['ours'] / median[stock_name]:.2f}")
    print(f"Reproduce: python {shlex.join(sys.argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
