"""Pretraining end to end on real environments: rollouts -> encoder -> clusters."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from rllib_seps.cli.experiment_file import load_experiments
from rllib_seps.pretraining.clustering import cluster_agents
from rllib_seps.envs import ENVIRONMENTS, BlindParticleSpread, make_env
from rllib_seps.envs.adapter import rllib_creator
from rllib_seps.options import SePSOptions
from rllib_seps.pretraining.pipeline import run_pretraining
from rllib_seps.pretraining.report import format_report, write_report
from rllib_seps.pretraining.rollouts import collect_random_rollouts

ROOT = Path(__file__).resolve().parents[1]
# Enough to tell alike from different agents; the ARI tests use the defaults.
QUICK = dict(progress=False, updates=1500, transitions_per_agent=1000)


def bps(counts):
    return rllib_creator(lambda **kw: BlindParticleSpread(counts, **kw))


def true_types(name: str) -> list[int]:
    types = make_env(name).agent_types
    return [types[a] for a in sorted(types)]


@pytest.mark.parametrize("name", ["bps_1", "bps_4"])
def test_auto_k_recovers_colours(name):
    result = run_pretraining(rllib_creator(ENVIRONMENTS[name]), {}, SePSOptions(seed=1, progress=False))
    assert adjusted_rand_score(true_types(name), result.labels) == 1.0
    assert result.clustering.k == len(set(true_types(name)))
    assert result.clustering.scores, "automatic K reports the score of every K tried"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bps_h_1", "crware_1", "lbf"])
def test_tuned_options_recover_the_types_of_each_paper_family(name):
    """With its tuned config's SePS options (LBF: 200k transitions per agent, about 3 minutes)."""
    (experiment,) = load_experiments(ROOT / "tuned_configs" / f"{name}-seps-ppo.yaml")
    options = dataclasses.replace(experiment.seps, progress=False)
    result = run_pretraining(rllib_creator(ENVIRONMENTS[name]), {}, options)
    assert adjusted_rand_score(true_types(name), result.labels) == 1.0, result.clustering.reason


def test_same_seed_same_clusters_and_embeddings():
    runs = [run_pretraining(bps((3, 3)), {}, SePSOptions(seed=3, progress=False, updates=500, transitions_per_agent=300))
            for _ in range(2)]
    np.testing.assert_array_equal(runs[0].labels, runs[1].labels)
    np.testing.assert_allclose(runs[0].embeddings.means, runs[1].embeddings.means)


@pytest.mark.parametrize("counts", [(12,), (2,)])
def test_alike_agents_give_one_cluster(counts):
    result = run_pretraining(bps(counts), {}, SePSOptions(**QUICK))
    assert result.clustering.k == 1, result.clustering.reason
    assert set(result.mapping.module_ids) == {"cluster_0"}


def test_two_different_agents_give_two_clusters():
    result = run_pretraining(bps((1, 1)), {}, SePSOptions(**QUICK))
    assert result.clustering.k == 2, result.clustering.reason
    assert result.mapping.module_ids == ["cluster_0", "cluster_1"]


def test_given_k_larger_than_agents_raises():
    with pytest.raises(ValueError, match=r"n_clusters=5 is larger than the number of agents \(3\)"):
        run_pretraining(bps((1, 1, 1)), {}, SePSOptions(n_clusters=5, transitions_per_agent=10, progress=False))


def test_given_k_and_degenerate_k_warns():
    result = run_pretraining(bps((2, 2)), {}, SePSOptions(n_clusters=2, **QUICK))
    assert result.clustering.k == 2 and "given" in result.clustering.reason
    with pytest.warns(UserWarning, match="n_clusters=4 with 4 agents gives one module per agent"):
        cluster_agents(result.embeddings, 4)


def test_rollouts_pad_observations_and_mask_real_entries():
    data = collect_random_rollouts(rllib_creator(ENVIRONMENTS["bps_h_1"]), {},
                                   transitions_per_agent=20, progress=False)
    dims = data.obs_mask.sum(1)
    assert sorted(set(dims.tolist())) == [10, 13, 16]
    assert data.obs.shape[1] == 16
    small = data.agent == 0  # agent_00 sees 10 entries: the rest is padding
    assert np.all(data.obs[small][:, 10:] == 0) and np.all(data.next_obs[small][:, 10:] == 0)
    assert min(data.per_agent_counts().values()) >= 20


def test_non_multi_agent_env_is_rejected():
    import gymnasium as gym

    with pytest.raises(TypeError, match="needs a multi-agent environment.*CartPoleEnv"):
        collect_random_rollouts(lambda cfg: gym.make("CartPole-v1").unwrapped, {}, progress=False)


def test_report_text_json_and_png(tmp_path):
    result = run_pretraining(bps((2, 2)), {}, SePSOptions(**QUICK))
    text = format_report(result)
    assert "cluster_0" in text and "transitions" in text
    files = write_report(result, tmp_path)
    assert files["png"].stat().st_size > 1000
    import json

    report = json.loads(files["json"].read_text())
    assert report["n_agents"] == 4 and set(report["timings_s"]) >= {"rollouts", "encoder", "clustering"}


def test_rollouts_over_ray_tasks_are_deterministic(ray_session):
    runs = [collect_random_rollouts(bps((2, 2)), {}, transitions_per_agent=200, seed=5, num_tasks=2,
                                    progress=False) for _ in range(2)]
    assert min(runs[0].per_agent_counts().values()) >= 200
    np.testing.assert_array_equal(runs[0].obs, runs[1].obs)
    np.testing.assert_array_equal(runs[0].agent, runs[1].agent)


def test_box_actions_are_encoded_raw():
    from mpe2 import simple_spread_v3

    from rllib_seps.envs.adapter import SortedParallelEnv

    def creator(cfg):
        return SortedParallelEnv(simple_spread_v3.parallel_env(N=3, continuous_actions=True, max_cycles=25))

    data = collect_random_rollouts(creator, {}, transitions_per_agent=50, progress=False)
    assert data.action.shape[1] == 5  # Box(0, 1, (5,)) kept as is, not one-hot
    assert np.all((data.action >= 0) & (data.action <= 1)) and len(np.unique(data.action)) > 100
    result = run_pretraining(creator, {}, SePSOptions(**QUICK))
    assert len(result.labels) == 3
