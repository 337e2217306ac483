"""End to end: PPO on PettingZoo environments whose agents have different spaces (issue #3).

Real RLlib algorithms on tiny budgets (one local EnvRunner, 200-step train batches). A recording
wrapper checks every action the environment receives against the agent's own action space.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from pettingzoo import ParallelEnv
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.columns import Columns
from ray.tune.registry import register_env

from rllib_seps.rllib.configure import apply_plan, env_creator_of, env_spaces, with_sharing
from rllib_seps.rllib.internals import call_after_every_ray_init
from rllib_seps.envs import SortedParallelEnv
from rllib_seps.envs.pettingzoo_envs import simple_world_comm
from rllib_seps.rllib.modules import SharedActorCriticModule
from rllib_seps.sharing.spaces import IMAGE_METHODS
from rllib_seps.sharing.plan import build_plan

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*render method without specifying any render mode"),
    pytest.mark.filterwarnings("ignore:.*Overriding environment rllib-multi-agent-env-v0"),
]


class RecordingEnv(SortedParallelEnv):
    """Raises on, and records, every action outside the receiving agent's own action space."""

    received: list[tuple[str, object]] = []  # the test process's env (num_env_runners=0)

    def step(self, action_dict):
        for agent, action in action_dict.items():
            if not self.action_spaces[agent].contains(action):
                raise AssertionError(f"{agent} received {action!r} outside {self.action_spaces[agent]}")
            RecordingEnv.received.append((agent, action))
        return super().step(action_dict)


def _register_recording_env() -> None:
    register_env("recording_swc", lambda cfg: RecordingEnv(simple_world_comm(**dict(cfg))))


_register_recording_env()
# Ray forgets registrations when a session ends (other test modules start their own).
call_after_every_ray_init(_register_recording_env)


def ppo(env: str, **env_config) -> PPOConfig:
    return (PPOConfig().environment(env, env_config=env_config)
            .env_runners(num_env_runners=0)
            .training(train_batch_size=200, minibatch_size=100, num_epochs=1))


def quick(strategy: str, **options) -> dict:
    """Options for the module path, whose modules and connectors these tests read."""
    return {"strategy": strategy, "execution": "modules", "progress": False, **options}


def train_once(config) -> dict:
    algo = config.build_algo()
    try:
        result = algo.train()
        return {"algo": algo, "result": result}
    except BaseException:
        algo.stop()
        raise


def check_full_episodes(algo, plan, n_episodes: int = 2) -> None:
    """Rolls out full episodes (exploring and greedy) and checks actions at both ends."""
    for explore in (True, False):
        RecordingEnv.received.clear()
        episodes = algo.env_runner.sample(num_episodes=n_episodes, explore=explore)
        assert len(episodes) == n_episodes and all(e.is_done for e in episodes)
        for episode in episodes:
            assert episode.env_t == 25
            for agent, sa_episode in episode.agent_episodes.items():
                own = plan.agents[agent].action_space
                module = plan.modules[plan.agents[agent].module_id]
                actions = np.asarray(sa_episode.get_actions())
                if isinstance(own, gym.spaces.Discrete):  # episodes keep the padded index
                    assert np.all((actions >= 0) & (actions < own.n)), f"{agent} sampled a padded action"
                if not module.plain:
                    logits = np.asarray(sa_episode.get_extra_model_outputs(Columns.ACTION_DIST_INPUTS))
                    if isinstance(own, gym.spaces.Discrete):
                        assert np.all(logits[:, own.n:] < -1e37)
        agents = {a for a, _ in RecordingEnv.received}
        assert agents == set(plan.agents) and len(RecordingEnv.received) == 25 * n_episodes * len(agents)


# --- simple_world_comm_v3: observations 34 vs 28, actions Discrete(20) vs Discrete(5) ----------
def test_simple_world_comm_fups_id_trains_and_never_sends_padded_actions(ray_session):
    config, _ = with_sharing(ppo("recording_swc", max_cycles=25, seed=0), quick("fups_id"))
    obs, act = env_spaces(env_creator_of(config), config.env_config)
    plan = build_plan("fups_id", obs, act)
    assert plan.modules["shared"].action_space == gym.spaces.Discrete(20)
    run = train_once(config)
    try:
        assert run["result"]["env_runners"]["num_env_steps_sampled"] >= 200
        assert "total_loss" in run["result"]["learners"]["shared"]
        assert isinstance(run["algo"].get_module("shared"), SharedActorCriticModule)
        check_full_episodes(run["algo"], plan)
    finally:
        run["algo"].stop()


def test_seps_cluster_mixing_spaces_is_padded_beside_a_plain_cluster(ray_session):
    base = ppo("recording_swc", max_cycles=25, seed=0)
    obs, act = env_spaces(env_creator_of(base), base.env_config)
    # Sorted agents: adversary_0..2, agent_0, agent_1, leadadversary_0. The leader (34, Discrete(20))
    # shares a cluster with the good agents (28, Discrete(5)); the adversaries' cluster is plain.
    plan = build_plan("seps", obs, act, labels=[0, 0, 0, 1, 1, 1])
    assert plan.modules["cluster_0"].plain and not plan.modules["cluster_1"].plain
    run = train_once(apply_plan(base, plan))
    try:
        assert {"cluster_0", "cluster_1"} <= set(run["result"]["learners"])
        assert not isinstance(run["algo"].get_module("cluster_0"), SharedActorCriticModule)
        check_full_episodes(run["algo"], plan, n_episodes=1)
    finally:
        run["algo"].stop()


def test_simple_world_comm_box_actions_are_sliced_to_each_agent(ray_session):
    config, _ = with_sharing(ppo("recording_swc", max_cycles=25, seed=0, continuous_actions=True),
                             quick("fups_id"))
    obs, act = env_spaces(env_creator_of(config), config.env_config)
    plan = build_plan("fups_id", obs, act)
    assert plan.modules["shared"].action_space.shape == (9,)
    run = train_once(config)
    try:
        check_full_episodes(run["algo"], plan, n_episodes=1)
        shapes = {agent: np.shape(action) for agent, action in RecordingEnv.received}
        assert shapes == {a: act[a].shape for a in act}  # (9,) for the leader, (5,) for the others
    finally:
        run["algo"].stop()


# --- Knights-Archers-Zombies (vector state) and cooperative pong (grey images) ------------------
def test_knights_archers_zombies_vector_fups_id_trains(ray_session):
    config, _ = with_sharing(ppo("kaz_vector", max_cycles=60, seed=0), quick("fups_id"))
    run = train_once(config)
    try:
        assert run["result"]["env_runners"]["num_env_steps_sampled"] >= 200
        module = run["algo"].get_module("shared")
        assert module.actor_body.mlp.layers[0].in_features == 135 + 4  # flat state + one-hot id
    finally:
        run["algo"].stop()


@pytest.mark.parametrize("method", IMAGE_METHODS)
def test_cooperative_pong_trains_with_each_image_indication(ray_session, method):
    base = ppo("cooperative_pong_grey", size=32, frames=2, max_cycles=40, seed=0)
    obs, act = env_spaces(env_creator_of(base), base.env_config)
    plan = build_plan("fups_id", obs, act, indication=method)
    extra = {"identity": 0, "geometric": 1, "binary": 1, "inversion": 2, "inversion_replacement": 0}[method]
    assert plan.modules["shared"].observation_space["observations"].shape == (32, 32, 2 + extra)
    run = train_once(apply_plan(base, plan, {"conv_filters": [[8, 4, 2], [16, 4, 2]], "fcnet_hiddens": [32]}))
    try:
        assert "total_loss" in run["result"]["learners"]["shared"]
        assert run["algo"].get_module("shared").actor_body.is_image
    finally:
        run["algo"].stop()


# --- What cannot be padded together: clear errors naming agents and spaces ----------------------
class MixedEnv(ParallelEnv):
    """Two agents whose spaces are given: a tiny env to build plans and configs from."""

    metadata = {"name": "mixed_v0"}

    def __init__(self, observation_spaces: dict, action_spaces: dict) -> None:
        self.possible_agents = sorted(observation_spaces)
        self.observation_spaces, self.action_spaces = observation_spaces, action_spaces

    def observation_space(self, agent):
        return self.observation_spaces[agent]

    def action_space(self, agent):
        return self.action_spaces[agent]


VEC = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)


def test_box_and_discrete_actions_in_one_module_raise():
    act = {"mover": gym.spaces.Box(-1.0, 1.0, (2,), np.float32), "picker": gym.spaces.Discrete(3)}
    register_env("mixed_actions", lambda cfg: SortedParallelEnv(MixedEnv({"mover": VEC, "picker": VEC}, act)))
    with pytest.raises(ValueError, match=r"Cannot pad action spaces of different kinds \(mover: Box\(-1\.0, 1\.0, "
                                         r"\(2,\), float32\), picker: Discrete\(3\)\)\. Fix: put these agents in separate"):
        with_sharing(ppo("mixed_actions"), quick("fups"))
    plan = build_plan("nops", {"mover": VEC, "picker": VEC}, act)  # separate modules are fine
    assert all(module.plain for module in plan.modules.values())


@pytest.mark.parametrize(("observation", "action", "match"), [
    (gym.spaces.Text(5), gym.spaces.Discrete(3),
     r"Agent 'talker' has observation space Text\(1, 5, .*\) \(Text\), which cannot be padded"),
    (VEC, gym.spaces.Tuple([gym.spaces.Discrete(2), gym.spaces.Discrete(2)]),
     r"Agent 'talker' has action space Tuple\(Discrete\(2\), Discrete\(2\)\) \(Tuple\); action padding supports"),
])
def test_unsupported_space_types_raise_naming_the_agent(observation, action, match):
    obs = {"listener": VEC, "talker": observation}
    act = {"listener": gym.spaces.Discrete(3), "talker": action}
    with pytest.raises(TypeError, match=match):
        build_plan("fups", obs, act)


def test_images_and_vectors_in_one_module_raise():
    obs = {"camera": gym.spaces.Box(0, 255, (8, 8, 1), np.uint8), "sensor": VEC}
    act = dict.fromkeys(obs, gym.spaces.Discrete(2))
    with pytest.raises(ValueError, match=r"Observation shapes of different rank include an image: "
                                         r"\{'camera': \(8, 8, 1\), 'sensor': \(4,\)\}"):
        build_plan("fups", obs, act)
