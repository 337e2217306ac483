"""Quickstart: add one callback to an existing RLlib PPO config and train SePS on BPS(1).

How to run:

    python examples/quickstart.py               # 10 iterations
    python examples/quickstart.py --iterations 50

Results to expect: pretraining prints 3 clusters of 5 agents each (one per hidden colour), in
about 20 s on 2 cores; then the summed episode return (about -1100 for random agents on
50-step episodes) rises over the iterations. The report (JSON and a PNG of the agent
embeddings) lands in ./results/quickstart.
"""

from __future__ import annotations

import argparse

import ray
from ray.rllib.algorithms.ppo import PPOConfig

import rllib_seps.envs  # noqa: F401  (registers "bps_1" and the other paper environments)
from rllib_seps import SePSCallback


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    # An existing multi-agent PPO config: one module shared by all agents ...
    config = (
        PPOConfig()
        .environment("bps_1")
        .env_runners(num_env_runners=1)
        .training(lr=3e-4, train_batch_size=4000, minibatch_size=500, num_epochs=5)
        .multi_agent(policies={"shared"}, policy_mapping_fn=lambda agent_id, *args, **kwargs: "shared")
        # ... plus the one SePS callback, which replaces it with one module per cluster.
        .callbacks(SePSCallback.with_options(seed=args.seed, report_dir="results/quickstart"))
        .debugging(seed=args.seed)
    )

    ray.init(num_cpus=2, include_dashboard=False)
    algo = config.build_algo()
    for i in range(args.iterations):
        result = algo.train()
        returns = result["env_runners"].get("episode_return_mean", float("nan"))
        # The clusters' modules (on fast execution, groups of one module, "default_policy").
        modules = sorted(m for m in result["learners"] if m not in ("__all_modules__", "default_policy"))
        print(f"iteration {i + 1:>3}: episode return {returns:9.1f}   modules trained: {modules}",
              flush=True)
    algo.stop()
    ray.shutdown()


if __name__ == "__main__":
    main()
