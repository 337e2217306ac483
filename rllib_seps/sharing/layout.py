"""A shared module's input: its space, how agents' observations go in, how a batch comes out.

A module that serves agents of different spaces (or needs agent indication, or AdaPS masks) takes
one input per agent step that carries everything it needs: the agent's padded observation with its
indicator, a mask over the padded action outputs (1 for the agent's own actions, where legal if the
env gives legal-action masks), for AdaPS the agent's cluster, and for a grouped module (fast
execution: one module holding the parameters of every group of agents) the agent's group.

- Vectors (and matrices, flattened): one float32 vector ``[observation, indicator code, action
  mask, cluster index, group index]``. One array per step instead of a Dict: RLlib's per-step episode
  bookkeeping costs about twice as much for a Dict (see benchmarks/overhead.py).
- Images ``(H, W, C)``: a Dict ``{"observations": indicated image, "action_mask", ["cluster"],
  ["group"]}``
  (a CNN needs the image's layout, and uint8 pixels stay uint8).

:class:`InputLayout` is the single source of truth for this: the sharing plan declares
:attr:`InputLayout.space`, the connector calls :meth:`InputLayout.pack`, the module calls
:meth:`InputLayout.unpack`. Built on the paired transforms of :mod:`rllib_seps.sharing.spaces`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Mapping, NamedTuple, Sequence

import gymnasium as gym
import numpy as np

from rllib_seps.sharing import spaces as sp

OBS_KEY, MASK_KEY, CLUSTER_KEY, GROUP_KEY = "observations", "action_mask", "cluster", "group"  # image inputs' keys


class AgentCode(NamedTuple):
    """What a layout adds to one agent's observations: the same at every step.

    Attributes:
        indicator: The agent's indicator value (index or type), or None without indication.
        action_mask: float32 ``(mask_size,)``, 1 for the agent's own actions.
        cluster: The agent's AdaPS cluster, or None without AdaPS.
        group: The agent's parameter group in a grouped module, or None without groups.
    """

    indicator: int | None
    action_mask: np.ndarray
    cluster: int | None
    group: int | None = None


class Codes(NamedTuple):
    """The codes of a batch of agents, stacked once and reused (see :meth:`InputLayout.codes`).

    Attributes:
        indicators: ``(B,)`` int64, or None without indication.
        action_mask: ``(B, mask_size)`` float32.
        cluster: ``(B,)`` int64, or None without AdaPS.
        group: ``(B,)`` int64, or None without groups.
        tail: Vectors only: ``(B, T)`` float32 ``[indicator code, action mask, cluster, group]``.
    """

    indicators: np.ndarray | None
    action_mask: np.ndarray
    cluster: np.ndarray | None
    group: np.ndarray | None
    tail: np.ndarray | None


class Unpacked(NamedTuple):
    """A batch of module inputs, taken apart (numpy arrays or torch tensors).

    Attributes:
        observations: ``(B, D)`` indicated observations (vectors), or ``(B, H, W, C')`` images.
        action_mask: ``(B, mask_size)``.
        cluster: ``(B,)`` cluster indices, or None without AdaPS.
        group: ``(B,)`` group indices, or None without groups.
    """

    observations: Any
    action_mask: Any
    cluster: Any
    group: Any


@dataclass(frozen=True)
class InputLayout:
    """The input of a module shared by agents whose spaces are padded to common ones.

    Attributes:
        observation_space: The padded observation space, before indication (a Box).
        action_space: The padded action space (Discrete, MultiDiscrete or 1-D Box).
        indication: Agent indication method (:data:`rllib_seps.sharing.spaces.VECTOR_METHODS` or
            ``IMAGE_METHODS``), or None.
        n_indicators: Number of distinct indicator values (0 without indication).
        n_clusters: Number of AdaPS clusters (0 without AdaPS: no cluster entry).
        n_groups: Number of parameter groups of a grouped module (0 for a module with one set of
            parameters: no group entry).
    """

    observation_space: gym.spaces.Box
    action_space: gym.Space
    indication: str | None = None
    n_indicators: int = 0
    n_clusters: int = 0
    n_groups: int = 0

    @property
    def image(self) -> bool:
        """True for ``(H, W, C)`` images, whose input is a Dict."""
        return len(self.observation_space.shape) == 3

    @property
    def mask_size(self) -> int:
        return sp.mask_size(self.action_space)

    @cached_property
    def indicated_space(self) -> gym.spaces.Box:
        """The observation part of the input: the padded observation (flattened for vectors),
        indicated."""
        obs = self.observation_space
        if self.image:
            return (obs if self.indication is None
                    else sp.indicated_image_space(obs, self.indication, self.n_indicators))
        flat = gym.spaces.Box(obs.low.ravel(), obs.high.ravel(), dtype=obs.dtype)
        return flat if self.indication is None else sp.indicated_space(flat, self.indication, self.n_indicators)

    @cached_property
    def space(self) -> gym.Space:
        """The module's observation space: what :meth:`pack` emits."""
        mask = gym.spaces.Box(0.0, 1.0, (self.mask_size,), np.float32)
        if self.image:
            parts = {OBS_KEY: self.indicated_space, MASK_KEY: mask}
            if self.n_clusters:
                parts[CLUSTER_KEY] = gym.spaces.Box(0, self.n_clusters - 1, (), np.int64)
            if self.n_groups:
                parts[GROUP_KEY] = gym.spaces.Box(0, self.n_groups - 1, (), np.int64)
            return gym.spaces.Dict(parts)
        obs = self.indicated_space
        indices = [n - 1 for n in (self.n_clusters, self.n_groups) if n]  # cluster, group
        low = np.concatenate([obs.low.astype(np.float32), mask.low, np.zeros(len(indices), np.float32)])
        high = np.concatenate([obs.high.astype(np.float32), mask.high, np.array(indices, np.float32)])
        return gym.spaces.Box(low, high, dtype=np.float32)

    def agent_code(self, own_action_space: gym.Space, *, indicator: int | None = None,
                   cluster: int | None = None, group: int | None = None) -> AgentCode:
        """The constant part of one agent's inputs.

        Raises:
            ValueError: If indication (AdaPS, groups) needs an ``indicator`` (``cluster``,
                ``group``) that is missing or out of range, or the agent's action space does not fit.
        """
        if (indicator is None) != (self.indication is None):
            raise ValueError(f"Layout with indication {self.indication!r} got indicator {indicator!r}.")
        for name, value, n in (("cluster", cluster, self.n_clusters), ("group", group, self.n_groups)):
            if (value is None) != (n == 0):
                raise ValueError(f"Layout with {n} {'AdaPS clusters' if name == 'cluster' else 'groups'} "
                                 f"got {name} {value!r}.")
            if value is not None and not 0 <= value < n:
                raise ValueError(f"{name.capitalize()} {value} outside 0..{n - 1}.")
        mask = sp.action_mask(own_action_space, self.action_space).astype(np.float32)
        return AgentCode(indicator, mask, cluster, group)

    def codes(self, agent_codes: Sequence[AgentCode]) -> Codes:
        """The codes of a batch of agents, stacked (compute once per set of agents, reuse)."""
        indicators = (None if self.indication is None
                      else np.array([c.indicator for c in agent_codes], np.int64))
        masks = np.stack([c.action_mask for c in agent_codes]).astype(np.float32)
        cluster = None if not self.n_clusters else np.array([c.cluster for c in agent_codes], np.int64)
        group = None if not self.n_groups else np.array([c.group for c in agent_codes], np.int64)
        tail = None
        if not self.image:
            parts = [masks] + [index[:, None].astype(np.float32) for index in (cluster, group) if index is not None]
            if indicators is not None:
                empty = np.zeros((len(agent_codes), 0), np.float32)
                parts.insert(0, sp.indicate(empty, indicators, self.indication, self.n_indicators))
            tail = np.concatenate(parts, axis=1)
        for array in (indicators, masks, cluster, group, tail):
            if array is not None:
                array.flags.writeable = False  # shared by every step's inputs
        return Codes(indicators, masks, cluster, group, tail)

    def pack(self, observations: Any, own_space: gym.Space, codes: Codes) -> np.ndarray | dict:
        """The module inputs of a batch of agents that share one own observation space.

        Args:
            observations: ``(B, ...)`` observations of ``own_space`` (Dict/Tuple spaces: a
                structure of such arrays, leaf by leaf).
            own_space: The agents' own observation space.
            codes: The agents' :meth:`codes`, in the same order.

        Returns:
            Vectors: ``(B, space.shape[0])`` float32. Images: a Dict of ``(B, ...)`` arrays with
            the keys of :attr:`space`. The action mask is the agents' padding mask, times the
            env's legal-action mask where ``own_space`` carries one
            (:func:`rllib_seps.sharing.spaces.env_action_mask`).
        """
        x = sp.pad_observation(observations, own_space, self.observation_space)
        mask = codes.action_mask
        legal = sp.env_action_mask(observations, own_space)
        if legal is not None:
            # Each row's own actions, in order, are the padding mask's ones.
            mask = np.zeros_like(mask)
            mask[codes.action_mask > 0] = legal.ravel()
        if self.image:
            if self.indication is not None:
                x = sp.indicate_image(x, self.observation_space, codes.indicators, self.indication,
                                      self.n_indicators)
            packed = {OBS_KEY: x, MASK_KEY: mask}
            for key, index in ((CLUSTER_KEY, codes.cluster), (GROUP_KEY, codes.group)):
                if index is not None:
                    packed[key] = index
            return packed
        x = x.reshape(len(x), -1).astype(np.float32, copy=False)
        packed = np.concatenate([x, codes.tail], axis=1)
        if legal is not None:
            start = self.indicated_space.shape[0]
            packed[:, start:start + self.mask_size] = mask
        return packed

    def unpack(self, module_input: Any) -> Unpacked:
        """Takes a batch of inputs (or one input) apart: numpy arrays or torch tensors alike."""
        if isinstance(module_input, Mapping):
            return Unpacked(module_input[OBS_KEY], module_input[MASK_KEY], module_input.get(CLUSTER_KEY),
                            module_input.get(GROUP_KEY))
        n_obs = self.indicated_space.shape[0]
        n_mask = self.mask_size
        cluster = module_input[..., n_obs + n_mask] if self.n_clusters else None
        group = module_input[..., n_obs + n_mask + bool(self.n_clusters)] if self.n_groups else None
        return Unpacked(module_input[..., :n_obs], module_input[..., n_obs:n_obs + n_mask], cluster, group)
