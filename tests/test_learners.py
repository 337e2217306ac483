"""Several learners whatever modules their shards hold (upstream issue #63819).

The forced case: an agent that acts in every other episode only, alone in its cluster, and a
train batch of two episodes, which RLlib shards one episode per learner: one learner gets no rows
of that cluster's module in every update. With RLlib's own PPO learner the other learner waits
for it forever; with :class:`PPOTorchLearnerWithModuleSync` both finish and stay identical.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from ray.rllib.algorithms.appo import APPOConfig
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from rllib_seps.rllib.learners import PPOTorchLearnerWithModuleSync, sync_every_module

ROOT = Path(__file__).resolve().parents[1]
EPISODE = 10


class RareAgentEnv(MultiAgentEnv):
    """Three agents act in every episode, ``rare`` in every other one; episodes last
    :data:`EPISODE` steps and reward action 1."""

    def __init__(self, config=None):
        super().__init__()
        self.possible_agents = ["a_0", "a_1", "a_2", "rare"]
        self.agents = list(self.possible_agents)
        self.observation_spaces = {a: gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
                                   for a in self.possible_agents}
        self.action_spaces = {a: gym.spaces.Discrete(2) for a in self.possible_agents}
        self.t, self.episode = 0, 0

    def _observations(self):
        acting = [a for a in self.possible_agents if a != "rare" or self.episode % 2]
        return {a: np.full(3, self.t / EPISODE, np.float32) for a in acting}

    def reset(self, *, seed=None, options=None):
        self.t, self.episode = 0, self.episode + 1
        return self._observations(), {}

    def step(self, actions):
        self.t += 1
        observations = self._observations()
        rewards = {a: float(actions.get(a, 0)) for a in observations}
        return observations, rewards, {"__all__": self.t >= EPISODE}, {"__all__": False}, {}


class RecordingLearner(PPOTorchLearnerWithModuleSync):
    """Records which modules each of its updates had rows for."""

    def build(self) -> None:
        super().build()
        self.trained_modules: list[list[str]] = []

    def compute_losses(self, *, fwd_out, batch, **kwargs):
        self.trained_modules.append(sorted(fwd_out))
        return super().compute_losses(fwd_out=fwd_out, batch=batch, **kwargs)


def each_learner(algo, fn) -> list:
    """``fn(learner)`` of every remote learner, in learner order."""
    results = sorted(algo.learner_group.foreach_learner(fn), key=lambda r: r.actor_id)
    return [r.get() for r in results]


def weights(learner) -> dict:
    """The learner's module weights, as numpy arrays."""
    return {m: {k: v.detach().numpy().copy() for k, v in learner.module[m].unwrapped().state_dict().items()}
            for m in learner.module.keys()}


def train_two_learners(strategy: str) -> None:
    """2 PPO iterations with 2 learners on :class:`RareAgentEnv`, ``rare`` in a cluster of its
    own; checks that the learners stayed identical and trained every module."""
    from rllib_seps.rllib.configure import apply_plan
    from rllib_seps.sharing.plan import build_plan

    env = RareAgentEnv()
    config = (PPOConfig().environment(RareAgentEnv)
              # Two whole episodes per batch: RLlib gives each learner one of them.
              .env_runners(num_env_runners=0, rollout_fragment_length=2 * EPISODE)
              .training(train_batch_size=2 * EPISODE, minibatch_size=EPISODE, num_epochs=1)
              .learners(num_learners=2, num_cpus_per_learner=1))
    plan = build_plan(strategy, env.observation_spaces, env.action_spaces, labels=[0, 0, 0, 1])
    config = apply_plan(config, plan, {"fcnet_hiddens": [8]})
    assert config.learner_class is PPOTorchLearnerWithModuleSync
    algo = config.learners(learner_class=RecordingLearner).build_algo()
    try:
        before = each_learner(algo, weights)[0]
        for _ in range(2):
            algo.train()
        after = each_learner(algo, weights)
        trained = each_learner(algo, lambda learner: learner.trained_modules)
    finally:
        algo.stop()
    modules = sorted(config.policies)
    for module in modules:
        for key, value in after[0][module].items():
            np.testing.assert_array_equal(value, after[1][module][key], err_msg=f"{module}.{key}")
        assert any(not np.array_equal(v, after[0][module][k]) for k, v in before[module].items()), module
    if strategy == "adaps":  # the masks are in the learners' modules, the same on both
        assert any(key.startswith("actor_body.mlp.cluster_mask_") for key in after[0]["shared"])
    if strategy == "seps":  # the forced case happened: one learner had no rows of cluster_1
        assert modules == ["cluster_0", "cluster_1"]
        seen = [set(map(tuple, updates)) for updates in trained]
        assert {("cluster_0",), ("cluster_0", "cluster_1")} == seen[0] | seen[1], seen
    print(f"{strategy}: TWO LEARNERS FINISHED", flush=True)


# Its own Ray in a subprocess: a hung DDP learner cannot be interrupted in this process.
SCRIPT = """
import ray
from tests.test_learners import train_two_learners
ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
try:
    for strategy in ("seps", "adaps"):
        train_two_learners(strategy)
finally:
    ray.shutdown()
"""


@pytest.mark.slow
def test_two_learners_finish_when_one_shard_lacks_a_module():
    """seps (a module missing from one learner's shard in every update) and adaps (one module
    for all) with 2 learners; a hang fails after 300 s."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the child and the Ray processes it started
        output, _ = process.communicate()
        pytest.fail(f"2 learners did not finish 2 iterations in 300 s:\n{output[-3000:]}")
    assert process.returncode == 0, output[-3000:]
    assert "seps: TWO LEARNERS FINISHED" in output and "adaps: TWO LEARNERS FINISHED" in output


def test_sync_every_module_sets_the_learner_only_where_needed(caplog):
    assert sync_every_module(PPOConfig()).learner_class is PPOTorchLearnerWithModuleSync
    # IMPALA and APPO synchronise by hand upstream.
    assert sync_every_module(APPOConfig()).learner_class is APPOConfig().get_default_learner_class()

    class OwnLearner(PPOTorchLearner):
        pass

    custom = PPOConfig().learners(learner_class=OwnLearner, num_learners=2)
    with caplog.at_level(logging.WARNING, logger="rllib_seps.rllib.learners"):
        assert sync_every_module(custom).learner_class is OwnLearner
    assert "ModuleGradientSync as the first base of the learner class OwnLearner" in caplog.text
