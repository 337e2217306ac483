"""Tests for rllib_seps.sharing.spaces: every transform's output lies in its declared space."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces as gs

from rllib_seps.sharing import spaces as sp
from rllib_seps.sharing.plan import build_plan

N_SAMPLES = 50


def samples(space: gs.Space, n: int = N_SAMPLES) -> list:
    space.seed(0)
    return [space.sample() for _ in range(n)]


def vec(size: int, low: float = -1.0, high: float = 1.0, dtype=np.float32) -> gs.Box:
    return gs.Box(low, high, (size,), dtype)


IMAGE_U8 = gs.Box(0, 255, (6, 5, 2), np.uint8)
IMAGE_F32 = gs.Box(-2.0, 3.0, (4, 4, 1), np.float32)

OBS_GROUPS = {
    "vectors": {"a": vec(3, 1.0, 2.0), "b": vec(5)},
    "matrices": {"a": gs.Box(-1, 1, (2, 3)), "b": gs.Box(0, 4, (3, 2))},
    "images_u8": {"a": IMAGE_U8, "b": gs.Box(0, 255, (4, 7, 3), np.uint8)},
    "mixed_rank": {"a": vec(4), "b": gs.Box(-1, 1, (2, 3)), "c": gs.Box(0, 1, ())},
    "discrete": {"a": gs.Discrete(3), "b": gs.Discrete(5, start=-2)},
    "composite": {
        "dict": gs.Dict({"pos": vec(2), "kind": gs.Discrete(3)}),
        "tuple": gs.Tuple((gs.MultiBinary(3), gs.Discrete(2))),
        "md": gs.MultiDiscrete([[2, 3], [4, 1]], start=[[1, 0], [0, 5]]),
        "mb": gs.MultiBinary([2, 2]),
        "box": vec(7, -5.0, 5.0),
    },
}


# ---------------------------------------------------------------------------------------------
# flatten_to_vector
# ---------------------------------------------------------------------------------------------
FLAT_SPACES = [*OBS_GROUPS["composite"].values(), IMAGE_U8, gs.Discrete(4, start=3)]


@pytest.mark.parametrize("space", FLAT_SPACES)
def test_flatten_matches_gymnasium_single_and_batch(space):
    obs = samples(space, 10)
    for o in obs:
        np.testing.assert_array_equal(sp.flatten_to_vector(o, space), gs.flatten(space, o))
    if isinstance(space, (gs.Dict, gs.Tuple)):
        return  # composite batches: stacked leaves, tested below
    batch = sp.flatten_to_vector(np.stack(obs), space)
    assert batch.shape == (10, gs.flatdim(space)) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch, np.stack([gs.flatten(space, o) for o in obs]))


def test_flatten_composite_batch():
    space = OBS_GROUPS["composite"]["dict"]
    obs = samples(space, 4)
    batch = {key: np.stack([o[key] for o in obs]) for key in space.spaces}
    np.testing.assert_array_equal(
        sp.flatten_to_vector(batch, space), np.stack([gs.flatten(space, o) for o in obs])
    )


def test_flatten_rejects_out_of_space_values_and_unsupported_spaces():
    with pytest.raises(ValueError, match=r"Discrete values \[3\] outside \[0, 3\)"):
        sp.flatten_to_vector(4, gs.Discrete(3, start=1))
    with pytest.raises(TypeError, match="must be integers, got dtype float64"):
        sp.flatten_to_vector(1.5, gs.Discrete(3))
    with pytest.raises(ValueError, match="MultiDiscrete values"):
        sp.flatten_to_vector(np.array([2, 0]), gs.MultiDiscrete([2, 3]))
    with pytest.raises(ValueError, match=r"MultiDiscrete observation has shape \(3,\)"):
        sp.flatten_to_vector(np.array([0, 0, 0]), gs.MultiDiscrete([2, 3]))
    with pytest.raises(ValueError, match=r"Box observation has shape \(2,\); required \(3,\)"):
        sp.flatten_to_vector(np.zeros(2), vec(3))
    with pytest.raises(TypeError, match="Text"):
        sp.flatten_to_vector("hi", gs.Text(5))


# ---------------------------------------------------------------------------------------------
# Observation padding
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("group", OBS_GROUPS.values(), ids=OBS_GROUPS.keys())
def test_padded_observations_lie_in_padded_space(group):
    padded = sp.padded_observation_space(group)
    for agent, space in group.items():
        obs = samples(space)
        padded_obs = [sp.pad_observation(o, space, padded) for o in obs]
        assert all(padded.contains(p) for p in padded_obs), agent
        mask = sp.observation_mask(space, padded)
        assert mask.shape == padded.shape and mask.sum() == gs.flatdim(space)
        # Padded entries are exactly 0.
        assert all(np.all(p[~mask] == 0) for p in padded_obs)
        if not isinstance(space, (gs.Dict, gs.Tuple)):  # batches of stacked samples
            batch = sp.pad_observation(np.stack(obs), space, padded)
            np.testing.assert_array_equal(batch, np.stack(padded_obs))


def test_padded_space_shapes_bounds_and_dtypes():
    vectors = sp.padded_observation_space(OBS_GROUPS["vectors"])
    assert vectors.shape == (5,) and vectors.dtype == np.float32
    # Entries 0-2: union of [1, 2] and [-1, 1]; entries 3-4: agent a is padded with 0.
    np.testing.assert_array_equal(vectors.low, [-1, -1, -1, -1, -1])
    np.testing.assert_array_equal(vectors.high, [2, 2, 2, 1, 1])
    only_a = sp.padded_observation_space({"a": vec(3, 1.0, 2.0), "c": vec(4, 1.0, 2.0)})
    np.testing.assert_array_equal(only_a.low, [1, 1, 1, 0])

    images = sp.padded_observation_space(OBS_GROUPS["images_u8"])
    assert images.shape == (6, 7, 3) and images.dtype == np.uint8
    assert sp.padded_observation_space(OBS_GROUPS["matrices"]).shape == (3, 3)
    assert sp.padded_observation_space(OBS_GROUPS["mixed_rank"]).shape == (6,)
    discrete = sp.padded_observation_space(OBS_GROUPS["discrete"])
    assert discrete.shape == (5,) and discrete.dtype == np.float32
    one_hot = sp.pad_observation(-2, OBS_GROUPS["discrete"]["b"], discrete)  # start=-2
    np.testing.assert_array_equal(one_hot, [1, 0, 0, 0, 0])
    mixed_dtype = sp.padded_observation_space({"a": IMAGE_U8, "b": IMAGE_F32})
    assert mixed_dtype.dtype == np.float32 and mixed_dtype.shape == (6, 5, 2)


def test_padded_observation_space_errors():
    with pytest.raises(ValueError, match="Got no observation spaces"):
        sp.padded_observation_space({})
    with pytest.raises(ValueError, match=r"different rank include an image.*'img': \(6, 5, 2\)"):
        sp.padded_observation_space({"img": IMAGE_U8, "vec": vec(3)})
    for bad in (gs.Text(5), gs.Graph(vec(2), None), gs.Sequence(vec(2))):
        name = type(bad).__name__
        with pytest.raises(TypeError, match=f"Agent 'b' has observation space .*{name}"):
            sp.padded_observation_space({"a": vec(2), "b": bad})
    with pytest.raises(TypeError, match="Agent 'b'.*Text"):
        sp.padded_observation_space({"a": vec(2), "b": gs.Dict({"x": vec(2), "t": gs.Text(3)})})


def test_pad_observation_errors():
    padded = sp.padded_observation_space(OBS_GROUPS["vectors"])
    with pytest.raises(ValueError, match=r"does not fit padded_space"):
        sp.pad_observation(np.zeros(6), vec(6), padded)
    with pytest.raises(ValueError, match=r"does not fit padded_space"):
        sp.observation_mask(IMAGE_U8, padded)
    with pytest.raises(ValueError, match=r"Observation has shape \(4,\); required \(3,\)"):
        sp.pad_observation(np.zeros(4), vec(3), padded)
    with pytest.raises(TypeError, match="own_space has observation space"):
        sp.pad_observation("x", gs.Text(3), padded)


# ---------------------------------------------------------------------------------------------
# Action padding
# ---------------------------------------------------------------------------------------------
def test_discrete_actions():
    own = {"a": gs.Discrete(3, start=1), "b": gs.Discrete(5)}
    padded = sp.padded_action_space(own)
    assert padded == gs.Discrete(5)
    np.testing.assert_array_equal(sp.action_mask(own["a"], padded), [1, 1, 1, 0, 0])
    assert sp.action_mask(own["b"], padded).all()
    assert sp.unpad_action(2, own["a"], padded) == 3  # index 2 + start 1
    np.testing.assert_array_equal(sp.unpad_action(np.array([0, 2]), own["a"], padded), [1, 3])
    assert all(own["a"].contains(sp.unpad_action(a, own["a"], padded)) for a in range(3))
    match = r"Actions for own space Discrete\(3, start=1\) \[4\] outside \[0, 3\).*action_mask"
    with pytest.raises(ValueError, match=match):
        sp.unpad_action(4, own["a"], padded)
    with pytest.raises(TypeError, match="must be integers"):
        sp.unpad_action(1.0, own["a"], padded)


def test_multidiscrete_actions():
    own = {"a": gs.MultiDiscrete([2, 4], start=[0, 1]), "b": gs.MultiDiscrete([3, 2])}
    padded = sp.padded_action_space(own)
    np.testing.assert_array_equal(padded.nvec, [3, 4])
    np.testing.assert_array_equal(sp.action_mask(own["a"], padded), [1, 1, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(sp.action_mask(own["b"], padded), [1, 1, 1, 1, 1, 0, 0])
    masked = [a for a in samples(padded) if np.all(a < own["b"].nvec)]
    assert masked and all(own["b"].contains(sp.unpad_action(a, own["b"], padded)) for a in masked)
    np.testing.assert_array_equal(sp.unpad_action(np.array([[1, 3]]), own["a"], padded), [[1, 4]])
    with pytest.raises(ValueError, match=r"\[2\] outside \[0, \[2 4\]\)"):
        sp.unpad_action(np.array([2, 0]), own["a"], padded)
    with pytest.raises(ValueError, match=r"Action has shape \(3,\)"):
        sp.unpad_action(np.array([0, 0, 0]), own["a"], padded)


def test_box_actions():
    own = {"a": vec(2, -1.0, 1.0), "b": vec(3, 0.0, 5.0)}
    padded = sp.padded_action_space(own)
    assert padded.shape == (3,) and padded.dtype == np.float32
    np.testing.assert_array_equal(padded.low, [-1, -1, 0])
    np.testing.assert_array_equal(padded.high, [5, 5, 5])
    np.testing.assert_array_equal(sp.action_mask(own["a"], padded), [1, 1, 0])
    for agent, space in own.items():  # an agent's own action, padded with anything valid
        for a in samples(space):
            full = np.concatenate([a, np.zeros(3 - len(a), np.float32)])
            assert padded.contains(full)
            np.testing.assert_array_equal(sp.unpad_action(full, space, padded), a)
    batch = sp.unpad_action(np.full((4, 3), 0.5, np.float32), own["a"], padded)
    assert batch.shape == (4, 2)
    with pytest.raises(ValueError, match="lies outside own space.*clip or squash"):
        sp.unpad_action(np.array([3.0, 0.0, 0.0], np.float32), own["a"], padded)


def test_padded_action_space_errors():
    with pytest.raises(ValueError, match="Got no action spaces"):
        sp.padded_action_space({})
    match = r"different kinds.*a: Box.*b: Discrete\(3\).*separate modules"
    with pytest.raises(ValueError, match=match):
        sp.padded_action_space({"a": vec(2), "b": gs.Discrete(3)})
    with pytest.raises(TypeError, match=r"Agent 'a' has action space MultiBinary"):
        sp.padded_action_space({"a": gs.MultiBinary(2)})
    match = "equal component shapes; got a: MultiDiscrete.*separate modules"
    with pytest.raises(ValueError, match=match):
        sp.padded_action_space({"a": gs.MultiDiscrete([2]), "b": gs.MultiDiscrete([2, 2])})
    with pytest.raises(ValueError, match="must be 1-D and share one dtype"):
        sp.padded_action_space({"a": gs.Box(-1, 1, (2, 2))})
    with pytest.raises(ValueError, match="must be 1-D and share one dtype"):
        sp.padded_action_space({"a": vec(2), "b": vec(2, dtype=np.float64)})


@pytest.mark.parametrize(
    "own, padded",
    [
        (gs.Discrete(6), gs.Discrete(5)),
        (gs.Discrete(2), gs.MultiDiscrete([2])),
        (gs.MultiDiscrete([4, 2]), gs.MultiDiscrete([3, 2])),
        (gs.MultiDiscrete([2]), gs.MultiDiscrete([2, 2])),
        (vec(4), vec(3)),
        (vec(2), gs.Discrete(2)),
    ],
)
def test_action_pair_mismatch(own, padded):
    with pytest.raises(ValueError, match="does not fit padded_space.*padded_action_space"):
        sp.action_mask(own, padded)
    with pytest.raises(ValueError, match="does not fit padded_space"):
        sp.unpad_action(padded.sample(), own, padded)


def test_unsupported_own_action_space():
    with pytest.raises(TypeError, match="own_space has action space MultiBinary"):
        sp.action_mask(gs.MultiBinary(2), gs.Discrete(2))


def test_env_action_masks_are_read_and_checked_against_the_actions():
    board = gs.Box(0, 1, (3, 3), np.int8)
    masked = gs.Dict({"observation": board, "action_mask": gs.Box(0, 1, (9,), np.int8)})
    assert sp.has_env_action_mask(masked) and not sp.has_env_action_mask(board)
    sp.check_env_action_mask(masked, gs.Discrete(9), "Agent 'x'")
    sp.check_env_action_mask(gs.Dict({"action_mask": gs.MultiBinary(5)}), gs.MultiDiscrete([2, 3]), "Agent 'x'")
    batch = {"observation": np.zeros((2, 3, 3), np.int8), "action_mask": np.eye(9, dtype=np.int8)[:2]}
    np.testing.assert_array_equal(sp.env_action_mask(batch, masked), np.eye(9, dtype=np.float32)[:2])
    assert sp.env_action_mask(batch["observation"], board) is None
    with pytest.raises(ValueError, match=r"Agent 'x' observes an 'action_mask' Box\(0, 1, \(9,\), int8\), which "
                                         r"does not give one entry for each of the 8 actions of Discrete\(8\)"):
        sp.check_env_action_mask(masked, gs.Discrete(8), "Agent 'x'")
    with pytest.raises(ValueError, match=r"Agent 'x' observes an 'action_mask' but has action space Box.*need "
                                         r"Discrete or 1-D MultiDiscrete actions. Fix: .*or rename"):
        sp.check_env_action_mask(masked, vec(9), "Agent 'x'")


# ---------------------------------------------------------------------------------------------
# Vector indication
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method, size", [("one_hot", 5), ("type", 5), ("binary", 3)])
def test_vector_indication_lies_in_space(method, size):
    space = vec(4, -3.0, 3.0)
    indicated = sp.indicated_space(space, method, 5)
    assert indicated.shape == (4 + size,) and indicated.dtype == np.float32
    for i, obs in enumerate(samples(space)):
        out = sp.indicate(obs, i % 5, method, 5)
        assert indicated.contains(out)
        np.testing.assert_array_equal(out[:4], obs)


def test_one_hot_and_type_share_the_code():
    obs = np.zeros(2, np.float32)
    np.testing.assert_array_equal(sp.indicate(obs, 1, "one_hot", 3), [0, 0, 0, 1, 0])
    np.testing.assert_array_equal(sp.indicate(obs, 1, "type", 3), sp.indicate(obs, 1, "one_hot", 3))
    np.testing.assert_array_equal(sp.indicate(obs, 6, "binary", 8), [0, 0, 0, 1, 1])  # LSB first


def test_binary_codes_distinct_for_300_agents():
    n = 300
    space = sp.indicated_space(vec(1), "binary", n)
    assert space.shape == (1 + 9,)  # ceil(log2 300) = 9 bits
    codes = sp.indicate(np.zeros((n, 1), np.float32), np.arange(n), "binary", n)
    assert codes.shape == (n, 10) and len({c.tobytes() for c in codes}) == n
    assert all(space.contains(c) for c in codes)


def test_vector_indication_batch_with_mixed_indices():
    out = sp.indicate(np.ones((3, 2), np.float64), np.array([0, 2, 1]), "one_hot", 3)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out[:, 2:], np.eye(3)[[0, 2, 1]])


def test_vector_indication_errors():
    with pytest.raises(ValueError, match=r"method 'onehot'.*Did you mean 'one_hot'"):
        sp.indicated_space(vec(2), "onehot", 2)
    with pytest.raises(ValueError, match=r"Unknown indication method 'zzz'; required one of"):
        sp.indicate(np.zeros(2), 0, "zzz", 2)
    for n in (0, True, 2.0):
        with pytest.raises(ValueError, match="n .* must be a positive int"):
            sp.indicated_space(vec(2), "one_hot", n)
    with pytest.raises(TypeError, match="needs a 1-D Box, got Discrete"):
        sp.indicated_space(gs.Discrete(3), "one_hot", 2)
    with pytest.raises(ValueError, match=r"got shape \(6, 5, 2\).*indicated_image_space"):
        sp.indicated_space(IMAGE_U8, "one_hot", 2)
    with pytest.raises(ValueError, match=r"Agent/type index \[3\] outside \[0, 3\)"):
        sp.indicate(np.zeros(2), 3, "one_hot", 3)
    with pytest.warns(UserWarning, match="n=1"):
        sp.indicated_space(vec(2), "one_hot", 1)


# ---------------------------------------------------------------------------------------------
# Image indication
# ---------------------------------------------------------------------------------------------
# None: the image's own channel count (inversion appends an inverted or duplicated copy).
EXTRA_CHANNELS = {
    "identity": 0, "geometric": 1, "binary": 1, "inversion": None, "inversion_replacement": 0
}


@pytest.mark.parametrize("image", [IMAGE_U8, IMAGE_F32], ids=["uint8", "float32"])
@pytest.mark.parametrize("method", sp.IMAGE_METHODS)
def test_image_indication_lies_in_space(image, method):
    indicated = sp.indicated_image_space(image, method, 2)
    extra = EXTRA_CHANNELS[method]
    channels = image.shape[2] * 2 if extra is None else image.shape[2] + extra
    assert indicated.shape == image.shape[:2] + (channels,) and indicated.dtype == image.dtype
    obs = samples(image)
    for i, o in enumerate(obs):
        out = sp.indicate_image(o, image, i % 2, method, 2)
        assert indicated.contains(out), (method, i)
    batch = sp.indicate_image(np.stack(obs), image, np.arange(N_SAMPLES) % 2, method, 2)
    np.testing.assert_array_equal(batch[1], sp.indicate_image(obs[1], image, 1, method, 2))


@pytest.mark.parametrize("method", ["geometric", "binary", "inversion", "inversion_replacement"])
def test_image_indication_distinguishes_types(method):
    obs = samples(IMAGE_U8, 1)[0]
    first, second = (sp.indicate_image(obs, IMAGE_U8, i, method, 2) for i in (0, 1))
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first[..., :2], obs)  # type 0 keeps its pixels


def test_image_method_definitions():
    obs, space = np.full((2, 3, 1), 10, np.uint8), gs.Box(0, 255, (2, 3, 1), np.uint8)
    np.testing.assert_array_equal(sp.indicate_image(obs, space, 1, "identity", 2), obs)
    checker = sp.indicate_image(obs, space, 0, "geometric", 2)[..., 1]
    np.testing.assert_array_equal(checker, [[0, 255, 0], [255, 0, 255]])
    shifted = sp.indicate_image(obs, space, 1, "geometric", 2)[..., 1]
    np.testing.assert_array_equal(shifted, 255 - checker)
    inv = sp.indicate_image(obs, space, 1, "inversion", 2)
    assert np.all(inv[..., 0] == 10) and np.all(inv[..., 1] == 245)
    dup = sp.indicate_image(obs, space, 0, "inversion", 2)
    assert np.all(dup == 10)
    assert np.all(sp.indicate_image(obs, space, 1, "inversion_replacement", 2) == 245)
    assert np.all(sp.indicate_image(obs, space, 0, "inversion_replacement", 2) == 10)
    fspace = gs.Box(-1.0, 3.0, (2, 3, 1), np.float32)
    zeros = np.zeros((2, 3, 1), np.float32)  # low + high - 0 = 2
    assert np.all(sp.indicate_image(zeros, fspace, 1, "inversion_replacement", 2) == 2.0)


def test_binary_image_indication_distinct_for_300_agents():
    n, space = 300, gs.Box(0, 255, (2, 2, 1), np.uint8)
    indicated = sp.indicated_image_space(space, "binary", n)
    assert indicated.shape == (2, 2, 10)
    out = sp.indicate_image(np.zeros((n, 2, 2, 1), np.uint8), space, np.arange(n), "binary", n)
    assert len({o.tobytes() for o in out}) == n
    assert all(indicated.contains(o) for o in out)
    assert set(np.unique(out[..., 1:])) == {0, 255}  # planes are all black or all white
    assert np.all(out[..., 1:] == out[:, :1, :1, 1:])


def test_image_indication_errors():
    with pytest.raises(TypeError, match=r"needs a Box of shape \(H, W, C\), got Box"):
        sp.indicated_image_space(gs.Box(0, 1, (4, 4)), "binary", 2)
    with pytest.raises(TypeError, match="needs a Box of shape"):
        sp.indicate_image(np.zeros(2), gs.Discrete(2), 0, "binary", 2)
    with pytest.raises(TypeError, match="dtype must be uint8 or float, got int32"):
        sp.indicated_image_space(gs.Box(0, 9, (2, 2, 1), np.int32), "binary", 2)
    for method in ("geometric", "inversion", "inversion_replacement"):
        match = f"{method}' is defined for two agent types only.*n=3.*'binary'"
        with pytest.raises(ValueError, match=match):
            sp.indicated_image_space(IMAGE_U8, method, 3)
    unbounded = gs.Box(-np.inf, np.inf, (2, 2, 1), np.float32)
    with pytest.raises(ValueError, match="needs finite image bounds"):
        sp.indicate_image(np.zeros((2, 2, 1)), unbounded, 0, "inversion", 2)
    assert sp.indicated_image_space(unbounded, "binary", 3).shape == (2, 2, 3)
    with pytest.raises(ValueError, match=r"Image has shape \(5, 5, 2\)"):
        sp.indicate_image(np.zeros((5, 5, 2)), IMAGE_U8, 0, "binary", 2)
    with pytest.raises(ValueError, match=r"Agent/type index \[2\] outside \[0, 2\)"):
        sp.indicate_image(IMAGE_U8.sample(), IMAGE_U8, 2, "binary", 2)
    with pytest.raises(ValueError, match="Did you mean 'inversion'"):
        sp.indicated_image_space(IMAGE_U8, "inverson", 2)
    with pytest.warns(UserWarning, match="n=1"):
        sp.indicated_image_space(IMAGE_U8, "binary", 1)


def test_spaces_that_differ_in_one_bound_are_different_even_with_equal_reprs():
    low = -np.arange(2000, dtype=np.float32)
    other = low.copy()
    other[1000] -= 1e-3  # within np.allclose's tolerance, and hidden by repr's "..."
    a, b = gs.Box(low, 1.0, dtype=np.float32), gs.Box(other, 1.0, dtype=np.float32)
    assert repr(a) == repr(b) and a == b  # what the old comparisons saw
    assert not sp.same_space(a, b) and sp.space_key(a) != sp.space_key(b)
    assert sp.same_space(a, gs.Box(low.copy(), 1.0, dtype=np.float32))
    nested = gs.Dict({"x": a, "y": gs.Tuple([gs.Discrete(3), gs.MultiDiscrete([2, 2])])})
    assert sp.same_space(nested, gs.Dict({"x": a, "y": gs.Tuple([gs.Discrete(3), gs.MultiDiscrete([2, 2])])}))
    assert not sp.same_space(nested, gs.Dict({"x": b, "y": nested["y"]}))
    assert sp.same_space(gs.Text(3), gs.Text(3)) and not sp.same_space(gs.Text(3), gs.Text(4))


def test_plan_serves_agents_with_equal_repr_but_different_bounds_through_padding():
    low = -np.arange(2000, dtype=np.float32)
    other = low.copy()
    other[1000] -= 1.0
    observations = {"a": gs.Box(low, 1.0, dtype=np.float32), "b": gs.Box(other, 1.0, dtype=np.float32)}
    plan = build_plan("fups", observations, {"a": gs.Discrete(2), "b": gs.Discrete(2)})
    assert not plan.modules["shared"].plain  # one module, but not RLlib's plain one for a single space
