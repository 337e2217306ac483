"""Pretraining end to end on real environments: rollouts -> encoder -> clusters -> report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from rllib_seps.envs import ENVIRONMENTS, BlindParticleSpread, make_env
from rllib_seps.envs.adapter import SortedParallelEnv, rllib_creator
from rllib_seps.options import SePSOptions
from rllib_seps.pretraining.clustering import (Candidate, cluster_agents, effect, noise_contrasts, separation,
                                              without_shared)
from rllib_seps.pretraining.encoder import Embeddings, has_rare_rewards
from rllib_seps.pretraining.pipeline import run_pretraining
from rllib_seps.pretraining.report import format_report, write_report
from rllib_seps.pretraining.rollouts import STREAMS, collect_random_rollouts, rollout_plan
from tests.conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
# A fixed small budget for tests of the plumbing; the tests of automatic K use the defaults.
FIXED = dict(progress=False, transitions_per_agent=400, updates=300)


def bps(counts):
    return rllib_creator(lambda **kw: BlindParticleSpread(counts, **kw))


def spread_box(cfg=None):
    from mpe2 import simple_spread_v3

    return SortedParallelEnv(simple_spread_v3.parallel_env(N=3, continuous_actions=True, max_cycles=25))


def pistonball(cfg=None):
    """Four pistons (two of them at a wall) seeing grey 16x16 images, with Box actions."""
    import supersuit
    from pettingzoo.butterfly import pistonball_v6

    env = pistonball_v6.parallel_env(n_pistons=4, max_cycles=125)
    return SortedParallelEnv(supersuit.resize_v1(supersuit.color_reduction_v0(env, mode="full"), 16, 16))


def true_types(name: str) -> list[int]:
    types = make_env(name).agent_types
    return [types[a] for a in sorted(types)]


def pretrain(creator, **options):
    """Pretraining with the package defaults (and `options`), failing on a low-confidence warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="SePS chose")
        return run_pretraining(creator, {}, SePSOptions(progress=False, **options))


# --- Automatic K on real environments ------------------------------------------------------

@pytest.mark.parametrize("creator", [bps((8,)), spread_box, pistonball],
                         ids=["vector-discrete", "vector-box-actions", "image-box-actions"])
def test_alike_agents_give_one_confident_cluster(creator):
    result = pretrain(creator)
    assert result.clustering.k == 1, result.clustering.reason
    assert result.confident and set(result.mapping.module_ids) == {"cluster_0"}


# Rare rewards make the cost of C-RWARE and LBF depend on the seed (docs/results/
# pretraining_panel_2026-12-06.txt): C-RWARE(1) seed 2 decides at 8k transitions per agent, seed 0
# only at the 128k cap (6x the time); LBF seed 2 at 42k, seeds 0, 3 and 4 at the cap (2-2.5x).
# The panel runs all five seeds.
@pytest.mark.parametrize("name, seed", [
    ("bps_4", 0),  # types of 2, 2, 2, 15 and 9 agents
    pytest.param("bps_h_1", 0, marks=pytest.mark.slow),
    pytest.param("crware_1", 2, marks=pytest.mark.slow),
    pytest.param("lbf", 2, marks=pytest.mark.slow),
], ids=["bps_4", "bps_h_1", "crware_1", "lbf"])
def test_auto_k_recovers_the_types_of_each_paper_family(name, seed):
    """With the package defaults: no per-task budget."""
    result = pretrain(rllib_creator(ENVIRONMENTS[name]), seed=seed)
    assert adjusted_rand_score(true_types(name), result.labels) == 1.0, result.clustering.reason
    assert result.confident


@pytest.mark.parametrize("counts, k", [((2,), 1), ((1, 1), 2)], ids=["alike", "different"])
def test_two_agents(counts, k):
    result = pretrain(bps(counts))
    assert result.clustering.k == k, result.clustering.reason


def test_low_confidence_decision_warns_naming_the_option():
    # 100 transitions per agent cannot tell two BPS colours apart: the decision says so.
    with pytest.warns(UserWarning, match=r"low confidence.*transitions_per_agent=\"auto\" or more than 100"):
        result = run_pretraining(bps((1, 1)), {}, SePSOptions(progress=False, transitions_per_agent=100))
    assert not result.confident and not result.summary()["confident"]


def test_auto_budget_stops_at_its_cap_and_warns():
    options = SePSOptions(progress=False, first_transitions_per_agent=100, max_transitions_per_agent=400)
    with pytest.warns(UserWarning, match=r"raise max_transitions_per_agent \(now 400"):
        result = run_pretraining(bps((1, 1)), {}, options)
    # The first round goes on to 8 episodes per agent (what a confident decision needs), then grows.
    first, last = (r.transitions_per_agent for r in result.rounds)
    assert 100 < first < last == 400


SAME_SEED_SCRIPT = """
import numpy as np
from rllib_seps.envs import BlindParticleSpread
from rllib_seps.envs.adapter import rllib_creator
from rllib_seps.options import SePSOptions
from rllib_seps.pretraining.pipeline import run_pretraining
result = run_pretraining(rllib_creator(lambda **kw: BlindParticleSpread((2, 2, 1), **kw)), {},
                         SePSOptions(seed=3, progress=False, transitions_per_agent=600, updates=400))
print(result.labels.tolist(), np.round(result.embeddings.decoy_behaviour, 5).tobytes().hex()[:4000])
"""


def test_same_seed_same_clusters_across_hash_seeds():
    """Two processes with different PYTHONHASHSEED (and thread counts) give identical results."""
    outputs = []
    for hash_seed, threads in (("0", "1"), ("12345", "2")):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "OMP_NUM_THREADS": threads}
        done = subprocess.run([sys.executable, "-c", SAME_SEED_SCRIPT], env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(done.stdout.strip().splitlines()[-1])
    assert outputs[0] == outputs[1]


def test_without_a_seed_of_its_own_pretraining_takes_the_configs():
    from ray.rllib.algorithms.ppo import PPOConfig

    from rllib_seps import with_sharing

    def shared(config_seed, **options):
        config = PPOConfig().environment("bps_2").debugging(seed=config_seed)
        return with_sharing(config, dict(progress=False, transitions_per_agent=200, updates=200, **options))

    config, result = shared(3)
    assert result.options.seed == 3 and config.seps["seed"] == 3
    _, own = shared(None, seed=3)
    assert np.array_equal(own.embeddings.decoy_behaviour, result.embeddings.decoy_behaviour)
    _, other = shared(3, seed=4)  # the option's own seed wins
    assert other.options.seed == 4
    assert not np.array_equal(other.embeddings.decoy_behaviour, result.embeddings.decoy_behaviour)
    assert shared(None)[1].options.seed == 0


# --- The decision on known points -----------------------------------------------------------

def synthetic(centres, decoys=4, dims=30, noise=1.0, shared=5.0, seed=0):
    """Embeddings whose agents sit at `centres` (one row each), with iid noise per decoy and a
    large offset per decoy index that all agents share (as data from the same episodes gives)."""
    rng = np.random.default_rng(seed)
    centres = np.asarray(centres, float)
    points = (centres[:, None, :] + noise * rng.normal(size=(len(centres), decoys, dims))
              + shared * rng.normal(size=(1, decoys, dims)))
    return Embeddings(agent_ids=[f"a{i:02d}" for i in range(len(centres))], decoy_means=points[..., :5],
                      decoy_behaviour=points)


def test_agents_known_exactly_alike_give_k1():
    # No noise and no difference: every point repeats, and k-means finds fewer clusters than asked.
    exact = Embeddings(agent_ids=["a", "b", "c"], decoy_means=np.zeros((3, 4, 5)),
                       decoy_behaviour=np.zeros((3, 4, 5)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # expected, so no sklearn ConvergenceWarning for the user
        result = cluster_agents(exact)
    assert result.k == 1, result.reason
    # A given K that the points cannot fill would leave a module without agents.
    with pytest.raises(ValueError, match='n_clusters=2: .* only 1 distinct .* n_clusters <= 1, or n_clusters="auto"'):
        cluster_agents(exact, n_clusters=2)
    # The same in a noise-only draw (repeated contrasts): one cluster is no separation.
    assert separation(np.zeros((3, 5)), np.zeros(3, np.int64), np.ones(3)) == 0.0


def test_contrasts_hold_only_the_noise_with_the_variance_of_an_agents_mean():
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(3000, 4, 3))
    moved = noise + 10 * rng.normal(size=(3000, 1, 3)) + 10 * rng.normal(size=(1, 4, 3))
    np.testing.assert_allclose(noise_contrasts(without_shared(moved)), noise_contrasts(without_shared(noise)))
    assert (noise_contrasts(without_shared(noise)) ** 2).mean() == pytest.approx(1 / 4, rel=0.03)


@pytest.mark.parametrize("n", [2, 12])
def test_alike_points_give_a_confident_k1(n):
    result = cluster_agents(synthetic(np.zeros((n, 30))))
    assert result.k == 1 and result.confident, result.reason
    assert result.spread == pytest.approx(1, abs=0.7)


def test_separated_groups_are_found_and_subgroups_of_noise_are_not():
    centres = np.repeat(np.eye(3, 30) * 10.0, [2, 6, 9], axis=0)  # types of 2, 6 and 9 agents
    result = cluster_agents(synthetic(centres))
    assert result.k == 3 and result.confident, result.reason
    assert adjusted_rand_score(np.repeat([0, 1, 2], [2, 6, 9]), result.labels) == 1.0
    assert result.candidates[3].significant and result.candidates[3].stable
    assert not (result.candidates[4].significant and result.candidates[4].stable)


def test_a_small_real_difference_within_a_type_is_not_a_type_yet_asks_for_more_data():
    # Two types 14 apart; within the first, agents 0-1 and 2-3 differ by 1 (a simulator's agent
    # order, or a type whose rare rewards were only partly seen): far beyond their noise (0.05)
    # and reproducible, but a fourteenth of the types' difference.
    centres = np.repeat(np.eye(2, 30) * 10.0, 4, axis=0)
    centres[2:4, 2] += 1.0
    result = cluster_agents(synthetic(centres, noise=0.05))
    assert result.k == 2 and not result.confident and "K=3 nearly passes" in result.reason
    three = result.candidates[3]
    assert three.significant and three.stable and three.small and not three.passes
    assert three.relative_effect == pytest.approx(1 / np.sqrt(200), abs=0.01)


def test_the_effect_leaves_the_noise_aside():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 50)
    noise_only = rng.normal(size=(2, 100, 40))  # two independent halves of pure noise
    # (the centres' difference in one half alone has a root mean square of 0.2)
    assert effect(tuple(noise_only), labels) < 0.1
    moved = noise_only + np.where(labels == 1, 0.5, 0.0)[None, :, None]
    assert effect(tuple(moved), labels) == pytest.approx(0.5, abs=0.05)
    # Per quantity: a difference in the reward alone (the last of each probe's 4) is not diluted.
    reward_only = noise_only.copy()
    reward_only[:, labels == 1, 3::4] += 0.5
    assert effect(tuple(reward_only), labels, width=4) == pytest.approx(0.5, abs=0.06)


def test_a_difference_near_the_noise_is_not_confident():
    # Two groups 2.8 apart, where one agent's point has noise 2.7 (30 dims of 0.5): seen, not resolved.
    centres = np.repeat(np.eye(2, 30) * 2.0, 6, axis=0)
    result = cluster_agents(synthetic(centres, seed=3))
    assert result.k == 1 and not result.confident, result.reason
    assert "more data" in result.reason


@pytest.mark.parametrize("k, separation_, null, stability, relative, unresolved, emerging", [
    (3, 19.8, 3.7, 0.74, 0.45, False, True),   # LBF's third level at 32k per agent: beyond noise, halves partly agree
    (3, 1.3, 2.8, 0.61, 0.36, False, True),    # LBF seed 4's at 44k: within the noise, but partly reproducible, type-sized
    (3, 5.0, 3.0, 1.00, 1.00, True, False),    # reproducible, beyond the noise maximum but not twice it
    (4, 1.1, 1.0, 1.00, 0.11, False, False),   # C-RWARE(1) seed 1 at 8k per agent: so, but a split within a type
    (3, 2.8, 2.1, 0.69, 0.20, False, False),   # partly reproducible, within twice the noise maximum, a split within a type
    (2, 2.8, 2.1, 0.69, 1.00, False, False),   # K=2 has no size to judge: within twice the noise maximum is too little
    (3, 19.8, 3.7, 0.30, 1.00, False, False),  # the halves disagree: a split of noise
    (3, 19.8, 3.7, 1.00, 1.00, False, False),  # passes: resolved
])
def test_a_finer_k_that_more_data_may_decide(k, separation_, null, stability, relative, unresolved, emerging):
    candidate = Candidate(k, separation_, null, stability, 0.0, relative_effect=relative)
    assert (candidate.unresolved, candidate.emerging) == (unresolved, emerging)


# --- Given K, options and errors -----------------------------------------------------------

def test_given_k_larger_than_agents_raises():
    with pytest.raises(ValueError, match=r"n_clusters=5 is larger than the number of agents \(3\)"):
        run_pretraining(bps((1, 1, 1)), {}, SePSOptions(n_clusters=5, transitions_per_agent=10, progress=False))


def test_given_k_and_degenerate_k_warns():
    result = run_pretraining(bps((2, 2)), {}, SePSOptions(n_clusters=2, **FIXED))
    assert result.clustering.k == 2 and "given" in result.clustering.reason
    with pytest.warns(UserWarning, match="n_clusters=4 with 4 agents gives one module per agent"):
        cluster_agents(result.embeddings, 4)


@pytest.mark.parametrize("options, match", [
    ({"transitions_per_agent": 2}, r"transitions_per_agent=2 is invalid: must be \"auto\" or an integer >= 4"),
    ({"updates": "many"}, r"updates='many' is invalid"),
    ({"max_transitions_per_agent": 500}, r"max_transitions_per_agent=500 is invalid: must be >= first"),
    ({"k_criterion": "gap"}, r"k_criterion='gap' is invalid"),
    ({"resolution": 0}, r"resolution=0 is invalid"),
])
def test_bad_options_are_named(options, match):
    with pytest.raises(ValueError, match=match):
        SePSOptions(**options)


# --- Rollouts --------------------------------------------------------------------------------

def test_rollouts_pad_observations_and_mask_real_entries():
    data = collect_random_rollouts(rllib_creator(ENVIRONMENTS["bps_h_1"]), {},
                                   transitions_per_agent=20, progress=False)
    dims = data.obs_mask.sum(1)
    assert sorted(set(dims.tolist())) == [10, 13, 16]
    assert data.obs.shape[1] == 16
    small = data.agent == 0  # agent_00 sees 10 entries: the rest is padding
    assert np.all(data.obs[small][:, 10:] == 0) and np.all(data.next_obs[small][:, 10:] == 0)
    assert min(data.per_agent_counts().values()) >= 20


def simple_tag(cfg=None):
    from mpe2 import simple_tag_v3

    return SortedParallelEnv(simple_tag_v3.parallel_env(max_cycles=25))


@pytest.mark.parametrize("creator, rare", [
    (rllib_creator(ENVIRONMENTS["lbf"]), True), (rllib_creator(ENVIRONMENTS["crware_1"]), True),
    (simple_tag, True), (spread_box, False), (bps((2, 1)), False),
], ids=["lbf", "crware_1", "simple_tag", "simple_spread_box", "bps"])
def test_rare_rewards_are_told_from_rewards_that_vary(creator, rare):
    """Where some agent's rewards are rare the fit waits longer for a plateau (RARE_REWARD_PATIENCE)."""
    data = collect_random_rollouts(creator, {}, transitions_per_agent=1000, progress=False)
    assert has_rare_rewards(data) == rare, [events.mean() for events in data.reward_events()]


def test_non_multi_agent_env_is_rejected():
    import gymnasium as gym

    with pytest.raises(TypeError, match="needs a multi-agent environment.*CartPoleEnv"):
        collect_random_rollouts(lambda cfg: gym.make("CartPole-v1").unwrapped, {}, progress=False)


def test_rollout_streams_give_the_same_data_wherever_they_run(ray_session):
    runs = [collect_random_rollouts(bps((2, 2)), {}, transitions_per_agent=200, seed=5, streams=2,
                                    remote=remote, progress=False) for remote in (True, True, False)]
    assert min(runs[0].per_agent_counts().values()) >= 200
    for run in runs[1:]:
        for key in ("agent", "obs", "action", "reward", "next_obs", "episodes"):
            np.testing.assert_array_equal(getattr(runs[0], key), getattr(run, key))
    assert rollout_plan("auto", 0.0) == (STREAMS, False)  # one node, little work: in-process
    assert rollout_plan("auto", 100.0) == (STREAMS, True)
    assert rollout_plan(0, 100.0) == (1, False) and rollout_plan(3, 0.0) == (3, True)


def test_box_actions_are_encoded_raw_and_dict_observations_flattened():
    data = collect_random_rollouts(spread_box, {}, transitions_per_agent=50, progress=False)
    assert data.action.shape[1] == 5  # Box(0, 1, (5,)) kept as is, not one-hot
    assert np.all((data.action >= 0) & (data.action <= 1)) and len(np.unique(data.action)) > 100

    import gymnasium as gym

    from rllib_seps.sharing.spaces import flatten_to_vector

    space = gym.spaces.Dict({"pos": gym.spaces.Box(-1, 1, (2,)), "goal": gym.spaces.Discrete(3)})

    class DictObs(BlindParticleSpread):
        def __init__(self, **kw):
            super().__init__((1, 1), **kw)
            self.observation_spaces = {a: space for a in self.possible_agents}

        def _per_agent(self, obs):
            return {a: {"pos": o[2:4].clip(-1, 1), "goal": i % 3} for i, (a, o) in
                    enumerate(zip(self.possible_agents, obs))}

    data = collect_random_rollouts(rllib_creator(DictObs), {}, transitions_per_agent=10, progress=False)
    assert data.obs.shape[1] == 5  # gymnasium's flat layout: one-hot goal (3), then pos (2)
    first = flatten_to_vector({"pos": data.obs[0, 3:], "goal": 0}, space)
    np.testing.assert_array_equal(data.obs[0], first)


# --- Report ----------------------------------------------------------------------------------

def test_report_text_json_and_png(tmp_path):
    result = run_pretraining(bps((2, 2)), {}, SePSOptions(seed=1, **FIXED))
    text = format_report(result)
    assert "cluster_0" in text and "transitions" in text and "updates" in text
    assert "options (others at their defaults): transitions_per_agent=400, updates=300, seed=1" in text
    files = write_report(result, tmp_path)
    assert files["png"].stat().st_size > 1000
    report = json.loads(files["json"].read_text())
    assert report["n_agents"] == 4 and set(report["timings_s"]) >= {"rollouts", "encoder", "clustering"}
    assert report["options"]["transitions_per_agent"] == 400 and report["options"]["seed"] == 1
    assert isinstance(report["confident"], bool) and report["candidates"]


def test_panel_benchmark_reads_and_draws_its_committed_output(tmp_path):
    """The committed panel output parses into every run (a column added to the printout would
    silently drop them all) and draws."""
    benchmark = load_benchmark("pretraining")
    output = ROOT / "docs" / "results" / "pretraining_panel_2026-12-08.txt"
    rows = benchmark.read_rows([output])
    assert len(rows) == 135 and sum(r["ari"] == 1.0 for r in rows) == 131
    assert {r["task"] for r in rows} == set(benchmark.HOMOGENEOUS) | set(benchmark.HETEROGENEOUS)
    assert benchmark.target_seconds("lbf", 12) == 82.0 and benchmark.target_seconds("crware_3", 16) is None
    assert benchmark.plot_rows(rows, tmp_path / "panel.png", "panel").stat().st_size > 10_000
