"""Coloured multi-robot warehouse (C-RWARE) on ``rware`` 2.0.

The robotic warehouse with colours, as in the SePS paper's reference branch. Agent types differ
three ways:

* **Reward.** Every shelf gets a random colour at each reset; robots get colours in contiguous,
  (nearly) equal blocks. Delivering a requested shelf rewards the delivering robot +1 only if the
  shelf's colour equals the robot's; a wrong-colour delivery still counts as a delivery for the
  warehouse (the request is served and replaced) but rewards 0.
* **Observation.** Each colour sees its observation vector through its own fixed permutation,
  drawn from ``obs_permutation_seed`` (independent of the episode seed).
* **Action.** Each colour's action indices are rotated: an agent of colour ``c`` choosing ``a``
  executes ``np.roll(np.arange(n_actions), c)[a] == (a - c) % n_actions`` in the base warehouse
  (rware's actions: 0 no-op, 1 forward, 2 left, 3 right, 4 toggle load). So colour 1 must choose
  2 to go forward.

Observation (float32, before the permutation): rware's flattened vector (own x, y, carrying flag,
direction one-hot, on-highway flag, then for each of the ``(2r+1)^2`` cells in view: agent flag,
agent direction one-hot, shelf flag, requested flag), followed, when ``observe_shelf_colours`` is
True (default), by a one-hot of the colour of the shelf in each cell in view (all zero where there
is no shelf). Shelf colours are observed because they are properties of the world, not of the
agent, and without them an agent cannot tell which requested shelf is worth carrying. The robot's
own colour is never observed. With sensor range 1 and 2 colours the size is ``71 + 9 * 2 = 89``.

Observations are computed for all robots at once from the positions, the same values as rware's
(rware builds each robot's vector in Python, cell by cell: a third of its step's time;
``tests/test_envs.py`` compares them with rware's at every step).

Presets (Table 1): ``crware_1`` tiny map 4 agents, ``crware_2`` small 8, ``crware_3`` medium 16;
sensor range 1, 500-step episodes, individual rewards, 2 colours, request queue = number of agents.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv
from rware.warehouse import RewardType, Warehouse

from rllib_seps.envs.bps import agent_names
from rllib_seps.envs.typed import TypedParallelEnv

# rware's named map sizes: (shelf_rows, shelf_columns); column height 8 as in rware's registry.
SIZES: dict[str, tuple[int, int]] = {"tiny": (1, 3), "small": (2, 3), "medium": (2, 5), "large": (3, 5)}
_COLUMN_HEIGHT = 8


class _Warehouse(Warehouse):
    """rware's warehouse without its per-robot observations, which :class:`ColouredWarehouse`
    computes for all robots at once (:meth:`ColouredWarehouse.raw_observations`)."""

    def _make_obs(self, agent):
        return None


def rotate_actions(actions: np.ndarray, colours: np.ndarray, n_actions: int) -> np.ndarray:
    """Maps agents' chosen actions to the base warehouse's actions.

    Args:
        actions: Chosen action indices ``(n_agents,)``.
        colours: Colour of each agent ``(n_agents,)``.
        n_actions: Size of the discrete action space.

    Returns:
        ``np.roll(np.arange(n_actions), c)[a]`` per agent, i.e. ``(a - c) % n_actions``.
    """
    return (np.asarray(actions) - np.asarray(colours)) % n_actions


def unrotate_actions(base_actions: np.ndarray, colours: np.ndarray, n_actions: int) -> np.ndarray:
    """Inverse of :func:`rotate_actions`: the index an agent must choose to execute ``base_actions``."""
    return (np.asarray(base_actions) + np.asarray(colours)) % n_actions


class ColouredWarehouse(TypedParallelEnv):
    """PettingZoo ParallelEnv of C-RWARE (see the module docstring for the rules).

    The base ``rware.warehouse.Warehouse`` (a subclass that leaves the observations to this env) is
    held as :attr:`warehouse`; its agent ``i`` is the
    ``i``-th id in sorted order, and its shelf ``j`` has colour ``shelf_colours[j]``.

    Args:
        size: Map size, one of ``"tiny"``, ``"small"``, ``"medium"``, ``"large"``.
        n_agents: Number of robots.
        n_colours: Number of colours (robot types and shelf colours).
        sensor_range: View radius; 1 gives a 3x3 view.
        max_steps: Episode length in steps (the time limit is reported as truncation).
        request_queue_size: Shelves requested at once; defaults to ``n_agents``.
        observe_shelf_colours: Append the colours of shelves in view to the observation.
        obs_permutation_seed: Seed of the per-colour observation permutations.
        seed: Seed of the first reset; later resets continue the same random stream.

    Raises:
        ValueError: On an unknown ``size`` or out-of-range counts.
    """

    metadata = {"name": "coloured_rware_v0", "render_modes": []}

    def __init__(self, size: str = "tiny", n_agents: int = 4, n_colours: int = 2, sensor_range: int = 1,
                 max_steps: int = 500, request_queue_size: int | None = None,
                 observe_shelf_colours: bool = True, obs_permutation_seed: int = 0,
                 seed: int | None = None) -> None:
        if size not in SIZES:
            raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}.")
        if n_colours < 1 or n_agents < n_colours:
            raise ValueError(f"Need 1 <= n_colours <= n_agents, got n_colours={n_colours}, n_agents={n_agents}.")
        if sensor_range < 1 or max_steps < 1:
            raise ValueError(f"sensor_range and max_steps must be >= 1, got {sensor_range} and {max_steps}.")
        rows, cols = SIZES[size]
        self.warehouse = _Warehouse(
            shelf_columns=cols, column_height=_COLUMN_HEIGHT, shelf_rows=rows, n_agents=n_agents,
            msg_bits=0, sensor_range=sensor_range,
            request_queue_size=n_agents if request_queue_size is None else request_queue_size,
            max_inactivity_steps=None, max_steps=max_steps, reward_type=RewardType.INDIVIDUAL,
        )
        self.n_colours = int(n_colours)
        self.observe_shelf_colours = bool(observe_shelf_colours)
        blocks = [len(b) for b in np.array_split(np.arange(n_agents), n_colours)]
        self.colours = np.repeat(np.arange(n_colours), blocks)  # contiguous, (nearly) equal blocks
        self.possible_agents = agent_names(n_agents)
        self.agents: list[str] = []
        self.n_actions = int(self.warehouse.action_space[0].n)
        base_dim = int(self.warehouse.observation_space[0].shape[0])
        self.obs_dim = base_dim + (self.n_colours * (2 * sensor_range + 1) ** 2 if observe_shelf_colours else 0)
        rng = np.random.default_rng(obs_permutation_seed)
        self.obs_permutations = [rng.permutation(self.obs_dim) for _ in range(self.n_colours)]
        self.observation_spaces = {a: spaces.Box(-np.inf, np.inf, (self.obs_dim,), np.float32)
                                   for a in self.possible_agents}
        self.action_spaces = {a: spaces.Discrete(self.n_actions) for a in self.possible_agents}
        self.shelf_colours = np.zeros(0, dtype=np.int64)
        self._seed = seed

    def reset(self, seed: int | None = None, options: dict | None = None):
        # The constructor's seed applies to the first reset only, as in BlindParticleSpread.
        seed, self._seed = (self._seed if seed is None else seed), None
        self.warehouse.reset(seed=seed)
        # Drawn from the warehouse's own generator, so one seed fixes the whole episode.
        self.shelf_colours = self.warehouse.np_random.integers(self.n_colours, size=len(self.warehouse.shelfs))
        self.agents = list(self.possible_agents)
        return self._observe(), {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]):
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"No action given for agents {missing}.")
        chosen = np.array([int(actions[a]) for a in self.possible_agents], dtype=np.int64)
        bad = {a: int(x) for a, x in zip(self.possible_agents, chosen) if not 0 <= x < self.n_actions}
        if bad:
            raise ValueError(f"Actions out of range Discrete({self.n_actions}): {bad}.")
        base_actions = rotate_actions(chosen, self.colours, self.n_actions)
        _, base_rewards, done, _, _ = self.warehouse.step(base_actions.tolist())
        rewards = self._colour_rewards(np.asarray(base_rewards, dtype=np.float64))
        agents = self.agents
        out = (
            self._observe(),
            dict(zip(agents, rewards.tolist())),
            {a: False for a in agents},
            {a: bool(done) for a in agents},  # rware only ends on its time limit
            {a: {} for a in agents},
        )
        if done:
            self.agents = []
        return out

    def _colour_rewards(self, base_rewards: np.ndarray) -> np.ndarray:
        """Keeps a delivery reward only where the delivered (still carried) shelf has the robot's colour."""
        rewards = np.zeros(len(base_rewards), dtype=np.float32)
        for i in np.flatnonzero(base_rewards > 0):
            shelf = self.warehouse.agents[i].carrying_shelf
            # With individual rewards a robot is paid only for the requested shelf it carries onto a goal.
            if shelf is not None and self.shelf_colours[shelf.id - 1] == self.colours[i]:
                rewards[i] = base_rewards[i]
        return rewards

    def raw_observations(self) -> np.ndarray:
        """Unpermuted observations ``(n_agents, obs_dim)`` of the current state: rware's flattened
        vector (the values rware computes) plus, with ``observe_shelf_colours``, the shelf colours in view."""
        wh, r = self.warehouse, self.warehouse.sensor_range
        x, y, direction, carrying, robot_id = np.array(
            [(a.x, a.y, a.dir.value, a.carrying_shelf is not None, a.id) for a in wh.agents]).T
        # Robot and shelf id of every cell (0: none; a carried shelf stands under its robot, as in
        # rware's grid), with a border of r empty cells so that every view is in range.
        robot_ids, shelf_ids = np.zeros((2, wh.grid_size[0] + 2 * r, wh.grid_size[1] + 2 * r), np.int64)
        robot_ids[y + r, x + r] = robot_id
        shelf_x, shelf_y, shelf_id = np.array([(s.x, s.y, s.id) for s in wh.shelfs]).T
        shelf_ids[shelf_y + r, shelf_x + r] = shelf_id
        span = np.arange(2 * r + 1)
        rows, cols = y[:, None, None] + span[None, :, None], x[:, None, None] + span[None, None, :]
        robot, shelf = robot_ids[rows, cols].reshape(len(x), -1), shelf_ids[rows, cols].reshape(len(x), -1)
        # Lookups by id, id 0 (nothing there) included: an empty cell shows direction 0, as rware's.
        robot_direction = np.zeros(len(x) + 1, np.int64)
        robot_direction[robot_id] = direction
        requested = np.zeros(len(wh.shelfs) + 1, bool)
        requested[[s.id for s in wh.request_queue]] = True
        one_hot = np.eye(4)
        cells = np.concatenate([(robot > 0)[..., None], one_hot[robot_direction[robot]],
                                (shelf > 0)[..., None], requested[shelf][..., None]], axis=-1)
        parts = [x[:, None], y[:, None], carrying[:, None], one_hot[direction], wh.highways[y, x][:, None],
                 cells.reshape(len(x), -1)]
        if self.observe_shelf_colours:
            colour = np.concatenate([[-1], self.shelf_colours])[shelf]
            parts.append((colour[..., None] == np.arange(self.n_colours)).reshape(len(x), -1))
        return np.concatenate(parts, axis=1, dtype=np.float32)

    def _observe(self) -> dict[str, np.ndarray]:
        obs = self.raw_observations()
        return {a: obs[i][self.obs_permutations[c]]
                for i, (a, c) in enumerate(zip(self.possible_agents, self.colours.tolist()))}


def _preset(size: str, n_agents: int) -> Callable[..., ParallelEnv]:
    return partial(ColouredWarehouse, size=size, n_agents=n_agents)


CRWARE_ENVIRONMENTS: dict[str, Callable[..., ParallelEnv]] = {
    "crware": ColouredWarehouse,
    "crware_1": _preset("tiny", 4),
    "crware_2": _preset("small", 8),
    "crware_3": _preset("medium", 16),
}
