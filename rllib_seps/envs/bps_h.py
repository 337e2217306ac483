"""BPS-h: Blind-particle Spread where each colour group has its own observation space.

The physics, rewards and hidden colours are those of :class:`BlindParticleSpread`; only what each
colour group *observes* differs. Two variants:

``"sensors"`` (default)
    Genuinely different sensors, hence different observation sizes. Every agent still observes its
    own velocity (2) and position (2). The relative position of each landmark is read through the
    group's ring of ``2 + g`` directional range sensors (group ``g``): sensor ``k`` points at angle
    ``k * pi / (2 + g)`` and reports the projection of the landmark's relative position on that
    direction. Group 0 has sensors at 0 and 90 degrees, i.e. exactly the standard BPS observation;
    every group's projection has full rank, so each group sees the landmarks' full geometry and the
    type remains learnable from the reward. Observation size of group ``g``:
    ``4 + n_colours * (2 + g)``.

``"permutation"``
    The reference fork's version: the standard BPS observation vector, shuffled by a fixed
    permutation per group. Permutations come from ``permutation_seed``, independent of the episode
    seed, so they stay fixed across resets and runs. Every group has size ``4 + 2 * n_colours``.

Table 1 presets (agents per colour): ``bps_h_1`` 5-5-5, ``bps_h_2`` 6-6-6-6-6, ``bps_h_3`` 4 x 50.
The per-group transform is one small matrix product (or gather) per group, so 200 agents stay fast.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from rllib_seps.envs.bps import BlindParticleSpread

VARIANTS = ("sensors", "permutation")

# Table 1 of the SePS paper: agents per colour (colour groups = observation-space groups).
BPS_H_PRESETS: dict[str, tuple[int, ...]] = {
    "bps_h_1": (5, 5, 5),
    "bps_h_2": (6, 6, 6, 6, 6),
    "bps_h_3": (50, 50, 50, 50),
}

_SELF_DIM = 4  # own velocity (2) and position (2), first in the standard BPS observation


def sensor_directions(n_sensors: int) -> np.ndarray:
    """Unit vectors of ``n_sensors`` directional sensors spread evenly over half a turn.

    Args:
        n_sensors: Number of sensors, at least 2 (two independent directions keep full rank).

    Returns:
        Array ``(n_sensors, 2)``; row ``k`` is ``(cos, sin)`` of ``k * pi / n_sensors``.
    """
    if n_sensors < 2:
        raise ValueError(f"n_sensors must be >= 2 so that positions stay recoverable, got {n_sensors}.")
    angles = np.arange(n_sensors) * np.pi / n_sensors
    dirs = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    # Exact zeros where cos/sin vanish, so group 0 reproduces the standard observation bit for bit.
    dirs[np.abs(dirs) < 1e-12] = 0.0
    return dirs.astype(np.float32)


def sensor_obs_dim(n_landmarks: int, n_sensors: int) -> int:
    """Observation size of a group with ``n_sensors`` directional sensors (pairs with :func:`sensor_observation`)."""
    return _SELF_DIM + n_landmarks * n_sensors


def sensor_observation(base_obs: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Turns standard BPS observations into a sensor group's observations.

    Args:
        base_obs: Standard BPS observations ``(n, 4 + 2 * n_landmarks)``.
        directions: The group's sensor directions ``(n_sensors, 2)``.

    Returns:
        Array ``(n, 4 + n_landmarks * n_sensors)``: velocity, position, then for each landmark the
        projections of its relative position on every sensor direction.
    """
    n = base_obs.shape[0]
    rel = base_obs[:, _SELF_DIM:].reshape(n, -1, 2)
    readings = (rel @ directions.T).reshape(n, -1)
    return np.concatenate([base_obs[:, :_SELF_DIM], readings], axis=1).astype(np.float32)


def group_permutations(dim: int, n_groups: int, seed: int) -> list[np.ndarray]:
    """Fixed, pairwise distinct, non-identity permutations of a ``dim``-vector, one per group.

    Args:
        dim: Length of the observation vector (at least 3, so enough permutations exist).
        n_groups: Number of groups.
        seed: Seed of the permutations; independent of any episode seed.
    """
    if dim < 3:
        raise ValueError(f"dim must be >= 3 to draw distinct non-identity permutations, got {dim}.")
    rng = np.random.default_rng(seed)
    perms: list[np.ndarray] = []
    identity = np.arange(dim)
    while len(perms) < n_groups:
        p = rng.permutation(dim)
        # Redraw the (rare) identity or duplicate so every group really differs.
        if not np.array_equal(p, identity) and not any(np.array_equal(p, q) for q in perms):
            perms.append(p)
    return perms


class BlindParticleSpreadH(BlindParticleSpread):
    """PettingZoo ParallelEnv of BPS-h: BPS with one observation space per colour group.

    Agent ids, colours (contiguous blocks), actions (``Discrete(5)``), rewards and seeding are those
    of :class:`BlindParticleSpread`. :meth:`observe_groups` turns the standard BPS observations into
    the per-group observations that :meth:`reset` and :meth:`step` return; the array API
    (:meth:`reset_arrays`, :meth:`step_arrays`) serves the ``"permutation"`` variant, whose groups
    share one observation shape.

    Args:
        agents_per_colour: Number of agents of each colour (= observation group).
        max_cycles: Episode length in steps.
        variant: ``"sensors"`` (different sizes per group) or ``"permutation"`` (same size, fixed
            per-group permutation); see the module docstring.
        permutation_seed: Seed of the per-group permutations (``"permutation"`` only).
        seed: Seed of the first reset; later resets continue the same random stream.

    Raises:
        ValueError: If ``variant`` is not one of :data:`VARIANTS`.
    """

    metadata = {"name": "blind_particle_spread_h_v0", "render_modes": []}

    def __init__(self, agents_per_colour: Sequence[int] = (5, 5, 5), max_cycles: int = 50,
                 variant: str = "sensors", permutation_seed: int = 0, seed: int | None = None) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}.")
        super().__init__(agents_per_colour, max_cycles, seed)
        self.variant = variant
        bounds = np.concatenate([[0], np.cumsum(self.agents_per_colour)])
        self._group_slices = [slice(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]
        base_dim = _SELF_DIM + 2 * self.n_colours
        if variant == "sensors":
            self._directions = [sensor_directions(2 + g) for g in range(self.n_colours)]
            dims = [sensor_obs_dim(self.n_colours, 2 + g) for g in range(self.n_colours)]
        else:
            self.permutations = group_permutations(base_dim, self.n_colours, permutation_seed)
            dims = [base_dim] * self.n_colours
        self.group_obs_dims: tuple[int, ...] = tuple(dims)
        self.observation_spaces = {
            agent: spaces.Box(-np.inf, np.inf, (dims[colour],), np.float32)
            for agent, colour in zip(self.possible_agents, self.colours.tolist())
        }

    def observe_groups(self, base_obs: np.ndarray) -> list[np.ndarray]:
        """Per-group observations from standard BPS observations.

        Args:
            base_obs: Standard BPS observations ``(n_agents, 4 + 2 * n_colours)`` in agent order.

        Returns:
            One array per colour group, ``(agents_in_group, group_obs_dims[g])``.
        """
        if self.variant == "sensors":
            return [sensor_observation(base_obs[s], d) for s, d in zip(self._group_slices, self._directions)]
        return [base_obs[s][:, p] for s, p in zip(self._group_slices, self.permutations)]

    def array_observations(self, base_obs: np.ndarray) -> np.ndarray:
        """Every agent's observation as one array (``"permutation"`` variant only).

        Raises:
            ValueError: For the ``"sensors"`` variant, whose groups' observations differ in size.
        """
        if self.variant != "permutation":
            raise ValueError(f"BPS-h {self.variant!r} observations differ in size between groups "
                             f"{self.group_obs_dims}; they cannot form one array.")
        return np.concatenate(self.observe_groups(base_obs), axis=0)

    def _per_agent(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        agents = self.possible_agents
        out: dict[str, np.ndarray] = {}
        for s, group_obs in zip(self._group_slices, self.observe_groups(obs)):
            out.update(zip(agents[s], group_obs))
        return out


def _preset(counts: tuple[int, ...]) -> Callable[..., ParallelEnv]:
    return partial(BlindParticleSpreadH, agents_per_colour=counts)


BPS_H_ENVIRONMENTS: dict[str, Callable[..., ParallelEnv]] = {
    "bps_h": BlindParticleSpreadH,
    **{name: _preset(counts) for name, counts in BPS_H_PRESETS.items()},
}
