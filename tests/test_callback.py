"""One route: SePSCallback and with_sharing train every strategy on an env whose agents' observation
and action spaces differ, and what the callback changes survives EnvRunner restarts and restore."""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path

import pytest
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.ppo import PPOConfig

from rllib_seps import AgentToModuleMapping, SePSCallback, with_sharing
from rllib_seps.pretraining.report import EMBEDDINGS_PNG, REPORT_JSON
from rllib_seps.rllib.modules import SharedActorCriticModule
from tests.conftest import TwoTypeEnv, per_agent_modules

AGENTS = TwoTypeEnv().possible_agents
# The module path: these tests read the modules RLlib builds (fast execution: tests/test_fast*.py).
QUICK = dict(progress=False, n_clusters=2, transitions_per_agent=200, updates=200, seed=0, execution="modules")
MODULES = {"fups": {"shared"}, "fups_id": {"shared"}, "adaps": {"shared"}, "seps": {"cluster_0", "cluster_1"}}


def shared_config(route: str, strategy: str, report_dir, num_env_runners: int = 0,
                  config_seed: int | None = None):
    """A tiny PPO config on TwoTypeEnv, shared by ``route``: the callback starts from one module per
    agent (what RLlib needs for agents of different spaces), with_sharing from RLlib's default.
    With ``config_seed`` the config has that seed and the options none."""
    config = (PPOConfig().environment(TwoTypeEnv)
              .env_runners(num_env_runners=num_env_runners)
              .training(train_batch_size=100, minibatch_size=100, num_epochs=1)
              .rl_module(model_config={"fcnet_hiddens": [32, 32]})
              .debugging(seed=config_seed))
    options = dict(QUICK, strategy=strategy, report_dir=str(report_dir))
    if config_seed is not None:
        del options["seed"]
    if route == "callback":
        return per_agent_modules(config, AGENTS).callbacks(SePSCallback.with_options(**options))
    return with_sharing(config, options)[0]


@pytest.mark.parametrize("strategy", ["fups", "fups_id", "seps", "adaps"])
@pytest.mark.parametrize("route", ["callback", "with_sharing"])
def test_every_strategy_trains_on_both_routes(ray_session, tmp_path, capsys, route, strategy):
    algo = shared_config(route, strategy, tmp_path).build_algo()
    try:
        modules = MODULES[strategy]
        assert set(algo.config.policies) == modules
        assert algo.config.seps["strategy"] == strategy  # the options, in the config (and params.json)
        mapping = algo.config.policy_mapping_fn
        assert isinstance(mapping, AgentToModuleMapping) and list(mapping.agent_to_module) == sorted(AGENTS)
        # One module over scouts and carriers (different spaces) is padded; seps clusters are not.
        padded = strategy != "seps"
        assert all(isinstance(algo.get_module(m), SharedActorCriticModule) == padded for m in modules)
        results = [algo.train() for _ in range(2)]
        assert all(math.isfinite(results[-1]["learners"][m]["total_loss"]) for m in modules)
        assert set(results[-1]["env_runners"]["module_episode_returns_mean"]) == modules
        assert results[-1]["env_runners"]["num_env_steps_sampled"] >= 100
        printed = capsys.readouterr().out
        if strategy in ("seps", "adaps"):  # the report, printed and written the same way on both routes
            assert "SePS: 4 agents -> 2 cluster(s), confident; K=2 was given." in printed
            assert f"strategy={strategy!r}" in printed
            assert f"SePS report written: {tmp_path / REPORT_JSON}, {tmp_path / EMBEDDINGS_PNG}" in printed
            report = json.loads((tmp_path / REPORT_JSON).read_text())
            assert report["options"]["strategy"] == strategy and report["options"]["updates"] == 200
            assert ("seps" in results[0]) == (route == "callback") and "seps" not in results[1]
        else:
            assert "SePS" not in printed and not (tmp_path / REPORT_JSON).exists()
    finally:
        algo.stop()


def env_runner_states(algo) -> list:
    """(pid, modules, module of scout_0) of every remote EnvRunner."""
    return algo.env_runner_group.foreach_env_runner(
        lambda er: (os.getpid(), sorted(er.module.keys()), er.config.policy_mapping_fn("scout_0")),
        local_env_runner=False)


@pytest.mark.slow
def test_callback_survives_env_runner_restart_and_checkpoint_restore(ray_session, tmp_path, capsys):
    # Pretraining takes the config's seed; the restored callback must find its options recorded.
    algo = shared_config("callback", "adaps", tmp_path, num_env_runners=1, config_seed=5).build_algo()
    try:
        ((pid, modules, module),) = env_runner_states(algo)
        assert (modules, module) == (["shared"], "shared")
        assert "total_loss" in algo.train()["learners"]["shared"]

        # The EnvRunner's process dies; Ray restarts it with the config it was created with, which
        # is the shared one (the callback rebuilt the EnvRunners from it). Restore it by hand.
        os.kill(pid, signal.SIGKILL)
        # The new worker imports RLlib and torch again: 5-6 s of CPU on a quiet 2-core machine,
        # many times that on a loaded one.
        for _ in range(180):
            time.sleep(1)
            algo.restore_env_runners(algo.env_runner_group)
            states = env_runner_states(algo)  # healthy ones only
            if states and states[0][0] != pid:
                break
        assert [state[1:] for state in states] == [(["shared"], "shared")]
        result = algo.train()
        assert result["env_runners"]["num_env_steps_sampled"] >= 100 and "total_loss" in result["learners"]["shared"]
        checkpoint = algo.save_to_path(str(tmp_path / "checkpoint"))
        options = algo.config.seps
        assert options["seed"] == 5
    finally:
        algo.stop()
    capsys.readouterr()

    # Restore (after stopping: the 2-CPU test cluster holds one algorithm's EnvRunners at a time):
    # the shared modules, mapping and options, and no new pretraining.
    restored = Algorithm.from_checkpoint(checkpoint)
    try:
        assert restored.config.seps == options and set(restored.config.policies) == {"shared"}
        assert "SePS" not in capsys.readouterr().out
        assert [state[1:] for state in env_runner_states(restored)] == [(["shared"], "shared")]
        assert "total_loss" in restored.train()["learners"]["shared"]
    finally:
        restored.stop()


@pytest.mark.slow
def test_callback_under_tune_reports_into_the_trial_and_records_the_options(ray_session, tmp_path):
    from ray import tune

    config = shared_config("callback", "seps", tmp_path / "unused")
    config.callbacks(SePSCallback.with_options(**QUICK, strategy="seps"))  # report_dir: the trial's
    tuner = tune.Tuner(config.algo_class, param_space=config, run_config=tune.RunConfig(
        storage_path=str(tmp_path), name="tune", stop={"training_iteration": 1}, verbose=0))
    result = tuner.fit()[0]
    assert result.error is None
    assert result.metrics["seps"]["cluster_sizes"] == {"cluster_0": 2, "cluster_1": 2}
    assert set(result.metrics["learners"]) >= {"cluster_0", "cluster_1"}
    trial = Path(result.path)
    assert json.loads((trial / REPORT_JSON).read_text())["options"]["strategy"] == "seps"
    params = json.loads((trial / "params.json").read_text())  # what Tune wrote when the trial started
    assert "strategy='seps'" in params["callbacks"] and "transitions_per_agent=200" in params["callbacks"]
