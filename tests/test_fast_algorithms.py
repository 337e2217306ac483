"""Fast execution inside real PPO runs: per-group results, an EnvRunner that Ray restarts, a
checkpoint restore, two learners, and every route selecting it the same way."""

from __future__ import annotations

import time

import numpy as np
import pytest
import ray
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.core import DEFAULT_MODULE_ID

from rllib_seps import SePSCallback, with_sharing
from rllib_seps.cli.experiment_file import load_experiments, share
from rllib_seps.rllib.configure import apply_plan, env_creator_of, env_spaces
from rllib_seps.rllib.fast.execution import uses_fast_execution
from rllib_seps.sharing.plan import build_plan
from tests.conftest import quick_ppo_config

pytestmark = pytest.mark.slow

CLUSTERS = ("cluster_0", "cluster_1", "cluster_2")


def seps_config(**runner_settings):
    """BPS(1) (25-step episodes), seps with its three colours as clusters, fast execution."""
    config = (quick_ppo_config("bps_1", max_cycles=25).env_runners(**runner_settings)
              .training(train_batch_size=200, minibatch_size=50).rl_module(model_config={"fcnet_hiddens": [16, 16]}))
    obs, act = env_spaces(env_creator_of(config), config.env_config)
    plan = build_plan("seps", obs, act, labels=[a // 5 for a in range(15)])
    return apply_plan(config, plan, execution="fast")


def weights(algo) -> np.ndarray:
    state = algo.learner_group.get_state()["learner"]["rl_module"][DEFAULT_MODULE_ID]
    return np.concatenate([np.ravel(v) for k, v in sorted(state.items())])


def test_fast_ppo_reports_per_group_survives_env_runner_restart_and_restores(ray_session, tmp_path):
    config = (seps_config(num_env_runners=1).fault_tolerance(restart_failed_env_runners=True)
              .evaluation(evaluation_interval=1, evaluation_duration=2, evaluation_num_env_runners=0,
                          evaluation_config={"explore": False}))
    algo = config.build_algo()
    try:
        result = algo.train()
        for group in CLUSTERS:  # per-group losses and returns, as per-module ones on the module path
            assert np.isfinite(result["learners"][group]["policy_loss"])
            assert np.isfinite(result["env_runners"]["module_episode_returns_mean"][group])
        evaluation = result["evaluation"]["env_runners"]  # RLlib's evaluation: greedy, whole episodes
        assert evaluation["num_episodes"] >= 2 and set(evaluation["module_episode_returns_mean"]) == set(CLUSTERS)
        assert result["env_runners"]["num_env_steps_sampled"] == 200
        assert len(result["env_runners"]["agent_episode_returns_mean"]) == 15

        ray.kill(algo.env_runner_group._worker_manager._actors[1], no_restart=False)
        deadline = time.time() + 120  # the actor restarts (imports torch and Ray) while train() goes on
        while time.time() < deadline:
            sampled = algo.train()["env_runners"].get("num_env_steps_sampled")
            if sampled == 200:  # the restarted runner samples
                break
        assert sampled == 200
        checkpoint = algo.save_to_path(str(tmp_path / "checkpoint"))
        saved = weights(algo)
    finally:
        algo.stop()

    restored = Algorithm.from_checkpoint(checkpoint)
    try:
        assert uses_fast_execution(restored.config)
        np.testing.assert_array_equal(weights(restored), saved)
        assert set(CLUSTERS) <= set(restored.train()["learners"])
    finally:
        restored.stop()


def test_fast_ppo_trains_with_two_learners(ray_session):
    algo = seps_config(num_env_runners=0).learners(num_learners=2).build_algo()
    try:
        before = weights(algo)
        result = algo.train()
        assert set(CLUSTERS) <= set(result["learners"])
        assert not np.array_equal(weights(algo), before)
    finally:
        algo.stop()


def test_every_route_selects_fast_execution_the_same_way():
    options = {"strategy": "fups", "execution": "fast"}
    config, _ = with_sharing(quick_ppo_config("bps_1"), options)
    assert uses_fast_execution(config)
    (experiment,) = load_experiments("tuned_configs/bps_1-fups-ppo.yaml", config_overrides={"seps": options})
    config, _ = share(experiment)
    assert uses_fast_execution(config)
    config, _ = with_sharing(quick_ppo_config("bps_1"), {**options, "execution": "modules"})
    assert not uses_fast_execution(config) and set(config.policies) == {"shared"}


def test_the_callback_selects_fast_execution_as_the_other_routes_do(ray_session):
    config = (quick_ppo_config("bps_1", max_cycles=25).training(train_batch_size=200, minibatch_size=50)
              .rl_module(model_config={"fcnet_hiddens": [16, 16]})
              .multi_agent(policies={"shared"}, policy_mapping_fn=lambda agent, *args, **kwargs: "shared")
              .callbacks(SePSCallback.with_options(strategy="fups", execution="fast", progress=False)))
    algo = config.build_algo()
    try:
        assert uses_fast_execution(algo.config)
        assert np.isfinite(algo.train()["learners"]["shared"]["policy_loss"])
    finally:
        algo.stop()
