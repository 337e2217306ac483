"""SePS against a running Ray cluster: pretraining rollouts as Ray tasks, one EnvRunner per CPU.

``ray.init(address=...)`` connects this driver to the cluster; ``rollout_tasks`` spreads SePS's
random-policy rollouts over it, and ``num_env_runners`` puts RLlib's EnvRunners on its CPUs. The
learner runs in this driver (add ``config.learners(num_learners=...)`` for remote learners).
Every node needs rllib-seps installed in the same Python environment (``pip install -e .``), or
pass ``runtime_env={"py_modules": [rllib_seps]}`` to ``ray.init``.

How to run:

    ray start --head --num-cpus 4 --include-dashboard false   # prints the cluster's address
    python examples/cluster.py --address auto                   # or the printed host:port,
    ray stop                                                    # or set RAY_ADDRESS

    python examples/cluster.py --address local                  # no cluster: start one here

The same with the command line: ``rllib train file tuned_configs/bps_2-seps-ppo.yaml --address
auto --config '{"num_env_runners": 3, "seps": {"rollout_tasks": 4}}'``.

Ray 2.60 turns on token authentication for clusters it starts and keeps the token in
``~/.ray/auth_token``. ``--address auto`` on the head node sends it by itself; for an explicit
``host:port`` (or RAY_ADDRESS) set RAY_AUTH_MODE=token as well, and on another machine
RAY_AUTH_TOKEN to the output of ``ray get-auth-token`` on the head node. (Starting the cluster
with RAY_AUTH_MODE=disabled turns this off; on a trusted network only.)

Results to expect: the script prints the cluster's CPUs, the SePS clusters of BPS(2) (30 agents,
3 clusters of 10, found from rollouts collected by ``--rollout-tasks`` tasks), then one line per
iteration with the return summed over the 30 agents (about -1900 to -2200 for random agents,
rising over the iterations) and the seconds each took, which fall as EnvRunners are added. It
ends with the path of a checkpoint that ``rllib evaluate`` can roll out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import ray
from ray.rllib.algorithms.ppo import PPOConfig

import rllib_seps.envs  # noqa: F401  (registers the paper's environments)
from rllib_seps import with_sharing


def connect(address: str) -> int:
    """Connects to the cluster at ``address`` ("local" starts one here); returns its CPUs."""
    if address == "local":
        ray.init(num_cpus=2, include_dashboard=False)
    else:
        ray.init(address=address)
    return int(ray.cluster_resources().get("CPU", 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="auto",
                        help='"auto" (the cluster on this machine or RAY_ADDRESS), host:port, or "local"')
    parser.add_argument("--env", default="bps_2")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--env-runners", type=int, default=None, help="default: the cluster's CPUs - 1")
    parser.add_argument("--rollout-tasks", type=int, default=None, help="default: the cluster's CPUs")
    parser.add_argument("--checkpoint-dir", default="results/cluster_example")
    args = parser.parse_args()

    cpus = connect(args.address)
    env_runners = max(0, cpus - 1) if args.env_runners is None else args.env_runners
    rollout_tasks = cpus if args.rollout_tasks is None else args.rollout_tasks
    print(f"Connected: {cpus} CPUs; {env_runners} EnvRunners, {rollout_tasks} rollout tasks")
    try:
        config = (
            PPOConfig()
            .environment(args.env)
            .env_runners(num_env_runners=env_runners)
            .training(gamma=0.99, lambda_=0.95, lr=3e-4, entropy_coeff=0.01, train_batch_size=2000,
                      minibatch_size=500, num_epochs=5, vf_clip_param=10_000)
            .rl_module(model_config={"fcnet_hiddens": [64, 64]})
        )
        config, _ = with_sharing(config, {"strategy": "seps", "rollout_tasks": rollout_tasks,
                                          "progress": False})  # prints the report
        algo = config.build_algo()
        for i in range(args.iterations):
            start = time.time()
            runners = algo.train().get("env_runners", {})
            total = runners.get("episode_return_mean", float("nan"))
            print(f"iteration {i + 1:>3}: episode return {total:8.1f}  ({time.time() - start:.1f}s)",
                  flush=True)
        checkpoint = algo.save_to_path(str(Path(args.checkpoint_dir).resolve()))
        print(f"Checkpoint: {checkpoint}   (rllib evaluate {checkpoint})")
        algo.stop()
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
