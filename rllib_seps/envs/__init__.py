"""The paper's environments as PettingZoo ParallelEnvs, registered with RLlib under stable names.

Importing this module registers every name in :data:`ENVIRONMENTS` with ``ray.tune.register_env``,
so a config (or a YAML file) can say ``env: bps_1``.
"""

from __future__ import annotations

from typing import Callable

from pettingzoo import ParallelEnv
from ray.tune.registry import register_env

from rllib_seps.envs.adapter import SortedParallelEnv, rllib_creator
from rllib_seps.envs.bps import BPS_PRESETS, BlindParticleSpread
from rllib_seps.envs.bps_h import BPS_H_ENVIRONMENTS
from rllib_seps.envs.crware import CRWARE_ENVIRONMENTS
from rllib_seps.envs.lbf import LBF_ENVIRONMENTS
from rllib_seps.envs.pettingzoo_envs import PETTINGZOO_ENVIRONMENTS
from rllib_seps.rllib.internals import call_after_every_ray_init


def _bps_preset(counts: tuple[int, ...]) -> Callable[..., ParallelEnv]:
    def make(**options) -> ParallelEnv:
        return BlindParticleSpread(agents_per_colour=counts, **options)

    return make


ENVIRONMENTS: dict[str, Callable[..., ParallelEnv]] = {
    "bps": BlindParticleSpread,
    **{name: _bps_preset(counts) for name, counts in BPS_PRESETS.items()},
    **BPS_H_ENVIRONMENTS,
    **CRWARE_ENVIRONMENTS,
    **LBF_ENVIRONMENTS,
    **PETTINGZOO_ENVIRONMENTS,
}


def make_env(name: str, **options) -> SortedParallelEnv:
    """Builds a registered environment as an RLlib MultiAgentEnv with sorted agents.

    Raises:
        ValueError: If ``name`` is not one of :data:`ENVIRONMENTS`.
    """
    if name not in ENVIRONMENTS:
        raise ValueError(f"Unknown environment {name!r}; known: {sorted(ENVIRONMENTS)}.")
    return SortedParallelEnv(ENVIRONMENTS[name](**options))


def register_envs() -> None:
    """Registers every environment of :data:`ENVIRONMENTS` with RLlib (idempotent)."""
    for name, make in ENVIRONMENTS.items():
        register_env(name, rllib_creator(make))


register_envs()
# Ray forgets registrations when its session ends: register again after every ray.init().
call_after_every_ray_init(register_envs)

__all__ = ["ENVIRONMENTS", "BlindParticleSpread", "SortedParallelEnv", "make_env", "register_envs"]
