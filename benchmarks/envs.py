"""Env steps per second of the LBF environment, with lbforaging's stock code and with ours.

``rllib_seps.envs.lbf`` computes valid actions and observations from arrays instead of lbforaging's
per-player Python (the same values: ``tests/test_envs.py`` compares them at every step). This
measures what that buys: random-action steps of the 12-agent paper LBF (resets included), the
stock methods against ours on the same env, in alternating rounds on one process; a figure is the
median over rounds.

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

import numpy as np
from lbforaging.foraging.environment import ForagingEnv

from rllib_seps.envs.lbf import LevelBasedForaging


def steps_per_second(env: LevelBasedForaging, actions: np.ndarray) -> float:
    env.reset(seed=0)
    start = time.perf_counter()
    for row in actions.tolist():
        if not env.agents:
            env.reset()
        env.step(dict(zip(env.possible_agents, row)))
    return len(actions) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10000, help="env steps per measure")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    ours, stock = LevelBasedForaging(), LevelBasedForaging()
    # The stock methods, called on an instance of ours.
    stock.base._gen_valid_moves = ForagingEnv._gen_valid_moves.__get__(stock.base)
    stock.base._make_gym_obs = ForagingEnv._make_gym_obs.__get__(stock.base)
    actions = np.random.default_rng(0).integers(6, size=(args.steps, len(ours.possible_agents)))
    rates: dict[str, list[float]] = {"stock": [], "ours": []}
    for _ in range(args.rounds):
        for name, env in (("stock", stock), ("ours", ours)):
            rates[name].append(steps_per_second(env, actions))
    median = {name: statistics.median(r) for name, r in rates.items()}
    print(f"LBF, 12 agents, {args.steps} random env steps per measure, median of {args.rounds} rounds:")
    for name, rate in median.items():
        print(f"  {name:6s} {rate:8.0f} env steps/s")
    print(f"  ours / stock: {median['ours'] / median['stock']:.2f}")
    print(f"Reproduce: python {shlex.join(sys.argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
