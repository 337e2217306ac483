"""Blind-particle Spread (BPS): the SePS paper's particle world with hidden agent colours.

Each colour has one landmark; every agent carries a colour it cannot observe and is rewarded
``-0.5 * distance`` to the landmark of its own colour. An agent can only find out which landmark
is its own through the reward, which is what makes one shared policy without identity fall into
the "middle of all landmarks" local minimum.

The physics follow the MPE particle world (damping 0.25, dt 0.1, sensitivity 5, unit mass, no
collisions), vectorised over agents so that one step of 200 agents costs well under a millisecond.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from gymnasium import spaces

from rllib_seps.envs.typed import TypedParallelEnv

# Table 1 of the SePS paper: agents per colour.
BPS_PRESETS: dict[str, tuple[int, ...]] = {
    "bps_1": (5, 5, 5),
    "bps_2": (10, 10, 10),
    "bps_3": (6, 6, 6, 6, 6),
    "bps_4": (2, 2, 2, 15, 9),
    "bps_200": (50, 50, 50, 50),
}

# MPE discrete actions: no-op, -x, +x, -y, +y.
_MOVES = np.array([[0.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]], dtype=np.float32)
_DAMPING = 0.25
_DT = 0.1
_SENSITIVITY = 5.0


def agent_names(n: int) -> list[str]:
    """Zero-padded agent ids, so that sorted order is index order (``agent_000`` ...)."""
    width = max(2, len(str(n - 1)))
    return [f"agent_{i:0{width}d}" for i in range(n)]


class BlindParticleSpread(TypedParallelEnv):
    """PettingZoo ParallelEnv of Blind-particle Spread.

    Observation of an agent (float32, shape ``(4 + 2 * n_colours,)``): own velocity (2), own
    position (2), relative position of every landmark (2 each). Colours are not observed.
    Actions: ``Discrete(5)`` (no-op and four directions). Rewards are per agent.

    Args:
        agents_per_colour: Number of agents of each colour, e.g. ``(5, 5, 5)`` for BPS(1).
        max_cycles: Episode length in steps (the paper uses 50).
        seed: Seed of the first reset; later resets continue the same random stream.
    """

    metadata = {"name": "blind_particle_spread_v0", "render_modes": []}

    def __init__(self, agents_per_colour: Sequence[int] = (5, 5, 5), max_cycles: int = 50,
                 seed: int | None = None) -> None:
        counts = tuple(int(c) for c in agents_per_colour)
        if not counts or min(counts) < 1:
            raise ValueError(f"agents_per_colour must be a non-empty list of positive counts, got {agents_per_colour!r}.")
        if max_cycles < 1:
            raise ValueError(f"max_cycles must be >= 1, got {max_cycles}.")
        self.agents_per_colour = counts
        self.n_colours = len(counts)
        self.max_cycles = int(max_cycles)
        self.colours = np.repeat(np.arange(self.n_colours), counts)  # contiguous colour blocks
        self.possible_agents = agent_names(len(self.colours))
        self.agents: list[str] = []
        obs_dim = 4 + 2 * self.n_colours
        self.observation_spaces = {
            a: spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32) for a in self.possible_agents
        }
        self.action_spaces = {a: spaces.Discrete(len(_MOVES)) for a in self.possible_agents}
        self._rng = np.random.default_rng(seed)
        self._t = 0

    def reset(self, seed: int | None = None, options: dict | None = None):
        self._start(seed)
        return self._per_agent(self._observe()), {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]):
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"No action given for agents {missing}.")
        act = np.array([int(actions[a]) for a in self.possible_agents], dtype=np.int64)
        if act.min() < 0 or act.max() >= len(_MOVES):
            bad = {a: actions[a] for a in self.possible_agents if not 0 <= int(actions[a]) < len(_MOVES)}
            raise ValueError(f"Actions out of range Discrete({len(_MOVES)}): {bad}.")
        rewards, done = self._move(act)
        agents = self.agents
        out = (
            self._per_agent(self._observe()),
            dict(zip(agents, rewards.tolist())),
            {a: False for a in agents},
            {a: done for a in agents},
            {a: {} for a in agents},
        )
        if done:
            self.agents = []
        return out

    # The array API (used by fast execution, see rllib_seps.rllib.fast.arrays): every agent at once,
    # as arrays in possible_agents order, no dicts and no checks.

    def reset_arrays(self, seed: int | None = None) -> np.ndarray:
        """Resets; returns every agent's observation, ``(n_agents, *obs_shape)``."""
        self._start(seed)
        return self.array_observations(self._observe())

    def step_arrays(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool, bool]:
        """Steps all agents from ``(n_agents,)`` integer actions.

        Returns:
            Observations ``(n_agents, *obs_shape)``, rewards ``(n_agents,)`` float32, whether the
            episode terminated (never) and whether it was truncated (time limit), for all agents.
        """
        rewards, done = self._move(actions)
        return self.array_observations(self._observe()), rewards, False, done

    def array_observations(self, base_obs: np.ndarray) -> np.ndarray:
        """Every agent's observation as one array, from the standard BPS observations.

        Raises:
            ValueError: In subclasses whose agents' observations differ in shape.
        """
        return base_obs

    def _start(self, seed: int | None) -> None:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        n = len(self.possible_agents)
        self.agents = list(self.possible_agents)
        self._t = 0
        self.pos = self._rng.uniform(-1.0, 1.0, (n, 2)).astype(np.float32)
        self.vel = np.zeros((n, 2), np.float32)
        self.landmarks = self._rng.uniform(-3.0, 3.0, (self.n_colours, 2)).astype(np.float32)

    def _move(self, actions: np.ndarray) -> tuple[np.ndarray, bool]:
        """Applies ``(n_agents,)`` integer actions; returns the rewards and whether time is up."""
        force = _MOVES[actions] * _SENSITIVITY
        self.vel = self.vel * (1.0 - _DAMPING) + force * _DT
        self.pos = self.pos + self.vel * _DT
        self._t += 1
        own_landmark = self.landmarks[self.colours]
        rewards = -0.5 * np.linalg.norm(self.pos - own_landmark, axis=1)
        return rewards.astype(np.float32), self._t >= self.max_cycles

    def _observe(self) -> np.ndarray:
        rel = (self.landmarks[None, :, :] - self.pos[:, None, :]).reshape(len(self.pos), -1)
        return np.concatenate([self.vel, self.pos, rel], axis=1).astype(np.float32)

    def _per_agent(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.possible_agents, obs))
