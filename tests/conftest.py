"""Shared fixtures: a small Ray instance, and quick SePS options."""

from __future__ import annotations

import numpy as np
import pytest
import ray
import torch
from ray.rllib.core.columns import Columns

import rllib_seps.envs  # noqa: F401  (registers the paper's environments with RLlib)


# A budget that makes one iteration of a tuned config take seconds (for --config and overrides).
TINY = {"train_batch_size": 200, "minibatch_size": 100, "num_epochs": 1, "num_env_runners": 0,
        "seps": {"transitions_per_agent": 200, "updates": 300, "progress": False}}


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


def batch_of(plan, agents: list[str], seed: int = 0) -> dict:
    """A Columns.OBS batch of one sampled observation per entry of `agents`, as the padding
    connector emits them (each with its agent's mask and cluster), for a one-module plan."""
    from rllib_seps.rllib.connectors import PadObservations

    connector, rng, rows = PadObservations(plan=plan), np.random.default_rng(seed), []
    for agent in agents:
        space = plan.agents[agent].observation_space
        space.seed(int(rng.integers(1 << 30)))
        rows.append(connector.preprocess({agent: space.sample()}, None)[agent])
    if isinstance(rows[0], dict):  # image modules
        return {Columns.OBS: {key: torch.as_tensor(np.stack([row[key] for row in rows])) for key in rows[0]}}
    return {Columns.OBS: torch.as_tensor(np.stack(rows))}
