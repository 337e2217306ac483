"""AdaPS (issue #4): masks from cluster centres, masked modules, and PPO (two learners: test_learners.py).

Pure mask tests need neither Ray nor torch; module tests build modules without Ray; the end-to-end
tests train real PPO on tiny budgets (one local EnvRunner, 200-step train batches).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns

from rllib_seps import SePSOptions, with_sharing
from rllib_seps.sharing.adaps import (
    adaps_model_config,
    cluster_masks,
    format_mask_report,
    mask_report,
    masks_for_module,
)
from rllib_seps.rllib.configure import apply_plan, env_creator_of, env_spaces
from rllib_seps.rllib.modules import SharedActorCriticModule, padded_module_spec
from rllib_seps.pretraining.report import format_report
from rllib_seps.sharing.plan import build_plan
from tests.conftest import batch_of, quick_ppo_config

pytestmark = pytest.mark.filterwarnings("ignore:.*Overriding environment rllib-multi-agent-env-v0")

CENTRES = np.array([[1.5, 2.3, -0.7, -0.8, 2.2], [3.5, 0.2, -0.6, 1.5, 1.4], [2.0, 1.0, 0.5, 0.0, 1.0]])
QUICK_PRETRAINING = {"progress": False}  # the automatic budget: 500 transitions were too few to be sure


# ------------------------------------------------------------------ masks (pure numpy)


def test_masks_are_seeded_bool_rows_that_differ_between_clusters():
    masks = cluster_masks(CENTRES, [64, 32], drop_threshold=0.5, seed=3)
    assert [m.shape for m in masks] == [(3, 64), (3, 32)] and all(m.dtype == bool for m in masks)
    again = cluster_masks(CENTRES, [64, 32], drop_threshold=0.5, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(masks, again))
    other_seed = cluster_masks(CENTRES, [64, 32], drop_threshold=0.5, seed=4)
    assert not all(np.array_equal(a, b) for a, b in zip(masks, other_seed))
    flat = np.concatenate(masks, axis=1)
    assert len({row.tobytes() for row in flat}) == 3  # every cluster its own sub-network
    # Only the centres' relative positions matter, not the encoder's offset and scale.
    shifted = cluster_masks(3.0 * CENTRES + 7.0, [64, 32], drop_threshold=0.5, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(masks, shifted))


def test_density_follows_the_drop_threshold_and_no_layer_is_left_empty():
    centres = np.random.default_rng(0).normal(size=(4, 5))
    density = {lam: np.concatenate(cluster_masks(centres, [1000], drop_threshold=lam, seed=0)).mean()
               for lam in (0.3, 0.5, 0.7)}
    assert density[0.3] > density[0.5] > density[0.7]
    assert 0.4 < density[0.5] < 0.6
    with pytest.warns(UserWarning, match="identical masks over 16 units at drop threshold 0.999"):
        strict = cluster_masks(centres, [8, 8], drop_threshold=0.999, seed=0)
    assert all(m.sum(axis=1).min() >= 1 for m in strict)


def test_one_cluster_and_coinciding_centres():
    (single,) = cluster_masks(CENTRES[:1], [50], drop_threshold=0.5, seed=0)
    assert single.shape == (1, 50) and 0 < single.sum() < 50
    with pytest.warns(UserWarning, match=r"clusters \[\(0, 1\)\] got identical masks over 16 units"):
        cluster_masks(np.ones((2, 5)), [16], drop_threshold=0.5, seed=0)


def test_bad_mask_arguments_are_named():
    with pytest.raises(ValueError, match=r"drop_threshold=1.5 is invalid: it must lie in \(0, 1\)"):
        cluster_masks(CENTRES, [8], drop_threshold=1.5, seed=0)
    with pytest.raises(ValueError, match=r"finite \(K, m\) array .* got shape \(5,\)"):
        cluster_masks(CENTRES[0], [8], drop_threshold=0.5, seed=0)
    with pytest.raises(ValueError, match=r"masked_layers=\[2\] do not fit a network of 2 hidden layer"):
        masks_for_module(adaps_model_config(masked_layers=[2]), 3, [8, 8])
    with pytest.raises(ValueError, match=r"3 clusters but .*'adaps_centres'\] holds centres of shape \(2, 5\)"):
        masks_for_module(adaps_model_config(centres=CENTRES[:2]), 3, [8, 8])


def test_mask_report_lists_density_and_jaccard_overlap():
    layer0 = np.array([[1, 1, 0, 0], [1, 0, 1, 0]], bool)
    layer1 = np.array([[1, 1], [1, 1]], bool)
    report = mask_report([layer0, None, layer1])
    assert report["n_clusters"] == 2
    assert [(l["layer"], l["units"]) for l in report["layers"]] == [(0, 4), (2, 2)]
    assert report["layers"][0]["density"] == [0.5, 0.5]
    assert report["layers"][0]["overlap"] == [[1.0, 0.3333], [0.3333, 1.0]]  # 1 shared of 3 used
    assert report["density"] == [round(4 / 6, 4), round(4 / 6, 4)]
    assert report["overlap"][0][1] == 0.6  # 3 shared of 5 used
    text = format_mask_report(report)
    assert "cluster 1: density 0.67 (layer 0 0.50, layer 2 1.00)" in text
    assert "overlap (Jaccard) 0-1: 0.60" in text


def test_adaps_options_are_validated():
    assert SePSOptions(adaps_masked_layers=[0, 1]).adaps_masked_layers == (0, 1)
    with pytest.raises(ValueError, match=r"adaps_drop_threshold=0 is invalid: must lie in \(0, 1\)"):
        SePSOptions(adaps_drop_threshold=0)
    with pytest.raises(ValueError, match=r"adaps_masked_layers='first' is invalid"):
        SePSOptions(adaps_masked_layers="first")
    with pytest.raises(ValueError, match=r"adaps_masked_layers=\[-1\] is invalid"):
        SePSOptions(adaps_masked_layers=[-1])


# ------------------------------------------------------------------ the masked module (no Ray)

# Three agents, two observation sizes and two action spaces; a and b form cluster 0, c cluster 1.
OBS = {a: gym.spaces.Box(-1.0, 1.0, (n,), np.float32) for a, n in (("a", 4), ("b", 4), ("c", 7))}
ACT = {"a": gym.spaces.Discrete(3), "b": gym.spaces.Discrete(3), "c": gym.spaces.Discrete(6)}
LABELS = [0, 0, 1]


def adaps_module(model_config=None, labels=LABELS, centres=CENTRES[:2]):
    plan = build_plan("adaps", OBS, ACT, labels, centres=centres)
    config = {"fcnet_hiddens": [16, 12], **adaps_model_config(centres=centres), **(model_config or {})}
    return padded_module_spec(plan.modules["shared"], config).build(), plan


def test_masks_are_buffers_equal_within_a_cluster_and_never_parameters():
    module, _ = adaps_module()
    expected = masks_for_module(adaps_model_config(centres=CENTRES[:2]), 2, [16, 12])
    state = module.state_dict()
    for body in ("actor_body", "critic_body"):
        for layer, mask in enumerate(expected):
            assert torch.equal(state[f"{body}.mlp.cluster_mask_{layer}"], torch.as_tensor(mask))
    assert not any("mask" in name for name, _ in module.named_parameters())
    # The mask of each sample is its cluster's row: a and b (cluster 0) alike, c (cluster 1) not.
    mlp = module.actor_body.mlp
    rows = mlp.hidden_mask(0, torch.tensor([0, 0, 1]))
    assert torch.equal(rows[0], rows[1]) and not torch.equal(rows[0], rows[2])
    assert mlp.hidden_mask(0, None) is None


def test_a_batch_mixing_clusters_is_one_forward_pass_equal_to_per_cluster_passes():
    module, plan = adaps_module()
    agents = ["a", "c", "b", "c", "a"]
    batch = batch_of(plan, agents)
    calls = []
    module.actor_body.mlp.layers[0].register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        mixed = module.forward_train(batch)
        values = module.compute_values(batch)
    assert len(calls) == 1  # the actor's first layer ran once, for all five samples
    for cluster in (0, 1):
        rows = [i for i, a in enumerate(agents) if LABELS["abc".index(a)] == cluster]
        sub = {Columns.OBS: batch[Columns.OBS][rows]}
        with torch.no_grad():
            alone = module.forward_train(sub)
            logits = mixed[Columns.ACTION_DIST_INPUTS][rows]
            torch.testing.assert_close(alone[Columns.ACTION_DIST_INPUTS], logits)
            torch.testing.assert_close(module.compute_values(sub), values[rows])
    # Masked units are silent: the last hidden layer's features are 0 outside each sample's mask.
    features = mixed[Columns.EMBEDDINGS]  # critic features
    off = ~module.critic_body.mlp.hidden_mask(1, plan.modules["shared"].layout.unpack(batch[Columns.OBS]).cluster)
    assert off.any() and torch.all(features[off] == 0)


def test_masking_only_the_first_layer():
    module, _ = adaps_module({"adaps_masked_layers": [0]})
    names = [k for k in module.state_dict() if "cluster_mask" in k]
    assert names == ["actor_body.mlp.cluster_mask_0", "critic_body.mlp.cluster_mask_0"]
    assert module.actor_body.mlp.hidden_mask(1, torch.tensor([0, 1])) is None


def test_plan_without_centres_gets_equidistant_centres():
    plan = build_plan("adaps", OBS, ACT, LABELS)
    module = padded_module_spec(plan.modules["shared"], {"fcnet_hiddens": [16]}).build()
    expected = masks_for_module({}, 2, [16])[0]
    assert torch.equal(module.actor_body.mlp.cluster_mask_0, torch.as_tensor(expected))
    with pytest.raises(ValueError, match="one centre of one size per cluster"):
        build_plan("adaps", OBS, ACT, LABELS, centres=CENTRES)


def test_adaps_has_as_many_trainable_parameters_as_fups():
    config = quick_ppo_config("bps_1")
    obs, act = env_spaces(env_creator_of(config), config.env_config)
    labels = [i // 5 for i in range(15)]
    # {}: both sides on their defaults (RLlib's widths, PPO's separate critic).
    for model_config in ({}, {"fcnet_hiddens": [64, 64]}, {"fcnet_hiddens": [32], "vf_share_layers": True}):
        counts = {}
        for strategy in ("fups", "adaps"):
            plan = build_plan(strategy, obs, act, labels=labels if strategy == "adaps" else None)
            built = apply_plan(config, plan, {**model_config, **adaps_model_config()})
            module_plan = plan.modules["shared"]
            spec = built.get_multi_rl_module_spec(
                spaces={"shared": (module_plan.observation_space, module_plan.action_space)})
            module = spec.rl_module_specs["shared"].build()
            assert isinstance(module, SharedActorCriticModule) == (strategy == "adaps")
            counts[strategy] = sum(p.numel() for p in module.parameters() if p.requires_grad)
        assert counts["adaps"] == counts["fups"], (model_config, counts)


# ------------------------------------------------------------------ PPO end to end


def learner_module(algo, module_id="shared"):
    return algo.learner_group._learner.module[module_id]


def test_ppo_trains_adaps_on_bps1_and_never_trains_the_masks(ray_session):
    config, result = with_sharing(quick_ppo_config("bps_1", max_cycles=25),
                                  {"strategy": "adaps", "execution": "modules", **QUICK_PRETRAINING})
    report = result.summary()["adaps_masks"]
    assert report["n_clusters"] == result.clustering.k >= 2
    assert all(0 < d < 1 for d in report["density"]) and report["overlap"][0][1] < 1
    assert "AdaPS masks:" in format_report(result)
    algo = config.build_algo()
    try:
        before = {k: v.clone() for k, v in learner_module(algo).state_dict().items()}
        algo.train()
        after = learner_module(algo).state_dict()
        masks = [k for k in before if "cluster_mask" in k]
        assert len(masks) == 4 and all(torch.equal(before[k], after[k]) for k in masks)
        assert any(not torch.equal(before[k], after[k]) for k in before if k not in masks)
        # The EnvRunner's (inference-only) module samples with the same masks.
        runner = algo.env_runner.module["shared"].state_dict()
        assert torch.equal(runner["actor_body.mlp.cluster_mask_1"], after["actor_body.mlp.cluster_mask_1"])
    finally:
        algo.stop()


def test_ppo_trains_adaps_on_simple_world_comm(ray_session):
    """Six agents with four observation sizes and two action spaces: padding plus masks."""
    config, result = with_sharing(quick_ppo_config("simple_world_comm", max_cycles=25),
                                  {"strategy": "adaps", "execution": "modules", "n_clusters": 2, "adaps_masked_layers": [0],
                                   **QUICK_PRETRAINING})
    assert set(config.policies) == {"shared"}
    algo = config.build_algo()
    try:
        metrics = algo.train()
        assert "shared" in metrics["learners"]
        module = learner_module(algo)
        assert module.actor_body.mlp.cluster_mask_0.shape == (2, module.actor_body.mlp.layers[0].out_features)
        assert not hasattr(module.actor_body.mlp, "cluster_mask_1")
    finally:
        algo.stop()


@pytest.mark.slow
def test_appo_trains_adaps_and_its_target_network_keeps_the_masks(ray_session):
    from ray.rllib.algorithms.appo import APPOConfig

    config = (APPOConfig().environment("bps_1", env_config={"max_cycles": 25})
              .env_runners(num_env_runners=1, num_cpus_per_env_runner=1)
              .learners(num_learners=0)  # a local learner, whose module the test reads
              .training(train_batch_size_per_learner=200))
    obs, act = env_spaces(env_creator_of(config), config.env_config)
    plan = build_plan("adaps", obs, act, labels=[i // 5 for i in range(15)])
    algo = apply_plan(config, plan, {"fcnet_hiddens": [32, 32], **adaps_model_config()}).build_algo()
    try:
        module = learner_module(algo)
        before = {k: v.clone() for k, v in module.state_dict().items()}
        trained = 0
        for _ in range(10):  # APPO learns asynchronously: the first iterations may only sample
            metrics = algo.train()
            trained = metrics.get("learners", {}).get("shared", {}).get("num_module_steps_trained_lifetime", 0)
            if trained:
                break
        assert trained > 0
        after = module.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before if "cluster_mask" in k)
        assert any(not torch.equal(before[k], after[k]) for k in before if "cluster_mask" not in k)
        assert torch.equal(module._target_actor_body.mlp.cluster_mask_1, module.actor_body.mlp.cluster_mask_1)
    finally:
        algo.stop()
