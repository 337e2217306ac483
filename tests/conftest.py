"""Shared fixtures: a small Ray instance, and quick SePS options."""

from __future__ import annotations

import pytest
import ray

import rllib_seps.envs  # noqa: F401  (registers the paper's environments with RLlib)


@pytest.fixture(scope="module")
def ray_session():
    """A 2-CPU local Ray instance for the tests of one module, shut down afterwards."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONWARNINGS": "ignore"}})
    yield
    ray.shutdown()


def quick_ppo_config(env: str, **env_config):
    """A PPO config on ``env`` with tiny batches, so that an iteration takes seconds."""
    from ray.rllib.algorithms.ppo import PPOConfig

    return (
        PPOConfig()
        .environment(env, env_config=env_config)
        .env_runners(num_env_runners=0)
        .training(train_batch_size=400, minibatch_size=200, num_epochs=1)
    )
