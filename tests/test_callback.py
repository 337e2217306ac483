"""SePSCallback on a real PPO run: clusters in place on learners and EnvRunners, restore from a
checkpoint, and an EnvRunner that Ray restarts by itself."""

from __future__ import annotations

import json
import time

import pytest
import ray
from ray.rllib.algorithms.algorithm import Algorithm

from rllib_seps import AgentToModuleMapping, SePSCallback
from rllib_seps.pretraining.report import EMBEDDINGS_PNG, REPORT_JSON
from tests.conftest import quick_ppo_config

pytestmark = pytest.mark.slow

# BPS(1) colours, sorted agent order: agent_00-04 colour 0, 05-09 colour 1, 10-14 colour 2.
COLOURS = [[f"agent_{i:02d}" for i in range(c * 5, c * 5 + 5)] for c in range(3)]


def shared_config(tmp_path, num_env_runners: int):
    return (
        quick_ppo_config("bps_1", max_cycles=25)
        .env_runners(num_env_runners=num_env_runners)
        .fault_tolerance(restart_failed_env_runners=True)
        .multi_agent(policies={"shared"}, policy_mapping_fn=lambda aid, *a, **kw: "shared")
        .callbacks(SePSCallback.with_options(seed=0, progress=False,
                                             report_dir=str(tmp_path)))
    )


def remote_mappings(algo) -> list:
    return algo.env_runner_group.foreach_env_runner(
        lambda er: er.config.policy_mapping_fn("agent_07"), local_env_runner=False)


def test_seps_callback_trains_restores_and_survives_env_runner_restart(ray_session, tmp_path):
    algo = shared_config(tmp_path, num_env_runners=2).build_algo()
    try:
        mapping = algo.config.policy_mapping_fn
        assert isinstance(mapping, AgentToModuleMapping)
        assert sorted(mapping.agents_of(m) for m in mapping.module_ids) == COLOURS
        assert set(algo.config.policies) == {"cluster_0", "cluster_1", "cluster_2"}
        assert remote_mappings(algo) == ["cluster_1", "cluster_1"]

        first = algo.train()
        assert first["seps"]["k"] == 3 and first["seps"]["cluster_sizes"] == {
            "cluster_0": 5, "cluster_1": 5, "cluster_2": 5}
        assert json.loads((tmp_path / REPORT_JSON).read_text())["k"] == 3
        assert (tmp_path / EMBEDDINGS_PNG).stat().st_size > 1000
        for _ in range(2):
            result = algo.train()
        learner_modules = set(result["learners"]) - {"__all_modules__"}
        assert learner_modules == {"cluster_0", "cluster_1", "cluster_2"}
        assert "seps" not in result  # the report comes with the first result only

        # Kill one EnvRunner actor; Ray restarts it with the build-time config (module "shared").
        victim = algo.env_runner_group._worker_manager._actors[1]
        ray.kill(victim, no_restart=False)
        time.sleep(2)
        for _ in range(3):
            result = algo.train()
        assert result["env_runners"]["num_env_steps_sampled"] > 0
        assert remote_mappings(algo) == ["cluster_1", "cluster_1"]
        assert set(result["learners"]) - {"__all_modules__"} == set(algo.config.policies)
        checkpoint = algo.save_to_path(str(tmp_path / "checkpoint"))
    finally:
        algo.stop()

    # Restore (after stopping: the 2-CPU test cluster holds one algorithm's EnvRunners at a time):
    # same modules and mapping, no new pretraining.
    restored = Algorithm.from_checkpoint(checkpoint)
    try:
        assert restored.config.policy_mapping_fn == mapping
        assert set(restored.config.policies) == {"cluster_0", "cluster_1", "cluster_2"}
        assert restored.callbacks[0].result is None  # on_algorithm_init did nothing new
        assert remote_mappings(restored) == ["cluster_1", "cluster_1"]
        restored.train()
    finally:
        restored.stop()
