"""Tests of the padding connectors on real RLlib episodes and batches (no Ray cluster needed)."""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.columns import Columns
from ray.rllib.env.multi_agent_episode import MultiAgentEpisode

from rllib_seps.sharing import spaces as sp
from rllib_seps.rllib.configure import apply_plan
from rllib_seps.rllib.connectors import (
    PadObservations,
    UnpadActions,
    env_to_module_factory,
    module_to_env_factory,
)
from rllib_seps.sharing.layout import CLUSTER_KEY, MASK_KEY, OBS_KEY
from rllib_seps.sharing.plan import build_plan

Box, Discrete, MultiDiscrete = gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiDiscrete

# simple_world_comm_v3's shapes: leader (34,) Discrete(20), adversaries (34,) and good agents (28,)
# Discrete(5); plus "odd", a Discrete observation (one-hot when padded) and actions that start at 1.
OBS = {"leader": Box(-np.inf, np.inf, (34,), np.float32), "adv": Box(-np.inf, np.inf, (34,), np.float32),
       "good": Box(-np.inf, np.inf, (28,), np.float32), "odd": Discrete(6)}
ACT = {"leader": Discrete(20), "adv": Discrete(5), "good": Discrete(5), "odd": Discrete(4, start=1)}


def spaces_dict(spaces: dict) -> gym.spaces.Dict:
    return gym.spaces.Dict(spaces)


def pad_connector(plan) -> PadObservations:
    return PadObservations(spaces_dict({a: p.observation_space for a, p in plan.agents.items()}),
                           spaces_dict({a: p.action_space for a, p in plan.agents.items()}), plan=plan)


def unpad_connector(plan, **kwargs) -> UnpadActions:
    return UnpadActions(spaces_dict({a: p.observation_space for a, p in plan.agents.items()}),
                        spaces_dict({a: p.action_space for a, p in plan.agents.items()}), plan=plan, **kwargs)


def sample_obs(spaces: dict, seed: int = 0) -> dict:
    out = {}
    for i, (agent, space) in enumerate(spaces.items()):
        space.seed(seed + i)
        out[agent] = space.sample()
    return out


@pytest.mark.parametrize("strategy", ["fups", "fups_id"])
def test_padded_observations_lie_in_the_module_space(strategy):
    plan = build_plan(strategy, OBS, ACT)
    connector = pad_connector(plan)
    module_space = plan.modules["shared"].observation_space
    assert connector.observation_space == spaces_dict(dict.fromkeys(sorted(OBS), module_space))
    raw = sample_obs(OBS)
    out = connector.preprocess(raw, None)
    module = plan.modules["shared"]
    parts = {}
    for agent, obs in out.items():
        assert module_space.contains(obs), agent
        own = plan.agents[agent]
        parts[agent], mask, cluster, _ = module.layout.unpack(obs)
        np.testing.assert_array_equal(mask, sp.action_mask(own.action_space, ACT["leader"]))
        assert cluster is None
        expected = sp.pad_observation(raw[agent], own.observation_space, module.layout.observation_space)
        if strategy == "fups_id":
            expected = sp.indicate(expected, own.code.indicator, "one_hot", 4)
        np.testing.assert_array_equal(parts[agent], expected)
    np.testing.assert_array_equal(parts["good"][28:34], 0)  # padded with zeros
    assert parts["odd"][:6].sum() == 1  # Discrete observation as one-hot


def test_plain_modules_pass_through_and_adaps_adds_the_cluster():
    labels = [0, 1, 1, 2]  # adv | good, leader | odd (sorted agents: adv, good, leader, odd)
    plan = build_plan("seps", OBS, ACT, labels)
    # "odd" alone needs no padding, but RLlib's default module cannot read a Discrete observation.
    assert plan.modules["cluster_0"].plain and not plan.modules["cluster_2"].plain
    connector = pad_connector(plan)
    raw = sample_obs(OBS)
    out = connector.preprocess(raw, None)
    assert out["adv"] is raw["adv"] and out["odd"][:6].sum() == 1
    assert connector.observation_space["adv"] == OBS["adv"]
    assert all(plan.modules[m].observation_space.contains(out[a]) for a, m in [("good", "cluster_1"), ("odd", "cluster_2")])
    adaps = build_plan("adaps", OBS, ACT, labels)
    out = pad_connector(adaps).preprocess(raw, None)
    module = adaps.modules["shared"]
    assert {a: int(module.layout.unpack(o).cluster) for a, o in out.items()} == {"adv": 0, "good": 1, "leader": 1, "odd": 2}
    assert all(module.observation_space.contains(o) for o in out.values())


def test_images_are_indicated_per_type():
    image = Box(0, 255, (8, 8, 1), np.uint8)
    plan = build_plan("fups_id", {"p": image, "q": image}, {"p": Discrete(3), "q": Discrete(3)},
                      indication="inversion_replacement")
    raw = sample_obs({"p": image, "q": image})
    out = pad_connector(plan).preprocess(raw, None)
    np.testing.assert_array_equal(out["p"][OBS_KEY], raw["p"])
    np.testing.assert_array_equal(out["q"][OBS_KEY], 255 - raw["q"])


def test_connector_rewrites_episodes_once_per_new_observation():
    plan = build_plan("fups_id", OBS, ACT)
    connector = pad_connector(plan)
    episode = MultiAgentEpisode(observation_space=spaces_dict(OBS), action_space=spaces_dict(ACT))
    episode.add_env_reset(observations=sample_obs(OBS))
    connector(rl_module=None, batch={}, episodes=[episode])
    first = {a: e.get_observations(-1) for a, e in episode.agent_episodes.items()}
    assert all(plan.modules["shared"].observation_space.contains(o) for o in first.values())
    connector(rl_module=None, batch={}, episodes=[episode])  # nothing new: unchanged
    assert all(episode.agent_episodes[a].get_observations(-1) is o for a, o in first.items())
    # Only "adv" and "good" step; the others keep their (already padded) observations.
    actions = {"adv": np.int64(1), "good": np.int64(2)}
    episode.add_env_step(observations=sample_obs({"adv": OBS["adv"], "good": OBS["good"]}, seed=7),
                         actions=actions, rewards={"adv": 0.0, "good": 0.0})
    connector(rl_module=None, batch={}, episodes=[episode])
    for agent, sa_episode in episode.agent_episodes.items():
        assert plan.modules["shared"].observation_space.contains(sa_episode.get_observations(-1)), agent
    assert episode.agent_episodes["leader"].get_observations(-1) is first["leader"]
    # A chunk cut from the episode keeps its packed lookback: nothing is packed twice.
    chunk = episode.cut()
    before = {a: e.get_observations(-1) for a, e in chunk.agent_episodes.items()}
    connector(rl_module=None, batch={}, episodes=[chunk])
    assert all(chunk.agent_episodes[a].get_observations(-1) is o for a, o in before.items())


def test_image_modules_keep_a_dict():
    image = Box(0, 255, (8, 8, 1), np.uint8)
    plan = build_plan("adaps", {"p": image, "q": image}, {"p": Discrete(3), "q": Discrete(2)}, [0, 1])
    connector = pad_connector(plan)
    raw = sample_obs({"p": image, "q": image})
    out = connector.preprocess(raw, None)
    assert set(out["q"]) == {OBS_KEY, MASK_KEY, CLUSTER_KEY} and out["q"][OBS_KEY].dtype == np.uint8
    np.testing.assert_array_equal(out["q"][MASK_KEY], [1, 1, 0])
    assert int(out["q"][CLUSTER_KEY]) == 1
    assert plan.modules["shared"].observation_space.contains(out["q"])


def test_unpad_discrete_adds_start_and_keeps_episode_actions_padded():
    plan = build_plan("fups", OBS, ACT)
    connector = unpad_connector(plan)
    actions = {("e", "leader", "shared"): [np.int64(17)], ("e", "adv", "shared"): [np.int64(4)],
               ("e", "good", "shared"): [np.int64(0)], ("e", "odd", "shared"): [np.int64(3)]}
    batch = connector(rl_module=None, batch={Columns.ACTIONS: actions}, episodes=[])
    env_actions = batch[Columns.ACTIONS_FOR_ENV]
    assert {k[1]: int(v[0]) for k, v in env_actions.items()} == {"leader": 17, "adv": 4, "good": 0, "odd": 4}
    assert all(ACT[k[1]].contains(v[0]) for k, v in env_actions.items())
    assert batch[Columns.ACTIONS] is actions and int(actions[("e", "odd", "shared")][0]) == 3


def test_invalid_action_raises_naming_the_agent():
    plan = build_plan("fups", OBS, ACT)
    connector = unpad_connector(plan)
    actions = {("e", "leader", "shared"): [np.int64(17)], ("e", "adv", "shared"): [np.int64(7)]}
    with pytest.raises(ValueError, match=r"outside the own action space Discrete\(5\) of agents \[\('adv', 7\)\]"):
        connector(rl_module=None, batch={Columns.ACTIONS: actions}, episodes=[])


def test_unpad_multidiscrete_and_box():
    act = {"a": MultiDiscrete([2, 3]), "b": MultiDiscrete([4, 2], start=[1, 0])}
    plan = build_plan("fups", {"a": Box(0, 1, (2,)), "b": Box(0, 1, (2,))}, act)
    out = unpad_connector(plan)(rl_module=None, episodes=[], batch={Columns.ACTIONS: {
        ("e", "a", "shared"): [np.array([1, 2])], ("e", "b", "shared"): [np.array([3, 1])]}})
    assert [v[0].tolist() for v in out[Columns.ACTIONS_FOR_ENV].values()] == [[1, 2], [4, 1]]
    with pytest.raises(ValueError, match="agents \\[\\('a', \\[1, 3\\]\\)\\]"):
        unpad_connector(plan)(rl_module=None, episodes=[], batch={Columns.ACTIONS: {
            ("e", "a", "shared"): [np.array([1, 3])]}})

    act = {"a": Box(0.0, 1.0, (2,), np.float32), "b": Box(-2.0, 2.0, (3,), np.float32),
           "c": Box(-np.inf, np.inf, (1,), np.float32)}
    plan = build_plan("fups", dict.fromkeys(act, Box(0, 1, (2,))), act)
    actions = {("e", "a", "shared"): [np.array([0.0, 3.0, 9.0], np.float32)],
               ("e", "b", "shared"): [np.array([-1.0, 0.5, 5.0], np.float32)],
               ("e", "c", "shared"): [np.array([7.0, 1.0, 1.0], np.float32)]}
    unsquashed = unpad_connector(plan, normalize_actions=True)(
        rl_module=None, episodes=[], batch={Columns.ACTIONS: actions})[Columns.ACTIONS_FOR_ENV]
    clipped = unpad_connector(plan, normalize_actions=False)(
        rl_module=None, episodes=[], batch={Columns.ACTIONS: actions})[Columns.ACTIONS_FOR_ENV]
    as_lists = lambda out: {k[1]: v[0].tolist() for k, v in out.items()}  # noqa: E731
    assert as_lists(unsquashed) == {"a": [0.5, 1.0], "b": [-2.0, 1.0, 2.0], "c": [7.0]}
    assert as_lists(clipped) == {"a": [0.0, 1.0], "b": [-1.0, 0.5, 2.0], "c": [7.0]}
    for out in (unsquashed, clipped):
        assert all(act[k[1]].contains(v[0]) for k, v in out.items())


def test_environment_spaces_that_differ_from_the_plan_raise():
    plan = build_plan("fups", OBS, ACT)
    wrong = dict(OBS, good=Box(-1, 1, (27,), np.float32))
    with pytest.raises(ValueError, match=r"Agent 'good' has observation space Box\(-1.0, 1.0, \(27,\), float32\) in "
                                         r"the environment but Box\(-inf, inf, \(28,\), float32\) in the sharing plan"):
        PadObservations(spaces_dict(wrong), spaces_dict(ACT), plan=plan)
    with pytest.raises(ValueError, match="Agent 'stranger' of the environment is not in the sharing plan"):
        UnpadActions(spaces_dict(OBS), spaces_dict(dict(ACT, stranger=Discrete(2))), plan=plan)


def test_factories_use_rllib_signatures_and_pickle():
    plan = build_plan("fups_id", OBS, ACT)
    to_module = pickle.loads(pickle.dumps(env_to_module_factory(plan)))
    to_env = pickle.loads(pickle.dumps(module_to_env_factory(plan, normalize_actions=False)))
    (pad,) = to_module(None, None, None)
    (unpad,) = to_env(None, None)
    assert isinstance(pad, PadObservations) and isinstance(unpad, UnpadActions)
    assert not unpad.normalize_actions


def test_apply_plan_hands_action_normalisation_to_the_unpad_connector():
    plan = build_plan("fups", OBS, ACT)
    config = PPOConfig().environment(normalize_actions=True, clip_actions=True)
    config = apply_plan(config, plan)
    assert not config.normalize_actions and not config.clip_actions
    pipeline = config.build_module_to_env_connector(spaces={"__env_single__": (spaces_dict(OBS), spaces_dict(ACT))})
    (unpad,) = [c for c in pipeline.connectors if isinstance(c, UnpadActions)]
    assert unpad.normalize_actions and unpad.clip_actions


def test_plain_agents_get_rllib_normalisation_from_the_unpad_connector():
    act = {"a": Box(0.0, 2.0, (2,), np.float32), "b": Box(0.0, 2.0, (2,), np.float32),
           "c": Discrete(3), "d": Discrete(4)}
    plan = build_plan("seps", dict.fromkeys(act, Box(0, 1, (2,))), act, labels=[0, 0, 1, 1])
    assert plan.modules["cluster_0"].plain and not plan.modules["cluster_1"].plain
    actions = {("e", "a", "cluster_0"): [np.array([0.0, 5.0], np.float32)],
               ("e", "c", "cluster_1"): [np.int64(2)]}
    for normalize, clip, expected in [(True, False, [1.0, 2.0]), (False, True, [0.0, 2.0]), (False, False, [0.0, 5.0])]:
        out = unpad_connector(plan, normalize_actions=normalize, clip_actions=clip)(
            rl_module=None, episodes=[], batch={Columns.ACTIONS: dict(actions)})[Columns.ACTIONS_FOR_ENV]
        assert out[("e", "a", "cluster_0")][0].tolist() == expected
        assert int(out[("e", "c", "cluster_1")][0]) == 2
