"""Shared fixtures: a small Ray instance, quick configs, a small env with two agent types, and the
benchmark scripts as modules."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from gymnasium.spaces import Box, Discrete
from ray.rllib.core.columns import Columns
from ray.rllib.env.multi_agent_env import MultiAgentEnv

import rllib_seps.envs  # noqa: F401  (registers the paper's environments with RLlib)


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` as a module (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# A budget that makes one iteration of a tuned config take seconds (for --config and overrides).
TINY = {"train_batch_size": 200, "minibatch_size": 100, "num_epochs": 1, "num_env_runners": 0,
        "seps": {"transitions_per_agent": 200, "updates": 300, "progress": False}}


@pytest.fixture(scope="module")
def ray_session():
    """A 2-CPU local Ray instance for the tests of one module, shut down afterwards."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
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


class TwoTypeEnv(MultiAgentEnv):
    """Four agents of two types whose observation and action spaces differ (a small env we wrote;
    tests of envs we did not write use PettingZoo's).

    Scouts (``scout_0``, ``scout_1``) see 5 numbers and pick one of 4 actions; carriers
    (``carrier_0``, ``carrier_1``) see 3 and pick one of 2. Each agent is rewarded for the action
    its observation points at (scouts: the largest of the first 4 numbers; carriers: the sign of
    the first). Episodes last ``max_steps`` steps. ``steps_taken`` counts every step of every
    instance in this process, so that a test can tell whether pretraining ran.
    """

    steps_taken = 0
    SCOUT_OBS, CARRIER_OBS = Box(-1.0, 1.0, (5,), np.float32), Box(-1.0, 1.0, (3,), np.float32)

    def __init__(self, config: dict | None = None) -> None:
        super().__init__()
        config = dict(config or {})
        self.max_steps = int(config.get("max_steps", 20))
        self.possible_agents = ["carrier_0", "carrier_1", "scout_0", "scout_1"]
        self.agents = list(self.possible_agents)
        self.observation_spaces = {a: self.SCOUT_OBS if a.startswith("scout") else self.CARRIER_OBS
                                   for a in self.possible_agents}
        self.action_spaces = {a: Discrete(4) if a.startswith("scout") else Discrete(2)
                              for a in self.possible_agents}
        self.rng = np.random.default_rng(config.get("seed"))

    def _observe(self) -> dict:
        self.obs = {a: self.rng.uniform(-1, 1, self.observation_spaces[a].shape).astype(np.float32)
                    for a in self.possible_agents}
        return dict(self.obs)

    def _target(self, agent: str) -> int:
        obs = self.obs[agent]
        return int(np.argmax(obs[:4])) if agent.startswith("scout") else int(obs[0] > 0)

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.t = 0
        return self._observe(), {}

    def step(self, action_dict):
        TwoTypeEnv.steps_taken += 1
        self.t += 1
        rewards = {a: float(action == self._target(a)) for a, action in action_dict.items()}
        done = self.t >= self.max_steps
        return self._observe(), rewards, {"__all__": False}, {"__all__": done}, {}


def per_agent_modules(config, agents):
    """The starting config RLlib needs for agents of different spaces: one module per agent."""
    return config.multi_agent(policies={str(a) for a in agents},
                              policy_mapping_fn=lambda aid, *args, **kwargs: str(aid))


class SpacesEnv(MultiAgentEnv):
    """Agents with the spaces given in ``env_config``, observing random samples of them.

    env_config keys: ``observation_spaces`` and ``action_spaces`` (agent -> space), ``max_steps``
    (episode length, default 10), ``nan_at`` ((agent, step, "observation" or "reward"): that
    value is NaN). Rewards are 1 when an agent's action equals a fixed random draw of its space.
    ``steps_taken`` counts every step in this process.
    """

    steps_taken = 0

    def __init__(self, config: dict | None = None) -> None:
        super().__init__()
        config = dict(config or {})
        self.observation_spaces = dict(config["observation_spaces"])
        self.action_spaces = dict(config["action_spaces"])
        self.possible_agents = list(self.observation_spaces)
        self.agents = list(self.possible_agents)
        self.max_steps = int(config.get("max_steps", 10))
        self.nan_at = config.get("nan_at")
        self.targets = {a: str(space.sample()) for a, space in self.action_spaces.items()}

    def _observe(self) -> dict:
        obs = {a: space.sample() for a, space in self.observation_spaces.items()}
        if self.nan_at and self.nan_at[1] == self.t and self.nan_at[2] == "observation":
            obs[self.nan_at[0]] = np.full_like(obs[self.nan_at[0]], np.nan)
        return obs

    def reset(self, *, seed=None, options=None):
        self.t = 0
        for i, space in enumerate(self.observation_spaces.values()):
            space.seed(None if seed is None else seed + i)
        return self._observe(), {}

    def step(self, action_dict):
        SpacesEnv.steps_taken += 1
        self.t += 1
        rewards = {a: float(str(action) == self.targets[a]) for a, action in action_dict.items()}
        if self.nan_at and self.nan_at[1] == self.t and self.nan_at[2] == "reward":
            rewards[self.nan_at[0]] = float("nan")
        return self._observe(), rewards, {"__all__": False}, {"__all__": self.t >= self.max_steps}, {}
