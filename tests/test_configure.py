"""Errors before any training, and the config-time route (``with_sharing``)."""

from __future__ import annotations

import pickle

import pytest
from ray.rllib.algorithms.bc import BCConfig

from rllib_seps import AgentToModuleMapping, SePSOptions, with_sharing
from tests.conftest import quick_ppo_config


def test_with_sharing_builds_cluster_modules(ray_session):
    config, result = with_sharing(quick_ppo_config("bps", agents_per_colour=(3, 3), max_cycles=25),
                                  {"progress": False})
    assert result.clustering.k == 2
    assert set(config.policies) == {"cluster_0", "cluster_1"}
    algo = config.build_algo()
    try:
        result = algo.train()
        assert {"cluster_0", "cluster_1"} <= set(result["learners"])
    finally:
        algo.stop()


def test_mapping_is_small_picklable_and_names_unknown_agents():
    mapping = AgentToModuleMapping({"b": "cluster_1", "a": "cluster_0"})
    clone = pickle.loads(pickle.dumps(mapping))
    assert clone == mapping and clone("a") == "cluster_0" and clone("b", None, worker=None) == "cluster_1"
    assert len(pickle.dumps(mapping)) < 500
    with pytest.raises(ValueError, match=r"no module for agent 'zed'.*knows 2 agents: \['a', 'b'\]"):
        mapping("zed")


def test_env_that_is_not_multi_agent_is_rejected():
    from ray.rllib.algorithms.ppo import PPOConfig

    with pytest.raises(TypeError, match="needs a multi-agent environment"):
        with_sharing(PPOConfig().environment("CartPole-v1"))


def test_algorithm_without_multi_agent_support_is_rejected():
    with pytest.raises(ValueError, match="Algorithm BC cannot train multi-agent modules"):
        with_sharing(BCConfig().environment("bps_1"))


def test_unknown_environment_and_option_are_named():
    with pytest.raises(ValueError, match="Environment 'no_such_env' is not registered"):
        with_sharing(quick_ppo_config("no_such_env"))
    with pytest.raises(ValueError, match="Unknown SePS option 'n_cluster'. Did you mean 'n_clusters'"):
        SePSOptions.from_dict({"n_cluster": 3})
    with pytest.raises(ValueError, match=r"n_clusters=0 is invalid"):
        SePSOptions(n_clusters=0)


def test_k_larger_than_agents_is_rejected_before_training():
    with pytest.raises(ValueError, match=r"n_clusters=20 is larger than the number of agents \(15\)"):
        with_sharing(quick_ppo_config("bps_1"), {"n_clusters": 20, "progress": False,
                                                 "transitions_per_agent": 10})
