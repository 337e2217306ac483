"""Environments and algorithms RLlib users already have: PettingZoo envs through RLlib's own
wrappers (parallel and AEC), games with legal-action masks, integer agent ids, small images, Dict
observations, and every supported algorithm on agents of different spaces; DQN and SAC are refused
by name."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from mpe2 import simple_speaker_listener_v4
from pettingzoo.classic import tictactoe_v3
from pettingzoo.utils.wrappers import BaseWrapper
from ray.rllib.algorithms.appo import APPOConfig
from ray.rllib.algorithms.dqn import DQNConfig
from ray.rllib.algorithms.impala import IMPALAConfig
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.algorithms.sac import SACConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv, PettingZooEnv
from ray.rllib.examples.rl_modules.classes.action_masking_rlm import ActionMaskingTorchRLModule
from ray.rllib.examples.envs.classes.multi_agent import MultiAgentCartPole
from ray.tune.registry import register_env

from rllib_seps import SePSCallback, with_sharing
from rllib_seps.options import MULTI_AGENT_ALGORITHMS
from rllib_seps.pretraining.report import REPORT_JSON
from rllib_seps.rllib.internals import call_after_every_ray_init
from rllib_seps.rllib.fast.execution import plan_mapping
from rllib_seps.rllib.modules import SharedActorCriticModule
from rllib_seps.sharing.mapping import sorted_agents
from tests.conftest import SpacesEnv, TwoTypeEnv, per_agent_modules

pytestmark = pytest.mark.filterwarnings("ignore:.*Overriding environment")
# The module path: these tests read the modules RLlib builds (fast execution: tests/test_fast*.py).
QUICK = dict(progress=False, n_clusters=2, transitions_per_agent=200, updates=200, seed=0, execution="modules")
# simple_speaker_listener: the speaker sees 3 numbers and says one of 3 words, the listener sees
# 11 and moves in 5 directions.
SPEAKER_LISTENER = ["listener_0", "speaker_0"]


class CountedMoves(PettingZooEnv):
    """RLlib's AEC wrapper, counting the moves that the game's own action mask allows and forbids
    (tic-tac-toe ends a game at an illegal move, scoring it as a loss)."""

    legal = illegal = 0

    def step(self, action):
        for agent, move in action.items():
            if self.env.observe(agent)["action_mask"][move]:
                CountedMoves.legal += 1
            else:
                CountedMoves.illegal += 1
        return super().step(action)


class RLlibKeys(BaseWrapper):
    """A PettingZoo game observing ``{"observations": flat board, "action_mask"}``, as RLlib's
    action-masking module reads it (PettingZoo's classic games say "observation", with a 3-D board)."""

    def observation_space(self, agent):
        space = self.env.observation_space(agent)
        return gym.spaces.Dict({"observations": gym.spaces.flatten_space(space["observation"]),
                                "action_mask": space["action_mask"]})

    def observe(self, agent):
        obs = self.env.observe(agent)
        return {"observations": obs["observation"].ravel(), "action_mask": obs["action_mask"]}


def _register_pettingzoo_envs() -> None:
    register_env("speaker_listener_parallel",
                 lambda cfg: ParallelPettingZooEnv(simple_speaker_listener_v4.parallel_env(**cfg)))
    register_env("speaker_listener_aec", lambda cfg: PettingZooEnv(simple_speaker_listener_v4.env(**cfg)))
    register_env("tictactoe", lambda cfg: CountedMoves(tictactoe_v3.env()))
    register_env("tictactoe_rllib_keys", lambda cfg: CountedMoves(RLlibKeys(tictactoe_v3.env())))


_register_pettingzoo_envs()
call_after_every_ray_init(_register_pettingzoo_envs)


def ppo(env, **env_config) -> PPOConfig:
    return (PPOConfig().environment(env, env_config=env_config).env_runners(num_env_runners=0)
            .training(train_batch_size=200, minibatch_size=100, num_epochs=1)
            .rl_module(model_config={"fcnet_hiddens": [32, 32]}))


def train(config, iterations: int = 1) -> tuple:
    algo = config.build_algo()
    try:
        results = [algo.train() for _ in range(iterations)]
        return algo, results
    finally:
        algo.stop()


def test_agent_order_never_depends_on_the_hash_seed():
    assert sorted_agents({"b", "a", "c"}) == ["a", "b", "c"]
    assert sorted_agents([10, 2, 1]) == [1, 2, 10]
    assert sorted_agents([("x", 2), "b", 3, ("x", 1)]) == [3, "b", ("x", 1), ("x", 2)]


def test_gymnasium_registered_multi_agent_env_is_made_as_rllib_makes_it():
    gym.register("SePSTwoType-v0", entry_point=TwoTypeEnv, disable_env_checker=True)
    config, _ = with_sharing(PPOConfig().environment("SePSTwoType-v0"), {"strategy": "fups_id"})
    mapping = plan_mapping(config)
    assert list(mapping.agent_to_module) == sorted(TwoTypeEnv().possible_agents)
    assert mapping.module_ids == ["shared"]


@pytest.mark.filterwarnings("ignore:n_clusters=2 with 2 agents")
def test_parallel_pettingzoo_env_through_rllibs_wrapper_and_the_callback(ray_session, tmp_path):
    # RLlib's wrapper sets only the combined spaces and builds possible_agents from a set.
    config = per_agent_modules(ppo("speaker_listener_parallel", max_cycles=25), SPEAKER_LISTENER)
    algo, (result,) = train(config.callbacks(SePSCallback.with_options(
        strategy="seps", report_dir=str(tmp_path), **QUICK)))
    assert list(algo.config.policy_mapping_fn.agent_to_module) == SPEAKER_LISTENER
    assert set(result["learners"]) >= {"cluster_0", "cluster_1"}
    assert result["seps"]["cluster_sizes"] == {"cluster_0": 1, "cluster_1": 1}


@pytest.mark.filterwarnings("ignore:n_clusters=2 with 2 agents")
def test_aec_pettingzoo_env_through_rllibs_wrapper_pretrains_on_turns(ray_session):
    config, pretraining = with_sharing(ppo("speaker_listener_aec", max_cycles=25), dict(strategy="adaps", **QUICK))
    # Turn-based: an agent's transition ends at its next turn; both agents collect theirs.
    assert pretraining.transitions == {"listener_0": 200, "speaker_0": 200}
    _, (result,) = train(config)
    assert "total_loss" in result["learners"]["shared"]


@pytest.mark.filterwarnings("ignore:n_clusters=2 with 2 agents")
@pytest.mark.parametrize("route", ["with_sharing", "callback"])
def test_the_envs_action_mask_keeps_pretraining_and_training_to_legal_moves(ray_session, route):
    CountedMoves.legal = CountedMoves.illegal = 0
    if route == "with_sharing":  # PettingZoo's classic games observe {"observation", "action_mask"}
        config, _ = with_sharing(ppo("tictactoe"), dict(strategy="seps", **QUICK))
        assert CountedMoves.illegal == 0 and CountedMoves.legal >= 400, "random pretraining moves"
    else:  # a config that builds as it is: RLlib's action-masking module, which the callback replaces
        config = (ppo("tictactoe_rllib_keys")
                  .multi_agent(policies={"p"}, policy_mapping_fn=lambda aid, *args, **kwargs: "p")
                  .rl_module(rl_module_spec=RLModuleSpec(module_class=ActionMaskingTorchRLModule))
                  .callbacks(SePSCallback.with_options(strategy="seps", **QUICK)))
    algo, results = train(config, iterations=2)
    assert isinstance(algo.get_module("cluster_0"), SharedActorCriticModule)
    assert CountedMoves.illegal == 0 and results[-1]["env_runners"]["num_env_steps_sampled_lifetime"] >= 400
    assert "total_loss" in results[-1]["learners"]["cluster_0"]


def test_integer_agent_ids_from_rllibs_multi_agent_cartpole(ray_session, tmp_path):
    config = (ppo(MultiAgentCartPole, num_agents=3)
              .multi_agent(policies={"p"}, policy_mapping_fn=lambda aid, *args, **kwargs: "p")
              .callbacks(SePSCallback.with_options(strategy="seps", report_dir=str(tmp_path), **QUICK)))
    algo, (result,) = train(config)
    assert list(algo.config.policy_mapping_fn.agent_to_module) == [0, 1, 2]
    assert result["env_runners"]["num_env_steps_sampled"] >= 200  # every agent was mapped
    assert set(result["learners"]) >= {"cluster_0", "cluster_1"}
    assert set(json.loads((tmp_path / REPORT_JSON).read_text())["mapping"]) == {"0", "1", "2"}


@pytest.mark.parametrize(("observation_space", "strategy"), [
    (gym.spaces.Box(0, 255, (7, 7, 3), np.uint8), "fups"),  # RLlib's catalog has no CNN for 7x7
    (gym.spaces.Dict({"position": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
                      "mode": gym.spaces.Discrete(3)}), "seps"),  # nor an encoder for Dict
], ids=["image", "dict"])
def test_observations_rllibs_catalog_cannot_read_go_through_the_shared_module(ray_session, observation_space,
                                                                              strategy):
    agents = ["a", "b", "c"]
    env_config = {"observation_spaces": dict.fromkeys(agents, observation_space),
                  "action_spaces": dict.fromkeys(agents, gym.spaces.Discrete(3))}
    config, _ = with_sharing(ppo(SpacesEnv, **env_config), dict(strategy=strategy, **QUICK))
    algo, (result,) = train(config)
    for module in config.policies:  # no padding needed, yet RLlib's default module cannot serve them
        assert isinstance(algo.get_module(module), SharedActorCriticModule)
        assert algo.get_module(module).actor_body.is_image == (strategy == "fups")
        assert "total_loss" in result["learners"][module]


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", [name for name in MULTI_AGENT_ALGORITHMS if name != "PPO"])
def test_each_supported_algorithm_trains_agents_of_different_spaces(ray_session, algorithm):
    """PPO trains every strategy in tests/test_callback.py; APPO and IMPALA here, with AdaPS masks."""
    config_class = {"APPO": APPOConfig, "IMPALA": IMPALAConfig}[algorithm]
    config = (config_class().environment(TwoTypeEnv).env_runners(num_env_runners=0)
              .training(train_batch_size=50).rl_module(model_config={"fcnet_hiddens": [32, 32]})
              .reporting(min_time_s_per_iteration=0))
    config = per_agent_modules(config, TwoTypeEnv().possible_agents)
    algo = config.callbacks(SePSCallback.with_options(strategy="adaps", **QUICK)).build_algo()
    try:
        assert isinstance(algo.get_module("shared"), SharedActorCriticModule)
        # APPO and IMPALA learn in a background thread: an iteration reports the updates finished by then.
        for _ in range(20):
            learners = algo.train().get("learners", {})
            if "total_loss" in learners.get("shared", {}):
                break
        assert "total_loss" in learners.get("shared", {}), f"{algorithm} reported no update in 20 iterations"
    finally:
        algo.stop()


@pytest.mark.parametrize("config_class", [DQNConfig, SACConfig], ids=["DQN", "SAC"])
def test_dqn_and_sac_are_refused_by_name_before_pretraining(config_class):
    config = config_class().environment(TwoTypeEnv)
    steps = TwoTypeEnv.steps_taken
    name = config_class.__name__.removesuffix("Config")
    with pytest.raises(ValueError, match=rf"Algorithm {name} is not supported by rllib-seps: {name} learns "
                                         r"Q-networks.*Fix: use one of PPO, APPO, IMPALA"):
        with_sharing(config, dict(strategy="seps", **QUICK))
    assert TwoTypeEnv.steps_taken == steps
