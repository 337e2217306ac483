"""Tests of the paper's environments, run through ``make_env`` on the real packages (no mocks)."""

from __future__ import annotations

import numpy as np
import pytest
from lbforaging.foraging.environment import ForagingEnv
from rware.warehouse import Action, Direction, Warehouse

from rllib_seps.envs import ENVIRONMENTS, make_env
from rllib_seps.envs.bps_h import (
    BlindParticleSpreadH,
    group_permutations,
    sensor_directions,
    sensor_obs_dim,
    sensor_observation,
)
from rllib_seps.envs.crware import ColouredWarehouse, rotate_actions, unrotate_actions
from rllib_seps.envs.lbf import LevelBasedForaging

# (name, short-episode options, episode length, agents per type)
CASES = [
    ("bps_1", {"max_cycles": 10}, 10, (5, 5, 5)),
    ("bps_h_1", {"max_cycles": 10}, 10, (5, 5, 5)),
    ("bps_h_2", {"max_cycles": 10, "variant": "permutation"}, 10, (6,) * 5),
    ("bps_h_3", {"max_cycles": 10}, 10, (50,) * 4),
    ("crware_1", {"max_steps": 20}, 20, (2, 2)),
    ("crware_3", {"max_steps": 10}, 10, (8, 8)),
    ("lbf", {"max_episode_steps": 20}, 20, (4, 4, 4)),
]
IDS = [f"{name}-{i}" for i, (name, *_) in enumerate(CASES)]


def random_actions(env, rng: np.random.Generator) -> dict:
    return {a: int(rng.integers(env.action_spaces[a].n)) for a in env.agents}


@pytest.mark.parametrize(("name", "options", "length", "counts"), CASES, ids=IDS)
def test_random_episode_through_make_env(name, options, length, counts):
    env = make_env(name, seed=0, **options)
    rng = np.random.default_rng(0)
    obs, _ = env.reset()
    assert list(obs) == sorted(obs) == env.possible_agents == sorted(env.par_env.possible_agents)
    for agent, o in obs.items():
        assert env.observation_spaces[agent].contains(o)
        assert env.par_env.observation_space(agent) == env.observation_spaces[agent]
        assert env.par_env.action_space(agent) == env.action_spaces[agent]
    for t in range(1, length + 1):
        obs, rewards, terminateds, truncateds, _ = env.step(random_actions(env, rng))
        assert set(rewards) == set(env.possible_agents)
        assert all(isinstance(r, float) for r in rewards.values())
        assert all(env.observation_spaces[a].contains(o) for a, o in obs.items())
        done = terminateds["__all__"] or truncateds["__all__"]
        if done:
            break
    assert done and (t == length or name == "lbf")  # LBF may also end early, when all food is loaded
    assert env.agents == []


@pytest.mark.parametrize(("name", "options", "length", "counts"), CASES, ids=IDS)
def test_seed_reproduces_episode(name, options, length, counts):
    envs = [make_env(name, seed=seed, **options) for seed in (7, 7, 8)]
    firsts = [env.reset()[0] for env in envs]
    assert all(np.array_equal(firsts[0][a], firsts[1][a]) for a in firsts[0])
    assert not all(np.array_equal(firsts[0][a], firsts[2][a]) for a in firsts[0])
    actions = random_actions(envs[0], np.random.default_rng(1))
    (obs_a, rew_a, *_), (obs_b, rew_b, *_) = envs[0].step(actions), envs[1].step(actions)
    assert rew_a == rew_b
    assert all(np.array_equal(obs_a[a], obs_b[a]) for a in obs_a)


@pytest.mark.parametrize(("name", "options", "length", "counts"), CASES, ids=IDS)
def test_agent_types_are_contiguous_blocks(name, options, length, counts):
    env = make_env(name, **options)
    types = env.agent_types
    assert list(types) == env.possible_agents
    assert [types[a] for a in env.possible_agents] == np.repeat(np.arange(len(counts)), counts).tolist()


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="Unknown environment 'nope'"):
        make_env("nope")
    assert {"bps_h", "bps_h_1", "bps_h_2", "bps_h_3", "crware", "crware_1", "crware_2", "crware_3",
            "lbf"} <= set(ENVIRONMENTS)


# --- BPS ---------------------------------------------------------------------------------------


def test_bps_reward_is_half_distance_to_own_landmark():
    env = make_env("bps_1", seed=0)
    env.reset()
    _, rewards, *_ = env.step(random_actions(env, np.random.default_rng(0)))
    bps = env.par_env
    distance = np.linalg.norm(bps.pos - bps.landmarks[bps.colours], axis=1)
    np.testing.assert_allclose([rewards[a] for a in env.possible_agents], -0.5 * distance, rtol=1e-5)


def test_bps_colours_are_not_observed():
    a, b = make_env("bps", agents_per_colour=(5, 5, 5), seed=3), make_env("bps", agents_per_colour=(2, 8, 5), seed=3)
    obs_a, obs_b = a.reset()[0], b.reset()[0]
    actions = random_actions(a, np.random.default_rng(0))
    for _ in range(3):
        assert all(np.array_equal(obs_a[k], obs_b[k]) for k in obs_a)
        (obs_a, rew_a, *_), (obs_b, rew_b, *_) = a.step(actions), b.step(actions)
    assert rew_a != rew_b  # same observations, different types: only the reward tells them apart


# --- BPS-h -------------------------------------------------------------------------------------


def test_bps_h_sensor_groups_have_distinct_informative_observations():
    base_env, env = make_env("bps_1", seed=4), make_env("bps_h_1", seed=4)
    base, obs = base_env.reset()[0], env.reset()[0]
    colours = env.agent_types
    dims = {colours[a]: env.observation_spaces[a].shape[0] for a in env.possible_agents}
    assert dims == {0: 10, 1: 13, 2: 16}
    for agent in env.possible_agents:
        g, o, b = colours[agent], obs[agent], base[agent]
        np.testing.assert_allclose(o[:4], b[:4])  # own velocity and position unchanged
        readings = o[4:].reshape(3, 2 + g)
        # Full-rank sensors: the landmarks' relative positions are recoverable from every group.
        rel = np.linalg.lstsq(sensor_directions(2 + g), readings.T, rcond=None)[0].T
        np.testing.assert_allclose(rel.reshape(-1), b[4:], atol=1e-5)
        if g == 0:
            np.testing.assert_array_equal(o, b)  # group 0 carries the standard BPS sensors


@pytest.mark.parametrize("n_sensors", [2, 3, 6])
def test_sensor_space_matches_sensor_transform(n_sensors):
    base = np.random.default_rng(0).normal(size=(7, 4 + 2 * 5)).astype(np.float32)
    out = sensor_observation(base, sensor_directions(n_sensors))
    assert out.shape == (7, sensor_obs_dim(5, n_sensors)) and out.dtype == np.float32


def test_bps_h_permutation_is_fixed_per_group():
    base_env = make_env("bps_1", seed=5)
    envs = [make_env("bps_h_1", variant="permutation", seed=s) for s in (5, 6)]
    base, obs = base_env.reset()[0], envs[0].reset()[0]
    perms = envs[0].par_env.permutations
    assert all(np.array_equal(p, q) for p, q in zip(perms, envs[1].par_env.permutations))  # not episode-seeded
    assert len({tuple(p) for p in perms}) == 3 and not any(np.array_equal(p, np.arange(10)) for p in perms)
    for agent, colour in envs[0].agent_types.items():
        assert envs[0].observation_spaces[agent].shape == (10,)
        np.testing.assert_array_equal(obs[agent], base[agent][perms[colour]])


def test_bps_h_rejects_unknown_variant_and_degenerate_permutations():
    with pytest.raises(ValueError, match="variant must be one of"):
        BlindParticleSpreadH(variant="mirror")
    with pytest.raises(ValueError, match="dim must be >= 3"):
        group_permutations(2, 2, seed=0)
    with pytest.raises(ValueError, match="n_sensors must be >= 2"):
        sensor_directions(1)


# --- C-RWARE -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("shelf_colour", "expected"), [(0, (1.0, 0.0)), (1, (0.0, 1.0))])
def test_crware_pays_only_colour_matched_deliveries(shelf_colour, expected):
    env = ColouredWarehouse(size="tiny", n_agents=4, seed=0)  # robot colours 0, 0, 1, 1
    env.reset()
    wh = env.warehouse
    (gx0, gy), (gx1, _) = wh.goals
    carried = wh.shelfs[:2]
    # Robots 0 (colour 0) and 2 (colour 1) stand above the two goals, facing them, each carrying a
    # requested shelf of colour `shelf_colour`; robots 1 and 3 wait in the top corners.
    places = {0: (gx0, gy - 1), 1: (0, 0), 2: (gx1, gy - 1), 3: (wh.grid_size[1] - 1, 0)}
    for i, (x, y) in places.items():
        agent = wh.agents[i]
        agent.x, agent.y, agent.dir, agent.carrying_shelf = x, y, Direction.DOWN, None
    for i, shelf in zip((0, 2), carried):
        wh.agents[i].carrying_shelf = shelf
        shelf.x, shelf.y = wh.agents[i].x, wh.agents[i].y
        env.shelf_colours[shelf.id - 1] = shelf_colour
    wh.request_queue = carried + [s for s in wh.shelfs if s not in carried][: wh.request_queue_size - 2]
    wh._recalc_grid()

    base_actions = np.array([Action.FORWARD.value, Action.NOOP.value, Action.FORWARD.value, Action.NOOP.value])
    chosen = unrotate_actions(base_actions, env.colours, env.n_actions)
    _, rewards, *_ = env.step(dict(zip(env.possible_agents, chosen.tolist())))

    assert not any(s in wh.request_queue for s in carried)  # both were delivered ...
    agents = env.possible_agents
    assert (rewards[agents[0]], rewards[agents[2]]) == expected  # ... but only the matching colour pays
    assert rewards[agents[1]] == rewards[agents[3]] == 0.0


@pytest.mark.parametrize("chosen", range(5))
def test_crware_rotates_actions_per_colour(chosen):
    env = ColouredWarehouse(size="tiny", n_agents=4, seed=2)
    env.reset()
    env.step({a: chosen for a in env.possible_agents})
    for agent, colour in zip(env.warehouse.agents, env.colours):
        executed = int(np.roll(np.arange(5), colour)[chosen])
        if executed == Action.FORWARD.value:  # a blocked move is turned into a no-op by rware
            assert agent.req_action in (Action.FORWARD, Action.NOOP)
        else:
            assert agent.req_action.value == executed
    np.testing.assert_array_equal(rotate_actions(np.full(4, chosen), env.colours, 5),
                                  [np.roll(np.arange(5), c)[chosen] for c in env.colours])


def test_crware_observations_are_permuted_per_colour_and_show_shelf_colours():
    env = ColouredWarehouse(size="small", n_agents=8, seed=1)
    obs, _ = env.reset()
    raw = env.raw_observations()
    assert raw.shape == (8, 89)
    for i, (agent, colour) in enumerate(zip(env.possible_agents, env.colours)):
        np.testing.assert_array_equal(obs[agent], raw[i][env.obs_permutations[colour]])
    # rware's per-cell block is [agent, direction x4, shelf, requested] after 8 self entries.
    shelf_flags = raw[:, 8:71].reshape(8, 9, 7)[:, :, 5]
    colour_one_hot = raw[:, 71:].reshape(8, 9, 2)
    np.testing.assert_array_equal(colour_one_hot.sum(axis=2), shelf_flags)
    # The robot's own colour is not in the unpermuted observation.
    env.colours = env.colours[::-1].copy()
    np.testing.assert_array_equal(env.raw_observations(), raw)


@pytest.mark.parametrize("kwargs", [{}, {"size": "small", "n_agents": 8, "sensor_range": 2, "n_colours": 3}],
                         ids=["crware_1", "small_range_2"])
def test_crware_observations_equal_rwares(kwargs):
    # The env computes rware's observation vectors itself, for all robots at once, for speed: they
    # must be rware's, at every step (robots and carried shelves moving, views cut by the walls).
    # Fails if rware changes them.
    env = ColouredWarehouse(**{"max_steps": 150, **kwargs})
    base_dim = env.warehouse.observation_space[0].shape[0]
    rng = np.random.default_rng(0)
    carried = 0
    for seed in range(2):
        env.reset(seed=seed)
        while env.agents:
            stock = np.stack([Warehouse._make_obs(env.warehouse, robot) for robot in env.warehouse.agents])
            ours = env.raw_observations()
            np.testing.assert_array_equal(ours[:, :base_dim], stock)
            carried += int(stock[:, 2].sum())
            env.step({a: int(rng.integers(env.n_actions)) for a in env.agents})
    assert carried > 0  # the comparison saw robots carrying shelves


def test_crware_rejects_unknown_size():
    with pytest.raises(ValueError, match="size must be one of"):
        ColouredWarehouse(size="huge")


# --- LBF ---------------------------------------------------------------------------------------


def test_lbf_agents_keep_their_levels_across_resets():
    env = make_env("lbf", seed=0)
    expected = [1] * 4 + [2] * 4 + [3] * 4
    for seed in range(5):
        env.reset(seed=seed)
        assert [p.level for p in env.par_env.base.players] == expected
    # The stock env does reshuffle levels, which is what the subclass undoes.
    stock = ForagingEnv(players=12, min_player_level=expected, max_player_level=expected, min_food_level=1,
                        max_food_level=3, field_size=(15, 15), max_num_food=8, sight=4,
                        max_episode_steps=50, force_coop=False, observe_agent_levels=False)
    seen = set()
    for seed in range(5):
        stock.reset(seed=seed)
        seen.add(tuple(p.level for p in stock.players))
    assert len(seen) > 1


def test_lbf_levels_are_not_observed():
    a, b = make_env("lbf", seed=3), make_env("lbf", levels=(3, 2, 1), seed=3)
    obs_a, obs_b = a.reset()[0], b.reset()[0]
    assert a.observation_spaces[a.possible_agents[0]].shape == (3 * 8 + 2 * 12,)
    assert all(np.array_equal(obs_a[k], obs_b[k]) for k in obs_a)
    assert a.agent_types == b.agent_types  # the type is the level index, not the level


@pytest.mark.parametrize("kwargs", [{}, {"field_size": 6, "n_food": 3, "sight": 2, "agents_per_level": (2, 2)},
                                    {"field_size": 8, "sight": 8}], ids=["paper", "small", "full_view"])
def test_lbf_observations_equal_the_stock_ones(kwargs):
    # The env computes valid actions and observations itself, for speed: they must be the stock
    # methods', at every step (also where views are cut by the grid's edges). Fails if lbforaging
    # changes them.
    env = LevelBasedForaging(**{"levels": (1, 2, 3)[:len(kwargs.get("agents_per_level", (4, 4, 4)))], **kwargs})
    rng = np.random.default_rng(0)
    for seed in range(4):
        obs, _ = env.reset(seed=seed)
        while env.agents:
            valid = env.base._valid_actions
            ForagingEnv._gen_valid_moves(env.base)
            assert valid == env.base._valid_actions
            stock = ForagingEnv._make_gym_obs(env.base)
            assert all(np.array_equal(obs[a], o) and obs[a].dtype == o.dtype
                       for a, o in zip(env.possible_agents, stock))
            obs, *_ = env.step({a: int(rng.integers(6)) for a in env.agents})


def test_lbf_reset_seed_does_not_depend_on_history():
    fresh, used = LevelBasedForaging(), LevelBasedForaging(seed=1)
    used.reset()
    used.step({a: 1 for a in used.agents})
    obs_fresh, obs_used = fresh.reset(seed=9)[0], used.reset(seed=9)[0]
    assert all(np.array_equal(obs_fresh[k], obs_used[k]) for k in obs_fresh)


def test_lbf_rejects_mismatched_levels():
    with pytest.raises(ValueError, match="levels must give one positive level"):
        LevelBasedForaging(agents_per_level=(4, 4, 4), levels=(1, 2))


def test_lbf_food_levels_stay_within_the_given_range():
    env = LevelBasedForaging(min_food_level=2, seed=0)
    levels = set()
    for seed in range(5):
        env.reset(seed=seed)
        levels |= set(env.base.field[env.base.field > 0].tolist())
    assert levels == {2, 3}
    with pytest.raises(ValueError, match="min_food_level must be between 1 and max_food_level"):
        LevelBasedForaging(min_food_level=4)
