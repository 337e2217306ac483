"""Errors before any work, naming what is at fault and the fix; nothing silent during training."""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest
from mpe2 import simple_speaker_listener_v4
from ray.rllib.algorithms.bc import BCConfig
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.env.multi_agent_env import MultiAgentEnv
from ray.tune.registry import register_env

from rllib_seps import AgentToModuleMapping, SePSCallback, SePSOptions, with_sharing
from rllib_seps.rllib.internals import custom_connectors
from tests.conftest import SpacesEnv, TwoTypeEnv, quick_ppo_config

QUICK = dict(progress=False, transitions_per_agent=200, updates=200, seed=0)
VECTOR = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)


def spaces_config(observation_spaces: dict, action_space: gym.Space = gym.spaces.Discrete(2), **env_config):
    env_config = {"observation_spaces": observation_spaces,
                  "action_spaces": dict.fromkeys(observation_spaces, action_space), **env_config}
    return PPOConfig().environment(SpacesEnv, env_config=env_config)


def refused_before_pretraining(config, options: dict, error: type, match: str) -> None:
    """Asserts that with_sharing raises ``error`` matching ``match`` before stepping any env."""
    steps = SpacesEnv.steps_taken + TwoTypeEnv.steps_taken
    with pytest.raises(error, match=match):
        with_sharing(config, options)
    assert SpacesEnv.steps_taken + TwoTypeEnv.steps_taken == steps, "it pretrained first"


def test_mapping_is_small_picklable_keeps_id_types_and_names_unknown_agents():
    mapping = AgentToModuleMapping({"b": "cluster_1", "a": "cluster_0"})
    clone = pickle.loads(pickle.dumps(mapping))
    assert clone == mapping and clone("a") == "cluster_0" and clone("b", None, worker=None) == "cluster_1"
    assert len(pickle.dumps(mapping)) < 500
    with pytest.raises(ValueError, match=r"no module for agent 'zed'.*knows 2 agents: \['a', 'b'\]"):
        mapping("zed")
    assert AgentToModuleMapping({10: "x", 2: "y"})(2) == "y"  # int ids stay ints


def test_wrong_option_types_are_named_before_anything_runs():
    message = r"SePS option transitions_per_agent='1000' has type str; it must be \"auto\" or an integer. Fix: write " \
              r"transitions_per_agent=1000, without quotes"
    with pytest.raises(TypeError, match=message):
        SePSCallback.with_options(transitions_per_agent="1000")
    refused_before_pretraining(PPOConfig().environment(TwoTypeEnv), {"transitions_per_agent": "1000"},
                               TypeError, message)
    with pytest.raises(TypeError, match=r"SePS option progress=1 has type int; it must be a bool"):
        SePSOptions(progress=1)
    with pytest.raises(ValueError, match="Unknown SePS option 'n_cluster'. Did you mean 'n_clusters'"):
        SePSOptions.from_dict({"n_cluster": 3})


def test_more_clusters_than_agents_is_refused_before_pretraining():
    refused_before_pretraining(PPOConfig().environment(TwoTypeEnv), {"n_clusters": 5, **QUICK}, ValueError,
                               r"n_clusters=5 is larger than the number of agents \(4\).*Fix: n_clusters <= 4")


@pytest.mark.parametrize(("observation", "action", "error", "match"), [
    (gym.spaces.Text(5), gym.spaces.Discrete(2), TypeError,
     r"Agent 'talker' has observation space Text\(1, 5, .*\) \(Text\), which cannot be padded"),
    (VECTOR, gym.spaces.Tuple([gym.spaces.Discrete(2)] * 2), TypeError,
     r"Agent 'talker' has action space Tuple\(Discrete\(2\), Discrete\(2\)\) \(Tuple\); action padding supports"),
    (gym.spaces.Dict({"x": VECTOR, "action_mask": gym.spaces.MultiBinary(3)}), gym.spaces.Discrete(2), ValueError,
     r"Agent 'talker' observes an 'action_mask' MultiBinary\(3\), which does not give one entry for each of the 2 "
     r"actions of Discrete\(2\)"),
], ids=["text-observation", "tuple-action", "action-mask-of-other-size"])
def test_unsupported_spaces_are_refused_before_pretraining(observation, action, error, match):
    config = spaces_config({"listener": VECTOR, "talker": observation})
    config.env_config["action_spaces"]["talker"] = action
    refused_before_pretraining(config, {"strategy": "seps", **QUICK}, error, match)


class OwnModule(DefaultPPOTorchRLModule):
    """A module class of the user's own."""


@pytest.mark.parametrize(("spec", "match"), [
    (MultiRLModuleSpec(rl_module_specs={"shared": RLModuleSpec(module_class=OwnModule)}),
     r"Module 'shared' of this config is a OwnModule, but rllib-seps builds every module itself.*"
     r"Fix: leave module_class out"),
    (RLModuleSpec(module_class=OwnModule), r"Module '\(every module\)' of this config is a OwnModule"),
    (MultiRLModuleSpec(rl_module_specs={"shared": RLModuleSpec(model_config={"fcnet_hiddens": [8]})}),
     r"Module 'shared' of this config sets its own model_config \{'fcnet_hiddens': \[8\]\}.*Fix: set it "
     r"for every module with config.rl_module\(model_config=...\)"),
], ids=["own-class", "own-class-every-module", "own-model-config"])
def test_module_specs_the_shared_config_would_drop_are_refused_before_pretraining(spec, match):
    config = PPOConfig().environment(TwoTypeEnv).rl_module(rl_module_spec=spec)
    refused_before_pretraining(config, {"strategy": "seps", **QUICK}, ValueError, match)


def test_the_algorithms_own_module_class_and_the_config_wide_model_config_are_taken():
    kept = MultiRLModuleSpec(rl_module_specs={"shared": RLModuleSpec(module_class=DefaultPPOTorchRLModule)})
    config = PPOConfig().environment(TwoTypeEnv).rl_module(rl_module_spec=kept, model_config={"fcnet_hiddens": [8]})
    shared, _ = with_sharing(config, {"strategy": "fups"})
    assert shared.model_config["fcnet_hiddens"] == [8]


def test_modules_left_out_of_training_are_refused_before_pretraining():
    frozen = PPOConfig().environment(TwoTypeEnv).multi_agent(policies={"a", "b"}, policies_to_train=["a"],
                                                              policy_mapping_fn=lambda aid, *args, **kwargs: "a")
    refused_before_pretraining(frozen, {"strategy": "seps", **QUICK}, ValueError,
                               r"This config trains only some of its modules \(policies_to_train=\['a'\]\).*"
                               r"Fix: leave policies_to_train out")


@pytest.mark.parametrize(("observation_spaces", "strategy"), [
    ({"a": VECTOR, "b": gym.spaces.Box(-1.0, 1.0, (5,), np.float32)}, "fups"),  # padding
    (dict.fromkeys("ab", gym.spaces.Dict({"x": VECTOR})), "seps"),  # a space the default module cannot read
], ids=["padding", "dict"])
def test_connectors_the_padding_connectors_would_replace_are_refused_before_pretraining(observation_spaces,
                                                                                         strategy):
    config = spaces_config(observation_spaces).env_runners(env_to_module_connector=lambda *args: [])
    refused_before_pretraining(config, {"strategy": strategy, **QUICK}, ValueError,
                               r"This config sets its own env_to_module_connector, but agents \['a', 'b'\] get "
                               r"their input through rllib-seps's padding connectors.*Fix: do its work in an env "
                               r"wrapper")


@pytest.mark.filterwarnings("ignore:n_clusters=2 with 2 agents")
def test_connectors_of_modules_that_need_no_padding_are_kept():
    config = spaces_config(dict.fromkeys("ab", VECTOR)).env_runners(env_to_module_connector=lambda *args: [])
    shared, _ = with_sharing(config, {"strategy": "seps", "n_clusters": 2, **QUICK})
    assert custom_connectors(shared) == ["env_to_module_connector"]  # the config's own: no padding needed


def test_algorithm_without_multi_agent_support_is_rejected():
    with pytest.raises(ValueError, match="Algorithm BC cannot train multi-agent modules"):
        with_sharing(BCConfig().environment("bps_1"))


def test_environments_that_are_not_multi_agent_are_named_with_the_fix():
    with pytest.raises(TypeError, match="needs a multi-agent environment"):
        with_sharing(PPOConfig().environment("CartPole-v1"))
    with pytest.raises(ValueError, match="Environment 'no_such_env' is not registered"):
        with_sharing(quick_ppo_config("no_such_env"))
    register_env("raw_speaker_listener", lambda cfg: simple_speaker_listener_v4.parallel_env())
    with pytest.raises(TypeError, match=r"returns a PettingZoo ParallelEnv \(.*\), which RLlib's EnvRunners "
                                        r"cannot step. Fix: wrap it in RLlib's ParallelPettingZooEnv"):
        with_sharing(PPOConfig().environment("raw_speaker_listener"))


@pytest.mark.parametrize("what", ["observation", "reward"])
def test_nan_during_pretraining_names_the_agent_and_step(what):
    config = spaces_config({"a": VECTOR, "b": VECTOR}, nan_at=("b", 3, what))
    with pytest.raises(ValueError, match=rf"Agent 'b' got an? {what} with NaN or inf at step 3 of the random "
                                         r"rollouts \(step 3 of its episode"):
        with_sharing(config, {"strategy": "seps", **QUICK})


def test_a_config_is_shared_once():
    config, _ = with_sharing(PPOConfig().environment(TwoTypeEnv), {"strategy": "fups"})
    assert config.to_dict()["seps"]["strategy"] == "fups"  # what Tune writes to params.json
    with pytest.raises(ValueError, match="This config is shared already \\(strategy 'fups'\\)"):
        with_sharing(config, {"strategy": "seps"})


class LateJoinerEnv(MultiAgentEnv):
    """Lists agents a and b, but from step 3 on an agent "late" acts too (not in possible_agents)."""

    def __init__(self, config=None):
        super().__init__()
        self.possible_agents = ["a", "b"]
        self.agents = list(self.possible_agents)
        self.observation_spaces = dict.fromkeys(["a", "b", "late"], VECTOR)
        self.action_spaces = dict.fromkeys(["a", "b", "late"], gym.spaces.Discrete(2))

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return dict.fromkeys(self.possible_agents, np.zeros(3, np.float32)), {}

    def step(self, action_dict):
        self.t += 1
        agents = ["a", "b", "late"] if self.t >= 3 else ["a", "b"]
        done = {"__all__": self.t >= 10}
        return dict.fromkeys(agents, np.zeros(3, np.float32)), dict.fromkeys(agents, 0.0), done, done, {}


@pytest.mark.slow
def test_an_agent_no_env_runner_can_map_makes_train_raise(ray_session):
    config = (PPOConfig().environment(LateJoinerEnv).env_runners(num_env_runners=1)
              .training(train_batch_size=100, minibatch_size=50, num_epochs=1)
              .fault_tolerance(delay_between_env_runner_restarts_s=0))
    config, _ = with_sharing(config, {"strategy": "fups"})
    algo = config.build_algo()
    try:  # RLlib ends the remote EnvRunner, logs its error and would train on without samples
        with pytest.raises(ValueError, match=r"EnvRunners met agents \['late'\] that the SePS mapping has no "
                                             r"module for \(it knows 2 agents: \['a', 'b'\]\).*Fix: list every"):
            algo.train()
    finally:
        algo.stop()
