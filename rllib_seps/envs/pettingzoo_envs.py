"""PettingZoo environments with heterogeneous or image observations, for padding and indication.

- ``simple_world_comm``: mpe2's simple_world_comm_v3. Observations (34,) for the adversaries
  and the lead adversary, (28,) for the good agents; actions Discrete(20) for the lead adversary,
  Discrete(5) for the others.
- ``kaz_vector``: Knights-Archers-Zombies (v11) with its vector state, (27, 5) flattened to
  (135,) float32 (agent indication appends to vectors).
- ``cooperative_pong_grey``: cooperative pong, grey, resized (default 32x32) and frame-stacked
  to (H, W, frames) uint8.

Only SuperSuit's plain observation transforms are used (grey, resize, frame stack, flatten,
dtype); padding and agent indication are rllib-seps' own (connectors and modules), never
SuperSuit's wrappers. Each factory takes the environment's keyword options plus ``seed``, which
seeds the first reset (later resets continue the same random stream).
"""

from __future__ import annotations

import numpy as np
from pettingzoo import ParallelEnv

# mpe2, supersuit and pettingzoo.butterfly (pygame) are imported inside the factories: together
# they add over a second to every `import rllib_seps.envs`, including in every Ray worker.


def _seeded(env: ParallelEnv, seed: int | None) -> ParallelEnv:
    if seed is not None:
        env.reset(seed=int(seed))
    return env


def simple_world_comm(max_cycles: int = 25, seed: int | None = None, **options) -> ParallelEnv:
    """mpe2 simple_world_comm_v3 with discrete actions (``options`` go to mpe2)."""
    from mpe2 import simple_world_comm_v3

    return _seeded(simple_world_comm_v3.parallel_env(max_cycles=max_cycles, **options), seed)


def kaz_vector(max_cycles: int = 900, seed: int | None = None, **options) -> ParallelEnv:
    """Knights-Archers-Zombies with flat float32 vector observations (``options`` go to KAZ)."""
    import supersuit
    from pettingzoo.butterfly import knights_archers_zombies_v11

    env = knights_archers_zombies_v11.parallel_env(max_cycles=max_cycles, obs_method="vector", **options)
    env = supersuit.dtype_v0(supersuit.flatten_v0(env), np.float32)
    return _seeded(env, seed)


def cooperative_pong_grey(size: int = 32, frames: int = 2, max_cycles: int = 900,
                          seed: int | None = None, **options) -> ParallelEnv:
    """Cooperative pong as grey (size, size, frames) uint8 images (``options`` go to pong)."""
    import supersuit
    from pettingzoo.butterfly import cooperative_pong_v6

    env = cooperative_pong_v6.parallel_env(max_cycles=max_cycles, **options)
    env = supersuit.color_reduction_v0(env, mode="full")
    env = supersuit.resize_v1(env, size, size)
    env = supersuit.frame_stack_v1(env, frames)
    return _seeded(env, seed)


PETTINGZOO_ENVIRONMENTS = {
    "simple_world_comm": simple_world_comm,
    "kaz_vector": kaz_vector,
    "cooperative_pong_grey": cooperative_pong_grey,
}
"""Name -> ParallelEnv factory, merged into :data:`rllib_seps.envs.ENVIRONMENTS`."""
