"""Level-based Foraging (LBF) on ``lbforaging`` 2.0 with agents that keep their levels.

Agents on a grid must load food; a load succeeds when the levels of the adjacent agents that load
together sum to at least the food's level, and each of them is paid in proportion to its level
(rewards normalised so that collecting all food pays 1 in total). An agent's level is its type.

Two changes from the stock ``ForagingEnv``, and one of speed:

* **Fixed levels.** The stock env shuffles which agent gets which level on every reset; here agent
  ``i`` always has ``levels[type_i]`` (types in contiguous blocks, ``agents_per_level`` each).
* **Agent levels are not observed.** The env is built with ``observe_agent_levels=False``, so an
  observation is, for each food slot, ``(row, col, level)`` and, for each agent slot (self first),
  ``(row, col)``; coordinates are relative to the agent's ``(2 * sight + 1)``-square view and
  unseen slots are ``(-1, -1[, 0])``. Size ``3 * n_food + 2 * n_agents``.
* **Faster steps, same values.** Valid actions and observations are computed from arrays, not
  per player in Python: about 4 times the stock env steps per second (``benchmarks/envs.py``).

Defaults (the paper's LBF: 12 agents, levels 1-2-3, 4 of each): a 15x15 grid with 8 foods and sight
4 (a 9x9 view, so the task stays partially observable, as in the paper), 50-step episodes. Food
levels are drawn from ``min_food_level..max_food_level``, by default 1 up to the sum of the three
lowest agent levels (stock rule; 3 here). A level-3 agent can load any food alone, a level-1 agent needs
partners for food above level 1 (with ``min_food_level=2``, for every food), so what an agent can
do alone depends on its hidden level (docs/RESULTS.md measures how much that changes the returns
policies reach). 8 foods in 15x15 is about the density of the stock 8x8/2-food tasks and leaves
room for the stock rule that food is never spawned next to other food. Observation size with the
defaults: ``3 * 8 + 2 * 12 = 48``; actions ``Discrete(6)`` (none, north, south, west, east, load).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from lbforaging.foraging.environment import Action, ForagingEnv

from rllib_seps.envs.bps import agent_names
from rllib_seps.envs.typed import TypedParallelEnv


class FixedLevelForagingEnv(ForagingEnv):
    """``ForagingEnv`` whose agent ``i`` keeps level ``fixed_levels[i]`` on every reset, with vector
    observations that leave out agent levels.

    Args:
        fixed_levels: Level of each agent, in agent order.
        **kwargs: Passed to ``ForagingEnv`` (``players``, the player levels and the observation
            kind are set here).
    """

    def __init__(self, fixed_levels: Sequence[int], **kwargs: Any) -> None:
        self.fixed_levels = [int(level) for level in fixed_levels]
        super().__init__(players=len(self.fixed_levels), min_player_level=self.fixed_levels,
                         max_player_level=self.fixed_levels, grid_observation=False,
                         observe_agent_levels=False, **kwargs)

    def spawn_players(self, min_player_levels, max_player_levels) -> None:
        # The stock spawn checks the previous episode's positions too; forget them so that
        # reset(seed=s) gives the same episode however many episodes came before.
        for player in self.players:
            player.position = None
        super().spawn_players(min_player_levels, max_player_levels)
        # The stock spawn permutes levels over agents; give each agent its own level back.
        for player, level in zip(self.players, self.fixed_levels):
            player.level = level

    # The stock ``_gen_valid_moves`` and ``_make_gym_obs`` loop over players and actions in Python
    # (namedtuples per observation, a space check per array): most of an env step's time. These
    # compute the same values from arrays (tests/test_envs.py compares them with the stock
    # methods' at every step, so a change in lbforaging fails there).

    def _gen_valid_moves(self) -> None:
        rows, cols = self.field.shape
        r, c = np.array([p.position for p in self.players]).T
        # Neighbouring cells, clamped to the grid as the stock adjacent_food does.
        up, down = self.field[np.maximum(r - 1, 0), c], self.field[np.minimum(r + 1, rows - 1), c]
        left, right = self.field[r, np.maximum(c - 1, 0)], self.field[r, np.minimum(c + 1, cols - 1)]
        valid = np.column_stack([np.ones_like(r, bool), (r > 0) & (up == 0), (r < rows - 1) & (down == 0),
                                 (c > 0) & (left == 0), (c < cols - 1) & (right == 0),
                                 up + down + left + right > 0]).tolist()
        self._valid_actions = {p: [a for a, ok in zip(_ACTIONS, row) if ok] for p, row in zip(self.players, valid)}

    def _make_gym_obs(self) -> tuple[np.ndarray, ...]:
        n, m = len(self.players), self.max_num_food
        players = np.array([p.position for p in self.players])
        own = np.minimum(players, self.sight)  # where an agent sits in its own view
        corner = players - own  # the view's top-left cell, on the grid
        # Food within `sight` cells of the observer, in row-major order; then the observer and the
        # other agents within its view's square, in agent order; each packed to the front.
        food = np.argwhere(self.field)
        food_view = food[None] - corner[:, None]
        observer, j = np.nonzero((food_view >= 0).all(-1) & (food <= (players + self.sight)[:, None]).all(-1))
        slot = _rank_in_row(observer)
        food_obs = np.tile([-1, -1, 0], (n, m, 1))
        food_obs[observer, slot, :2] = food_view[observer, j]
        food_obs[observer, slot, 2] = self.field[food[j, 0], food[j, 1]]
        player_view = players[None] - corner[:, None]
        in_view = ((player_view >= 0) & (player_view <= 2 * self.sight)).all(-1)
        observer, j = np.nonzero(in_view & ~np.eye(n, dtype=bool))
        player_obs = np.full((n, n, 2), -1)
        player_obs[:, 0] = own
        player_obs[observer, 1 + _rank_in_row(observer)] = player_view[observer, j]
        return tuple(np.concatenate([food_obs.reshape(n, -1), player_obs.reshape(n, -1)], 1).astype(np.float32))


_ACTIONS = tuple(Action)


def _rank_in_row(rows: np.ndarray) -> np.ndarray:
    """For sorted row indices (as ``np.nonzero`` gives), each entry's place within its row."""
    return np.arange(len(rows)) - np.searchsorted(rows, rows)


class LevelBasedForaging(TypedParallelEnv):
    """PettingZoo ParallelEnv of LBF with fixed per-agent levels (see the module docstring).

    Args:
        agents_per_level: Number of agents of each level, e.g. ``(4, 4, 4)``.
        levels: The level of each type, same length as ``agents_per_level``.
        field_size: Side of the square grid.
        n_food: Number of foods spawned per episode.
        sight: View radius (``field_size`` or more makes the grid fully observable).
        max_episode_steps: Time limit in steps (reported as truncation; collecting all food
            terminates).
        min_food_level: Lowest food level.
        max_food_level: Highest food level; defaults to the sum of the three lowest agent levels.
        seed: Seed of the first reset; later resets continue the same random stream.

    Raises:
        ValueError: On mismatched or non-positive counts and levels, food levels out of order, or
            too small a grid.
    """

    TYPE_ATTRIBUTE = "types"  # level index per agent

    metadata = {"name": "level_based_foraging_fixed_levels_v0", "render_modes": []}

    def __init__(self, agents_per_level: Sequence[int] = (4, 4, 4), levels: Sequence[int] = (1, 2, 3),
                 field_size: int = 15, n_food: int = 8, sight: int = 4, max_episode_steps: int = 50,
                 min_food_level: int = 1, max_food_level: int | None = None, seed: int | None = None) -> None:
        counts = tuple(int(c) for c in agents_per_level)
        levels = tuple(int(lv) for lv in levels)
        if not counts or min(counts) < 1:
            raise ValueError(f"agents_per_level must be a non-empty list of positive counts, got {agents_per_level!r}.")
        if len(levels) != len(counts) or min(levels) < 1:
            raise ValueError(f"levels must give one positive level per entry of agents_per_level "
                             f"({len(counts)}), got {levels!r}.")
        if field_size < 3 or field_size ** 2 < sum(counts) + n_food:
            raise ValueError(f"field_size={field_size} leaves no room for {sum(counts)} agents "
                             f"and {n_food} foods.")
        if n_food < 1 or sight < 1 or max_episode_steps < 1:
            raise ValueError(f"n_food, sight and max_episode_steps must be >= 1, "
                             f"got {n_food}, {sight}, {max_episode_steps}.")
        self.types = np.repeat(np.arange(len(counts)), counts)  # contiguous level blocks
        self.levels = np.array(levels)[self.types]
        if max_food_level is None:
            max_food_level = int(np.sort(self.levels)[:3].sum())
        if not 1 <= min_food_level <= max_food_level:
            raise ValueError(f"min_food_level must be between 1 and max_food_level ({max_food_level}), "
                             f"got {min_food_level}: lower it or raise max_food_level.")
        self.base = FixedLevelForagingEnv(
            self.levels.tolist(), min_food_level=int(min_food_level), max_food_level=int(max_food_level),
            field_size=(field_size, field_size), max_num_food=n_food, sight=sight,
            max_episode_steps=max_episode_steps, force_coop=False, normalize_reward=True, penalty=0.0,
        )
        self.possible_agents = agent_names(len(self.types))
        self.agents: list[str] = []
        self.observation_spaces = {a: self.base.observation_space[i] for i, a in enumerate(self.possible_agents)}
        self.action_spaces = {a: self.base.action_space[i] for i, a in enumerate(self.possible_agents)}
        self._seed = seed

    def reset(self, seed: int | None = None, options: dict | None = None):
        # The constructor's seed applies to the first reset only, as in BlindParticleSpread.
        seed, self._seed = (self._seed if seed is None else seed), None
        obs, _ = self.base.reset(seed=seed)
        self.agents = list(self.possible_agents)
        return dict(zip(self.agents, obs)), {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]):
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"No action given for agents {missing}.")
        n_actions = self.action_spaces[self.possible_agents[0]].n
        chosen = [int(actions[a]) for a in self.possible_agents]
        bad = {a: x for a, x in zip(self.possible_agents, chosen) if not 0 <= x < n_actions}
        if bad:
            raise ValueError(f"Actions out of range Discrete({n_actions}): {bad}.")
        obs, rewards, done, _, _ = self.base.step(chosen)
        all_food_loaded = bool(self.base.field.sum() == 0)
        agents = self.agents
        out = (
            dict(zip(agents, obs)),
            dict(zip(agents, [float(r) for r in rewards])),
            {a: all_food_loaded for a in agents},
            {a: bool(done) and not all_food_loaded for a in agents},
            {a: {} for a in agents},
        )
        if done:
            self.agents = []
        return out


LBF_ENVIRONMENTS = {"lbf": LevelBasedForaging}
