"""Tests of SharedActorCriticModule: masking in every forward path, shapes, bodies, sizes, errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import TARGET_NETWORK_ACTION_DIST_INPUTS

from rllib_seps.rllib.modules import ConvStack, MaskableMLP, SharedActorCriticModule, padded_module_spec
from rllib_seps.sharing.layout import OBS_KEY
from rllib_seps.sharing.plan import build_plan
from tests.conftest import batch_of

Box, Discrete, MultiDiscrete = gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiDiscrete


def vec(n: int) -> Box:
    return Box(-1.0, 1.0, (n,), np.float32)


def make_module(strategy, obs, act, labels=None, model_config=None, **plan_kwargs):
    """The module of a one-module plan, and that plan."""
    plan = build_plan(strategy, obs, act, labels, **plan_kwargs)
    (module_plan,) = plan.modules.values()
    return padded_module_spec(module_plan, model_config or {}).build(), plan


def masks_of(batch: dict, plan) -> torch.Tensor:
    (module_plan,) = plan.modules.values()
    return module_plan.layout.unpack(batch[Columns.OBS]).action_mask.bool()


# Three agents, two observation sizes, Discrete(3) / Discrete(3) / Discrete(6).
OBS = {"a": vec(4), "b": vec(4), "c": vec(7)}
ACT = {"a": Discrete(3), "b": Discrete(3), "c": Discrete(6)}
MIXED = ["a", "b", "c", "c", "a", "c"]


def bias_towards_padding(head: torch.nn.Linear, big: float = 50.0) -> None:
    """Makes padded actions (3 and up) the most likely ones, if the mask did not remove them."""
    with torch.no_grad():
        head.bias[3:] += big


def test_masked_actions_have_zero_probability_in_every_forward_path():
    module, plan = make_module("fups_id", OBS, ACT)
    bias_towards_padding(module.pi)
    batch = batch_of(plan, MIXED)
    mask = masks_of(batch, plan)
    outputs = {
        "inference": module.forward_inference(batch),
        "exploration": module.forward_exploration(batch),
        "train": module.forward_train(batch),
    }
    for path, out in outputs.items():
        dist_cls = {"inference": module.get_inference_action_dist_cls,
                    "exploration": module.get_exploration_action_dist_cls,
                    "train": module.get_train_action_dist_cls}[path]()
        dist = dist_cls.from_logits(out[Columns.ACTION_DIST_INPUTS])
        probs = torch.softmax(out[Columns.ACTION_DIST_INPUTS], dim=-1)
        assert torch.all(probs[~mask] == 0), path
        assert torch.allclose(probs.sum(-1), torch.ones(len(MIXED))), path
        samples = torch.stack([dist.sample() for _ in range(200)])  # (200, B)
        assert torch.all(mask.gather(1, samples.T)), f"{path}: a padded action was sampled"
        greedy = dist.to_deterministic().sample()
        assert torch.all(mask.gather(1, greedy[:, None])), path
        logp = dist.logp(torch.full((len(MIXED),), 5))  # action 5 exists only for agent c
        assert torch.all(torch.isfinite(logp[mask[:, 5]])) and torch.all(logp[~mask[:, 5]] < -1e30)


def test_training_loss_gives_no_gradient_through_masked_logits():
    module, plan = make_module("fups_id", OBS, ACT)
    batch = batch_of(plan, ["a", "b", "a"])  # only agents with 3 valid actions
    out = module.forward_train(batch)
    dist = module.get_train_action_dist_cls().from_logits(out[Columns.ACTION_DIST_INPUTS])
    loss = -(dist.logp(torch.tensor([0, 1, 2])).sum() + dist.entropy().sum())
    loss.backward()
    assert torch.all(module.pi.weight.grad[3:] == 0) and torch.all(module.pi.bias.grad[3:] == 0)
    assert torch.any(module.pi.weight.grad[:3] != 0)


def test_multidiscrete_components_are_masked_separately():
    obs = {"a": vec(3), "b": vec(5)}
    act = {"a": MultiDiscrete([2, 4]), "b": MultiDiscrete([3, 2])}
    module, plan = make_module("fups", obs, act)
    assert module.action_space == MultiDiscrete([3, 4])
    with torch.no_grad():
        module.pi.bias += 50.0 * torch.tensor([0, 0, 1, 0, 0, 1, 1])  # favour padded entries
    batch = batch_of(plan, ["a", "b", "a", "b"])
    for forward in (module.forward_inference, module.forward_exploration, module.forward_train):
        logits = forward(batch)[Columns.ACTION_DIST_INPUTS]
        dist = module.get_inference_action_dist_cls().from_logits(logits)
        samples = torch.stack([dist.sample() for _ in range(200)])  # (200, B, 2)
        own = torch.tensor([[2, 4], [3, 2], [2, 4], [3, 2]])
        assert torch.all(samples < own) and torch.all(dist.to_deterministic().sample() < own)


def test_box_padded_dimensions_are_pinned_and_get_no_gradient():
    obs = {"a": vec(3), "b": vec(5)}
    act = {"a": Box(-1.0, 1.0, (2,), np.float32), "b": Box(-2.0, 2.0, (4,), np.float32)}
    module, plan = make_module("fups", obs, act)
    with torch.no_grad():
        module.pi.log_std += 0.7
    batch = batch_of(plan, ["a", "b"])
    out = module.forward_train(batch)[Columns.ACTION_DIST_INPUTS]
    assert out.shape == (2, 8)
    mean, log_std = out.chunk(2, dim=-1)
    assert torch.all(mean[0, 2:] == 0) and torch.all(log_std[0, 2:] == 0)  # N(0, 1) on padding
    assert torch.allclose(log_std[0, :2], torch.full((2,), 0.7)) and torch.allclose(log_std[1], torch.full((4,), 0.7))
    dist = module.get_train_action_dist_cls().from_logits(out)
    actions = dist.sample()
    logp_padding = torch.distributions.Normal(mean[0, 2:], log_std[0, 2:].exp()).log_prob(actions[0, 2:]).sum()
    logp_padding.backward()
    assert all(p.grad is None or torch.all(p.grad == 0) for p in module.parameters())


def test_value_has_shape_b_with_and_without_embeddings():
    for model_config in ({}, {"vf_share_layers": True}):
        module, plan = make_module("fups_id", OBS, ACT, model_config=model_config)
        batch = batch_of(plan, MIXED)
        values = module.compute_values(batch)
        assert values.shape == (len(MIXED),)
        out = module.forward_train(batch)
        assert torch.allclose(module.compute_values(batch, out[Columns.EMBEDDINGS]), values)
        assert (module.critic_body is None) == bool(model_config)


def test_parameter_counts_follow_the_spaces():
    hiddens = [32, 16]
    module, _ = make_module("fups_id", OBS, ACT, model_config={"fcnet_hiddens": hiddens})
    inputs = 7 + 3  # largest observation + one-hot over three agents
    body = (inputs * 32 + 32) + (32 * 16 + 16)
    assert sum(p.numel() for p in module.actor_body.parameters()) == body
    assert sum(p.numel() for p in module.critic_body.parameters()) == body
    assert sum(p.numel() for p in module.pi.parameters()) == 16 * 6 + 6
    assert sum(p.numel() for p in module.vf.parameters()) == 16 + 1
    assert sum(p.numel() for p in module.parameters()) == 2 * body + (16 * 6 + 6) + 17
    assert isinstance(module.actor_body.mlp, MaskableMLP)
    assert isinstance(module.actor_body.mlp.layers, torch.nn.ModuleList)


def test_images_get_a_cnn_and_scaled_pixels():
    image = Box(0, 255, (20, 20, 2), np.uint8)
    module, plan = make_module("fups_id", {"p": image, "q": image}, {"p": Discrete(3), "q": Discrete(3)},
                               indication="geometric",
                               model_config={"conv_filters": [[8, 4, 2], [8, 3, 2]], "fcnet_hiddens": [16]})
    body = module.actor_body
    assert body.is_image and isinstance(body.conv, ConvStack)
    assert body.conv.layers[0].in_channels == 3  # 2 channels + the geometric indicator plane
    assert body.conv.out_size == 8 * 4 * 4  # 20 -> 9 -> 4
    assert body.mlp.layers[0].in_features == 128
    assert float(body.obs_scale.max()) == pytest.approx(1 / 255)
    batch = batch_of(plan, ["p", "q", "p"])
    assert batch[Columns.OBS][OBS_KEY].dtype == torch.uint8
    assert module.forward_exploration(batch)[Columns.ACTION_DIST_INPUTS].shape == (3, 3)
    assert module.compute_values(batch).shape == (3,)
    # Buffers derived from the space are not part of the state that RLlib syncs.
    assert not any("obs_low" in key or "obs_scale" in key for key in module.state_dict())


def test_conv_filters_that_leave_nothing_raise():
    with pytest.raises(ValueError, match=r"leave nothing of images of shape \(6, 6, 1\)"):
        ConvStack((6, 6, 1), [[8, 4, 2], [8, 4, 2]], "relu")


def test_adaps_cluster_reaches_the_mask_hook():
    module, plan = make_module("adaps", OBS, ACT, labels=[0, 0, 1])
    assert module.n_clusters == 2 and module.observation_space.shape == (7 + 6 + 1,)
    seen = []
    module.actor_body.mlp.hidden_mask = lambda layer, cluster: seen.append((layer, cluster.tolist()))
    module.forward_exploration(batch_of(plan, ["a", "c", "b"]))
    assert seen == [(0, [0, 1, 0]), (1, [0, 1, 0])]


def test_target_networks_are_masked_too():
    module, plan = make_module("fups_id", OBS, ACT)
    module.make_target_networks()
    bias_towards_padding(module._target_pi)
    batch = batch_of(plan, MIXED)
    logits = module.forward_target(batch)[TARGET_NETWORK_ACTION_DIST_INPUTS]
    assert torch.all(torch.softmax(logits, -1)[~masks_of(batch, plan)] == 0)
    assert [main for main, _ in module.get_target_network_pairs()] == [module.actor_body, module.pi]


def test_inference_only_module_has_no_critic():
    plan = build_plan("fups_id", OBS, ACT)
    spec = padded_module_spec(plan.modules["shared"], {})
    spec.inference_only = True
    module = spec.build()
    assert not hasattr(module, "critic_body") and not hasattr(module, "vf")
    learner_module = padded_module_spec(plan.modules["shared"], {}).build()
    state = learner_module.get_state(inference_only=True)
    assert not any(key.startswith(("critic_body", "vf")) for key in state)
    module.set_state(state)


def test_module_without_its_layout_or_with_other_spaces_raises():
    with pytest.raises(ValueError, match=r"needs the InputLayout of its input in model_config\['seps_input_layout'\]"):
        SharedActorCriticModule(observation_space=vec(3), action_space=Discrete(3), model_config={})
    plan = build_plan("fups_id", OBS, ACT)
    spec = padded_module_spec(plan.modules["shared"], {})
    with pytest.raises(ValueError, match="but its layout has"):
        SharedActorCriticModule(observation_space=vec(3), action_space=spec.action_space,
                                model_config=spec.model_config)


def test_model_config_keys_the_module_would_ignore_are_named():
    plan = build_plan("fups_id", OBS, ACT)
    padded_module_spec(plan.modules["shared"], {"use_lstm": False, "fcnet_hiddens": [8]})  # defaults pass
    with pytest.raises(ValueError, match=r"model_config use_lstm=True is not supported"):
        padded_module_spec(plan.modules["shared"], {"use_lstm": True})
    with pytest.raises(ValueError, match=r"Unknown model_config key 'fcnet_hidens'. Did you mean 'fcnet_hiddens'"):
        padded_module_spec(plan.modules["shared"], {"fcnet_hidens": [8]})


def test_unsupported_action_space_raises():
    with pytest.raises(TypeError, match=r"supports Discrete, MultiDiscrete and 1-D Box action spaces, got Tuple"):
        SharedActorCriticModule(observation_space=vec(4), model_config={},
                                action_space=gym.spaces.Tuple([Discrete(2), Discrete(2)]))
