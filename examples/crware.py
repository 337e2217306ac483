"""Coloured warehouse (C-RWARE): load a tuned YAML file from Python, share, train with PPO.

The same route as ``rllib train file``, without Tune: :func:`rllib_seps.cli.load_experiments`
validates the file and builds the RLlib config, :func:`rllib_seps.cli.share` applies the sharing
strategy (running SePS pretraining), and the result is a plain ``AlgorithmConfig``.

C-RWARE robots of the two colours execute rotated action indices (colour 1 must choose 2 to go
forward) and see permuted observations, so one module shared by all (FuPS) has to serve two
incompatible action semantics, while SePS gives each colour its own module.

How to run:

    python examples/crware.py                           # crware_1 (4 robots), SePS, 5 iterations
    python examples/crware.py --strategy fups --iterations 20
    python examples/crware.py --file tuned_configs/crware_1-nops-ppo.yaml

Results to expect: SePS pretraining prints 2 clusters of 2 robots for crware_1 (one per colour).
Rewards are sparse (+1 per delivery of a shelf of the robot's own colour in 500-step episodes):
a few iterations mostly score 0-1 deliveries per episode. The paper reports about 7 for SePS
on C-RWARE(1) after far longer training (``rllib train file tuned_configs/crware_1-seps-ppo.yaml``
runs 2M env steps). Each iteration (4000 env steps, 8 episodes) takes tens of seconds on 2 cores.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import ray

from rllib_seps.cli.experiment_file import load_experiments, share
from rllib_seps.options import STRATEGIES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", default=None, help="a tuned_configs/crware_*.yaml file "
                        "(default: tuned_configs/crware_1-<strategy>-ppo.yaml)")
    parser.add_argument("--strategy", default="seps", choices=STRATEGIES)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()

    tuned = Path(__file__).resolve().parents[1] / "tuned_configs"
    path = args.file or tuned / f"crware_1-{args.strategy}-ppo.yaml"
    (experiment,) = load_experiments(path)
    ray.init(num_cpus=args.num_cpus, include_dashboard=False)
    try:
        config, _ = share(experiment)  # prints the report
        print(f"{experiment.name}: modules {sorted(config.policies)}")
        algo = config.build_algo()
        for i in range(args.iterations):
            runners = algo.train().get("env_runners", {})
            steps = int(runners.get("num_env_steps_sampled_lifetime", 0))
            deliveries = runners.get("episode_return_mean", float("nan"))
            print(f"iteration {i + 1:>3}: env steps {steps:>7}  deliveries per episode (all robots) "
                  f"{deliveries:5.2f}", flush=True)
        algo.stop()
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
