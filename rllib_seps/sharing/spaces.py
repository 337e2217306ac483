"""Pure, paired space transforms that let one network serve agents with different spaces.

Each data function has a space function that declares where its outputs lie:
observation padding (`padded_observation_space` / `pad_observation` / `observation_mask`),
action padding (`padded_action_space` / `action_mask` / `unpad_action`), the env's own legal-action
masks (`has_env_action_mask` / `env_action_mask`), agent indication for
vectors (`indicated_space` / `indicate`) and for (H, W, C) images (`indicated_image_space` /
`indicate_image`). Definitions follow Terry et al. 2020 ("Revisiting parameter sharing", sec. 5,
app. A.2.1) and Terry et al. 2023 ("Agent indication and padding", secs. 3.2-4.2).
numpy and gymnasium only (no Ray): connectors and modules are thin adapters over these.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces as gs

VECTOR_METHODS = ("one_hot", "type", "binary")
"""Vector indication methods; "type" is "one_hot" over type (or cluster) indices."""
IMAGE_METHODS = ("identity", "geometric", "binary", "inversion", "inversion_replacement")
"""Image indication methods of Terry et al. 2023, sec. 4.2."""
_TWO_TYPE_METHODS = ("geometric", "inversion", "inversion_replacement")
_LEAVES = (gs.Box, gs.Discrete, gs.MultiDiscrete, gs.MultiBinary)
_ACTION_KINDS = (gs.Discrete, gs.MultiDiscrete, gs.Box)


# --- Shared checks and helpers ---------------------------------------------------------------
def _check_range(values: Any, n: Any, what: str, fix: str) -> np.ndarray:
    """Returns `values` as an int array after checking `0 <= values < n` (n may be an array)."""
    v = np.asarray(values)
    if not np.issubdtype(v.dtype, np.integer):
        raise TypeError(f"{what} must be integers, got dtype {v.dtype} ({values!r}). {fix}")
    bad = (v < 0) | (v >= n)
    if np.any(bad):
        raise ValueError(f"{what} {v[bad].tolist()} outside [0, {n}). {fix}")
    return v


def _check_trailing(x: np.ndarray, shape: tuple[int, ...], what: str) -> None:
    """Checks that `x` has shape `shape` or `(*batch, *shape)`."""
    if x.ndim < len(shape) or x.shape[x.ndim - len(shape) :] != tuple(shape):
        raise ValueError(
            f"{what} has shape {x.shape}; required {tuple(shape)} or (*batch, *{tuple(shape)}). "
            "Fix: pass data of the space given alongside it."
        )


def _pad_trailing(x: np.ndarray, shape: tuple[int, ...], value: float = 0) -> np.ndarray:
    """Pads the last `len(shape)` axes of `x` at their ends up to `shape` with `value`."""
    lead = x.ndim - len(shape)
    if x.shape[lead:] == tuple(shape):  # nothing to pad (the common case): no copy
        return x
    widths = [(0, 0)] * lead + [(0, t - s) for s, t in zip(x.shape[lead:], shape)]
    return np.pad(x, widths, constant_values=value)


def _one_hot(index: np.ndarray, n: int) -> np.ndarray:
    """float32 codes `(*index.shape, n)`; `index` already lies in [0, n)."""
    return (np.asarray(index)[..., None] == np.arange(n)).astype(np.float32)


def _n_bits(n: int) -> int:
    """ceil(log2(n)) bits, at least 1."""
    return max(1, (n - 1).bit_length())


def _binary_code(index: np.ndarray, n: int) -> np.ndarray:
    """float32 codes `(*index.shape, _n_bits(n))`, least significant bit first."""
    return ((np.asarray(index)[..., None] >> np.arange(_n_bits(n))) & 1).astype(np.float32)


def _check_method(method: str, valid: tuple[str, ...], n: int) -> None:
    if method not in valid:
        close = difflib.get_close_matches(str(method), valid, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown indication method {method!r}; required one of {valid}.{hint}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n (number of agents or types) must be a positive int, got {n!r}.")


def _warn_if_degenerate(n: int) -> None:
    if n == 1:
        warnings.warn(
            "Agent indication with n=1 gives every agent the same indicator, which adds no "
            "information. Fix: pass the number of agents or types in the group (n >= 2).",
            stacklevel=3,
        )


# --- Identity -----------------------------------------------------------------------------------
def space_key(space: gs.Space) -> tuple:
    """A hashable key that is equal for two spaces exactly when they are the same space.

    `repr` shortens large bounds ("...") and gymnasium's `Box.__eq__` compares bounds with
    `np.allclose`, so neither tells two spaces apart that differ in one bound; this key holds the
    exact bytes.
    """
    if isinstance(space, gs.Box):
        return ("Box", space.shape, space.dtype.str, space.low.tobytes(), space.high.tobytes())
    if isinstance(space, gs.Discrete):
        return ("Discrete", int(space.n), int(space.start))
    if isinstance(space, gs.MultiDiscrete):
        return ("MultiDiscrete", space.nvec.shape, space.nvec.tobytes(), space.start.tobytes())
    if isinstance(space, gs.MultiBinary):
        return ("MultiBinary", tuple(np.atleast_1d(space.n).tolist()))
    if isinstance(space, gs.Dict):
        return ("Dict", tuple((key, space_key(sub)) for key, sub in space.spaces.items()))
    if isinstance(space, gs.Tuple):
        return ("Tuple", tuple(space_key(sub) for sub in space.spaces))
    # Spaces this package never transforms (Text, Graph, Sequence ...) can only be served
    # unchanged by RLlib's own modules; their repr holds their parameters.
    return (type(space).__name__, repr(space))


def same_space(a: gs.Space, b: gs.Space) -> bool:
    """True if `a` and `b` are exactly the same space (see :func:`space_key`)."""
    return space_key(a) == space_key(b)


# --- Flattening ------------------------------------------------------------------------------
def _check_supported(space: Any, name: str) -> None:
    """Raises TypeError unless `space` is built from `_LEAVES`, Dict and Tuple."""
    if isinstance(space, (gs.Dict, gs.Tuple)):
        for sub in space.spaces.values() if isinstance(space, gs.Dict) else space.spaces:
            _check_supported(sub, name)
    elif not isinstance(space, _LEAVES):
        raise TypeError(
            f"{name} has observation space {space!r} ({type(space).__name__}), which cannot be "
            "padded; required: Box, Discrete, MultiDiscrete, MultiBinary, or Dict/Tuple of "
            "these. Fix: encode it as one of these in an env wrapper, or give it its own module."
        )


def flatten_to_vector(obs: Any, space: gs.Space) -> np.ndarray:
    """Vectorised `gymnasium.spaces.flatten`: float32 `(*batch, flatdim(space))`, same layout.

    Discrete/MultiDiscrete values become one-hot codes (offset by `start`); Box and MultiBinary
    are raveled; Dict (in `space.spaces` order, which gymnasium sorts) and Tuple parts are joined.
    `obs` is one observation or a batch `(*batch, ...)` (Dict/Tuple: leaves with those axes).
    Raises TypeError for an unsupported `space`, ValueError if `obs` is not of `space`.
    """
    _check_supported(space, "flatten_to_vector")
    fix = "Fix: pass observations of the given space."
    if isinstance(space, gs.Dict):
        parts = [flatten_to_vector(obs[key], sub) for key, sub in space.spaces.items()]
    elif isinstance(space, gs.Tuple):
        parts = [flatten_to_vector(o, sub) for o, sub in zip(obs, space.spaces, strict=True)]
    elif isinstance(space, gs.Discrete):
        x = _check_range(np.asarray(obs) - space.start, space.n, "Discrete values", fix)
        return _one_hot(x, space.n)
    elif isinstance(space, gs.MultiDiscrete):
        x = np.asarray(obs)
        _check_trailing(x, space.shape, "MultiDiscrete observation")
        x = _check_range(x - space.start, space.nvec, "MultiDiscrete values", fix)
        x = x.reshape(*x.shape[: x.ndim - space.nvec.ndim], -1)
        parts = [_one_hot(x[..., i], n) for i, n in enumerate(space.nvec.ravel())]
    else:  # Box or MultiBinary
        x = np.asarray(obs)
        _check_trailing(x, space.shape, f"{type(space).__name__} observation")
        return x.reshape(*x.shape[: x.ndim - len(space.shape)], -1).astype(np.float32)
    return np.concatenate(parts, axis=-1)


# --- Observation padding (2020 paper, app. A.2.1: zeros appended up to the largest size) -----
def _as_box(space: gs.Space, name: str) -> gs.Box:
    """Box spaces as they are; any other space flattened to a float32 vector Box."""
    _check_supported(space, name)
    if isinstance(space, gs.Box):
        return space
    flat = gs.flatten_space(space)
    return gs.Box(flat.low.astype(np.float32), flat.high.astype(np.float32), dtype=np.float32)


def _layout(own_space: gs.Space, padded_space: gs.Box) -> tuple[tuple[int, ...], bool]:
    """Shape of the agent's data inside `padded_space`, and whether it is flattened first."""
    own = _as_box(own_space, "own_space")
    flattens = not (isinstance(own_space, gs.Box) and len(own.shape) == len(padded_space.shape))
    shape = (int(np.prod(own.shape)),) if flattens else own.shape
    if len(shape) != len(padded_space.shape) or np.any(np.array(shape) > padded_space.shape):
        raise ValueError(
            f"own_space {own_space!r} (laid out as {shape}) does not fit padded_space "
            f"{padded_space!r}. Fix: build padded_space with padded_observation_space() over a "
            "group that includes this agent."
        )
    return shape, flattens


def padded_observation_space(spaces: Mapping[str, gs.Space]) -> gs.Box:
    """Common observation space of a group of agents, each agent's data padded with zeros.

    Non-Box spaces are flattened (Discrete -> one-hot; Dict, Tuple, MultiDiscrete, MultiBinary via
    `flatten_space`). Boxes of one rank (vectors, matrices, images) are padded at the end of each
    axis up to the largest size. Mixed ranks are flattened to vectors if no rank exceeds 2; images
    are never flattened (a CNN needs their layout). Bounds are truthful: elementwise min/max over
    the agents, with 0 where an agent is padded. dtype: the agents' dtype if all are Boxes of one
    dtype (uint8 images stay uint8), else float32.

    Args:
        spaces: Agent id -> that agent's observation space.

    Raises:
        ValueError: no spaces, or ranks differ and one is an image (rank > 2).
        TypeError: a space or part of one is unsupported (e.g. Text, Graph, Sequence).
    """
    if not spaces:
        raise ValueError("Got no observation spaces; required: at least one agent's space.")
    boxes = {agent: _as_box(space, f"Agent {agent!r}") for agent, space in spaces.items()}
    ranks = {len(box.shape) for box in boxes.values()}
    if len(ranks) > 1:
        if max(ranks) > 2:
            shapes = {agent: box.shape for agent, box in boxes.items()}
            raise ValueError(
                f"Observation shapes of different rank include an image: {shapes}. Flattening it "
                "would lose the layout a CNN reads. Fix: put image and vector agents in separate "
                "clusters/modules, or reshape the observations to one rank first."
            )
        boxes = {a: gs.Box(b.low.ravel(), b.high.ravel(), dtype=b.dtype) for a, b in boxes.items()}
    shape = tuple(int(s) for s in np.max([box.shape for box in boxes.values()], axis=0))
    # Pads are exactly 0, so each agent contributes 0 to the bounds where it is padded.
    low = np.min([_pad_trailing(b.low.astype(np.float64), shape) for b in boxes.values()], axis=0)
    high = np.max([_pad_trailing(b.high.astype(np.float64), shape) for b in boxes.values()], axis=0)
    dtypes = {box.dtype for box in boxes.values()}
    all_box = all(isinstance(space, gs.Box) for space in spaces.values())
    dtype = dtypes.pop() if all_box and len(dtypes) == 1 else np.dtype(np.float32)
    return gs.Box(low.astype(dtype), high.astype(dtype), shape=shape, dtype=dtype)


def pad_observation(obs: Any, own_space: gs.Space, padded_space: gs.Box) -> np.ndarray:
    """Pads an agent's observation (or batch, as in `flatten_to_vector`) into `padded_space`.

    Returns `(*batch, *padded_space.shape)` of `padded_space.dtype`, padded entries 0. Raises
    ValueError if `own_space` does not fit `padded_space` (build that with
    `padded_observation_space` over a group with the agent) or `obs` is not of `own_space`.
    """
    shape, flattens = _layout(own_space, padded_space)
    x = flatten_to_vector(obs, own_space) if flattens else np.asarray(obs)
    _check_trailing(x, shape, "Observation")
    return _pad_trailing(x, padded_space.shape).astype(padded_space.dtype)


def observation_mask(own_space: gs.Space, padded_space: gs.Box) -> np.ndarray:
    """bool `padded_space.shape`: True on the agent's real entries (e.g. to average a loss)."""
    shape, _ = _layout(own_space, padded_space)
    return _pad_trailing(np.ones(shape, dtype=bool), padded_space.shape, False)


# --- Action padding (2023 paper, sec. 3.3: one output as large as the largest space) ---------
def _action_kind(space: Any, name: str) -> type:
    for kind in _ACTION_KINDS:
        if isinstance(space, kind):
            return kind
    raise TypeError(
        f"{name} has action space {space!r} ({type(space).__name__}); action padding supports "
        "Discrete, MultiDiscrete and 1-D Box. Fix: give this agent its own module."
    )


def padded_action_space(spaces: Mapping[str, gs.Space]) -> gs.Space:
    """Common action space of a group of agents whose action spaces are of one kind.

    Discrete -> Discrete(max n), start 0 (a logit index; `unpad_action` adds each agent's start).
    MultiDiscrete -> elementwise max nvec, start 0. 1-D Box -> the largest size; each dimension's
    bounds are the union over the agents that own it, so every agent's real actions lie inside.

    Args:
        spaces: Agent id -> that agent's action space.

    Raises:
        ValueError: no spaces; mixed kinds (e.g. Box with Discrete); MultiDiscrete with different
            component shapes; Box not 1-D or of different dtypes.
        TypeError: a space is not Discrete, MultiDiscrete or Box.
    """
    if not spaces:
        raise ValueError("Got no action spaces; required: at least one agent's space.")
    kinds = {_action_kind(space, f"Agent {agent!r}") for agent, space in spaces.items()}
    listing = ", ".join(f"{agent}: {space!r}" for agent, space in spaces.items())
    fix = "Fix: put these agents in separate modules/clusters"
    if len(kinds) > 1:
        raise ValueError(f"Cannot pad action spaces of different kinds ({listing}). {fix}.")
    group, kind = list(spaces.values()), kinds.pop()
    if kind is gs.Discrete:
        return gs.Discrete(max(int(s.n) for s in group))
    if kind is gs.MultiDiscrete:
        if len({s.nvec.shape for s in group}) > 1:
            raise ValueError(f"MultiDiscrete needs equal component shapes; got {listing}. {fix}.")
        return gs.MultiDiscrete(np.max([s.nvec for s in group], axis=0))
    if any(len(s.shape) != 1 for s in group) or len({s.dtype for s in group}) > 1:
        raise ValueError(
            f"Box action spaces must be 1-D and share one dtype; got {listing}. "
            f"{fix}, or flatten/cast the actions in an env wrapper."
        )
    size = (max(s.shape[0] for s in group),)
    # +-inf pads leave each dimension's bounds to the agents that own it.
    low = np.min([_pad_trailing(s.low.astype(np.float64), size, np.inf) for s in group], axis=0)
    high = np.max([_pad_trailing(s.high.astype(np.float64), size, -np.inf) for s in group], axis=0)
    return gs.Box(low.astype(group[0].dtype), high.astype(group[0].dtype), dtype=group[0].dtype)


def _check_action_pair(own_space: gs.Space, padded_space: gs.Space) -> type:
    """Returns the kind of `own_space` after checking that it fits inside `padded_space`."""
    kind = _action_kind(own_space, "own_space")
    own, padded = own_space, padded_space
    if kind is gs.Discrete:
        fits = isinstance(padded, gs.Discrete) and own.n <= padded.n
    elif kind is gs.MultiDiscrete:
        same = isinstance(padded, gs.MultiDiscrete) and own.nvec.shape == padded.nvec.shape
        fits = same and bool(np.all(own.nvec <= padded.nvec))
    else:
        same = isinstance(padded, gs.Box) and len(own.shape) == len(padded.shape) == 1
        fits = same and own.shape[0] <= padded.shape[0]
    if not fits:
        raise ValueError(
            f"own_space {own_space!r} does not fit padded_space {padded_space!r}. Fix: build "
            "padded_space with padded_action_space() over a group that includes this agent."
        )
    return kind


def action_mask(own_space: gs.Space, padded_space: gs.Space) -> np.ndarray:
    """bool mask over the padded action outputs: True for the agent's real actions.

    Shapes: Discrete `(padded.n,)`; MultiDiscrete `(sum(padded.nvec),)`, per-component masks in
    logit order; Box `(padded.shape[0],)` over action dimensions (a Gaussian head has a mean and a
    log-std per dimension: tile it twice). Raises ValueError if `own_space` does not fit.
    """
    kind = _check_action_pair(own_space, padded_space)
    if kind is gs.Discrete:
        return np.arange(padded_space.n) < own_space.n
    if kind is gs.MultiDiscrete:
        pairs = zip(own_space.nvec.ravel(), padded_space.nvec.ravel())
        return np.concatenate([np.arange(p) < o for o, p in pairs])
    return np.arange(padded_space.shape[0]) < own_space.shape[0]


def unpad_action(action: Any, own_space: gs.Space, padded_space: gs.Space) -> np.ndarray:
    """Maps a padded action (or batch `(*batch, ...)`) back to the agent's own action space.

    Discrete/MultiDiscrete: index + the agent's `start`; Box: the first `own.shape[0]` dimensions;
    dtype of `own_space`. Never remaps invalid actions: an index outside the agent's range or a
    Box action outside its own bounds raises ValueError (TypeError for a non-integer index).
    """
    kind = _check_action_pair(own_space, padded_space)
    what, fix = f"Actions for own space {own_space!r}", "Fix: mask logits with action_mask()."
    if kind is gs.Discrete:
        a = _check_range(action, own_space.n, what, fix)
        return (a + own_space.start).astype(own_space.dtype)
    a = np.asarray(action)
    _check_trailing(a, padded_space.shape, "Action")
    if kind is gs.MultiDiscrete:
        a = _check_range(a, own_space.nvec, what, fix)
        return (a + own_space.start).astype(own_space.dtype)
    a = a[..., : own_space.shape[0]].astype(own_space.dtype)
    if not (np.all(a >= own_space.low) and np.all(a <= own_space.high)):
        raise ValueError(
            f"Action {a.tolist()} lies outside own space {own_space!r}. Fix: clip or squash "
            "continuous actions to the agent's own bounds before unpadding."
        )
    return a


# --- The env's own legal-action masks (RLlib's and PettingZoo's "action_mask" entry) ----------
ENV_MASK_KEY = "action_mask"
"""Key of an env's legal-action mask in a Dict observation: one entry per action (logit), 1 where
legal, as RLlib's action-masking example and PettingZoo's classic games give it."""


def mask_size(space: gs.Space) -> int:
    """Size of an action mask over `space`'s outputs: its logits (Discrete, MultiDiscrete) or its
    dimensions (1-D Box)."""
    if isinstance(space, gs.Discrete):
        return int(space.n)
    if isinstance(space, gs.MultiDiscrete):
        return int(np.sum(space.nvec))
    return int(np.prod(space.shape))


def has_env_action_mask(observation_space: gs.Space) -> bool:
    """True if the observations carry the env's legal-action mask (a Dict with `ENV_MASK_KEY`)."""
    return isinstance(observation_space, gs.Dict) and ENV_MASK_KEY in observation_space.spaces


def check_env_action_mask(observation_space: gs.Space, action_space: gs.Space, name: str) -> None:
    """Raises ValueError if `observation_space` carries a legal-action mask that does not fit
    `action_space`: one entry per Discrete action, or per logit of a 1-D MultiDiscrete."""
    if not has_env_action_mask(observation_space):
        return
    mask = observation_space[ENV_MASK_KEY]
    fix = (f"Fix: give it one entry per action, 1 where legal, or rename the {ENV_MASK_KEY!r} entry "
           "if it is no legal-action mask.")
    if not (isinstance(action_space, gs.Discrete)
            or (isinstance(action_space, gs.MultiDiscrete) and action_space.nvec.ndim == 1)):
        raise ValueError(f"{name} observes an {ENV_MASK_KEY!r} but has action space {action_space!r}; "
                         f"legal-action masks need Discrete or 1-D MultiDiscrete actions. {fix}")
    size = int(np.prod(mask.shape)) if isinstance(mask, (gs.Box, gs.MultiBinary)) else None
    if size != mask_size(action_space):
        raise ValueError(f"{name} observes an {ENV_MASK_KEY!r} {mask!r}, which does not give one entry "
                         f"for each of the {mask_size(action_space)} actions of {action_space!r}. {fix}")


def env_action_mask(obs: Any, observation_space: gs.Space) -> np.ndarray | None:
    """The env's legal-action masks of a batch of observations: float32 `(B, mask_size)`, 1 where
    legal; None if `observation_space` carries none (see `has_env_action_mask`)."""
    if not has_env_action_mask(observation_space):
        return None
    mask = np.asarray(obs[ENV_MASK_KEY], np.float32)
    return mask.reshape(len(mask), -1)


# --- Agent indication for vectors (2023 paper, sec. 4.1: one-hot or binary codes) ------------
def indicated_space(space: gs.Box, method: str, n: int) -> gs.Box:
    """Space of a vector with the agent (or type) code appended by `indicate`.

    Args:
        space: 1-D Box, typically a `padded_observation_space`.
        method: "one_hot" (n agents); "type" (the same one-hot over n types or clusters);
            "binary" (ceil(log2 n) bits, compact for hundreds of agents).
        n: Number of agents, types or clusters indexed. n=1 warns (no information).

    Returns:
        Box `(D + code_size,)` of `space.dtype`; code entries lie in [0, 1].

    Raises:
        ValueError: unknown method, n < 1, or a Box not 1-D. TypeError: not a Box.
    """
    _check_method(method, VECTOR_METHODS, n)
    if not isinstance(space, gs.Box):
        raise TypeError(f"indicated_space needs a 1-D Box, got {space!r}. Fix: pad it first.")
    if len(space.shape) != 1:
        raise ValueError(
            f"indicated_space needs a 1-D Box, got shape {space.shape}. Fix: use "
            "indicated_image_space for (H, W, C) images, or pad/flatten to a vector first."
        )
    _warn_if_degenerate(n)
    size = _n_bits(n) if method == "binary" else n
    low = np.concatenate([space.low, np.zeros(size, space.dtype)])
    high = np.concatenate([space.high, np.ones(size, space.dtype)])
    return gs.Box(low, high, dtype=space.dtype)


def indicate(obs: Any, index: int | np.ndarray, method: str, n: int) -> np.ndarray:
    """Appends the agent (or type) code to a vector `(D,)` or batch `(*batch, D)`.

    `index` in [0, n) is an int or an int array of shape `batch` (mixed agents); `method` and `n`
    as in `indicated_space`. Returns `(*batch, D + code_size)` of `obs.dtype`. Raises ValueError
    for an index outside [0, n), TypeError for a non-integer one.
    """
    _check_method(method, VECTOR_METHODS, n)
    x = np.asarray(obs)
    idx = _check_range(index, n, "Agent/type index", "Fix: index agents 0..n-1 (sorted ids).")
    idx = np.broadcast_to(idx, x.shape[:-1])
    code = _binary_code(idx, n) if method == "binary" else _one_hot(idx, n)
    return np.concatenate([x, code.astype(x.dtype)], axis=-1)


# --- Agent indication for images (2023 paper, sec. 4.2) ---------------------------------------
# dtype policy: images keep their dtype; indicator planes are 0 ("black") or "white", which is
# 255 for uint8 and 1.0 for float images. Inversion is low + high - obs, elementwise.
def _check_image(space: Any, method: str, n: int) -> float:
    """Validates an image space for `method`; returns its "white" value."""
    _check_method(method, IMAGE_METHODS, n)
    if not isinstance(space, gs.Box) or len(space.shape) != 3:
        raise TypeError(
            f"Image indication needs a Box of shape (H, W, C), got {space!r}. Fix: add a channel "
            "axis to 2-D images; use indicated_space/indicate for vectors."
        )
    if space.dtype != np.uint8 and not np.issubdtype(space.dtype, np.floating):
        raise TypeError(f"Image dtype must be uint8 or float, got {space.dtype}. Fix: cast it.")
    if method in _TWO_TYPE_METHODS and n > 2:
        raise ValueError(
            f"Method {method!r} is defined for two agent types only (Terry et al. 2023, "
            f"sec. 4.2), got n={n}. Fix: use 'binary' for more agents or types."
        )
    bounded = np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))
    if method.startswith("inversion") and not bounded:
        raise ValueError(f"Method {method!r} needs finite image bounds, got {space!r}.")
    return 255.0 if space.dtype == np.uint8 else 1.0


def indicated_image_space(space: gs.Box, method: str, n: int) -> gs.Box:
    """Space of an (H, W, C) image indicated by `indicate_image` (index = type in [0, n)).

    Methods: "identity": unchanged, the paper's control (types are not told apart).
    "geometric": + 1 channel, a per-pixel checkerboard, shifted by one pixel for type 1 (n <= 2).
    "binary": + ceil(log2 n) channels, all black or all white (bit k of the index).
    "inversion": + C channels, the inverted image for type 1, a duplicate for type 0 (n <= 2).
    "inversion_replacement": the image itself inverted for type 1, unchanged for type 0 (n <= 2).

    Args:
        space: Box `(H, W, C)`, uint8 or float; finite bounds for the inversion methods.
        method: One of `IMAGE_METHODS`.
        n: Number of agent types (or agents for "binary"). n=1 warns (no information).

    Returns:
        Box `(H, W, C')` of `space.dtype`; inverted pixels keep the original elementwise bounds.

    Raises:
        ValueError: unknown method, n < 1, n > 2 for a two-type method, infinite bounds for an
            inversion method. TypeError: not a rank-3 Box of uint8 or float dtype.
    """
    white = _check_image(space, method, n)
    if method != "identity":
        _warn_if_degenerate(n)
    if method in ("identity", "inversion_replacement"):
        return space
    if method == "inversion":
        extra_low, extra_high = space.low, space.high
    else:
        extra = space.shape[:2] + (1 if method == "geometric" else _n_bits(n),)
        extra_low, extra_high = np.zeros(extra, space.dtype), np.full(extra, white, space.dtype)
    low = np.concatenate([space.low, extra_low], axis=-1)
    high = np.concatenate([space.high, extra_high], axis=-1)
    return gs.Box(low, high, dtype=space.dtype)


def indicate_image(
    obs: Any, space: gs.Box, index: int | np.ndarray, method: str, n: int
) -> np.ndarray:
    """Indicates the agent type in an image `(H, W, C)` or batch `(*batch, H, W, C)` of `space`.

    `index` in [0, n) is an int or an int array of shape `batch`; `method`, `n` and errors as in
    `indicated_image_space` (plus a bad index or shape). Returns `(*batch, H, W, C')`.
    """
    white = _check_image(space, method, n)
    x = np.asarray(obs).astype(space.dtype, copy=False)
    _check_trailing(x, space.shape, "Image")
    idx = _check_range(index, n, "Agent/type index", "Fix: index types 0..n-1.")
    idx = np.broadcast_to(idx, x.shape[:-3])[..., None, None, None]  # (*batch, 1, 1, 1)
    if method == "identity":
        return x
    if method.startswith("inversion"):
        # low + high - obs maps [low, high] onto itself; float64 avoids uint8 overflow.
        inverted = space.low.astype(np.float64) + space.high - x
        shown = np.where(idx == 1, inverted, x).astype(space.dtype)
        return shown if method == "inversion_replacement" else np.concatenate([x, shown], axis=-1)
    if method == "geometric":
        parity = np.add.outer(np.arange(space.shape[0]), np.arange(space.shape[1]))[..., None]
        planes = (parity + idx) % 2
    else:  # binary
        planes = _binary_code(idx[..., 0, 0, 0], n)[..., None, None, :]
    planes = np.broadcast_to(planes, x.shape[:-1] + planes.shape[-1:])
    return np.concatenate([x, (planes * white).astype(space.dtype)], axis=-1)
