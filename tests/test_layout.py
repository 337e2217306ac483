"""A shared module's input layout: its space, pack then unpack, for every kind of input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.spaces import Box, Dict, Discrete, MultiDiscrete

from rllib_seps.sharing import spaces as sp
from rllib_seps.sharing.layout import InputLayout

VECTORS = {"a": Box(-1.0, 1.0, (3,), np.float32), "b": Box(-2.0, 2.0, (5,), np.float32)}
IMAGES = {"a": Box(0, 255, (6, 6, 1), np.uint8), "b": Box(0, 255, (8, 6, 1), np.uint8)}
DICTS = {"a": Dict({"pos": Box(-1.0, 1.0, (2,), np.float32), "id": Discrete(3)}),
         "b": Box(-1.0, 1.0, (4,), np.float32)}
ACTIONS = {
    "discrete": {"a": Discrete(3), "b": Discrete(5)},
    "multidiscrete": {"a": MultiDiscrete([2, 3]), "b": MultiDiscrete([3, 3])},
    "box": {"a": Box(-1.0, 1.0, (2,), np.float32), "b": Box(-1.0, 1.0, (4,), np.float32)},
}


def layout_of(observations, actions, *, indication=None, n_clusters=0, n_groups=0) -> InputLayout:
    return InputLayout(sp.padded_observation_space(observations), sp.padded_action_space(actions),
                       indication=indication, n_indicators=2 if indication else 0, n_clusters=n_clusters,
                       n_groups=n_groups)


@pytest.mark.parametrize("observations", [VECTORS, IMAGES, DICTS], ids=["vector", "image", "dict"])
@pytest.mark.parametrize("action_kind", list(ACTIONS))
@pytest.mark.parametrize("indicated", [False, True], ids=["plain", "indicated"])
@pytest.mark.parametrize("n_clusters, n_groups", [(0, 0), (3, 0), (0, 4), (3, 4)],
                         ids=["no_cluster", "adaps", "grouped", "adaps_grouped"])
def test_pack_then_unpack_gives_back_every_part(observations, action_kind, indicated, n_clusters, n_groups):
    image = observations is IMAGES
    method = ("binary" if image else "one_hot") if indicated else None
    actions = ACTIONS[action_kind]
    layout = layout_of(observations, actions, indication=method, n_clusters=n_clusters, n_groups=n_groups)
    for index, agent in enumerate(sorted(observations)):
        own = observations[agent]
        own.seed(index)
        raw = [own.sample() for _ in range(4)]
        stacked = ({k: np.stack([r[k] for r in raw]) for k in own.spaces} if isinstance(own, Dict)
                   else np.stack(raw))
        cluster = index + 1 if n_clusters else None
        group = 3 - index if n_groups else None
        code = layout.agent_code(actions[agent], indicator=index if indicated else None, cluster=cluster,
                                 group=group)
        packed = layout.pack(stacked, own, layout.codes([code] * 4))
        rows = ([{k: v[i] for k, v in packed.items()} for i in range(4)] if image else list(packed))
        assert all(layout.space.contains(row) for row in rows)

        for batch in (packed, (({k: torch.as_tensor(v) for k, v in packed.items()}) if image
                               else torch.as_tensor(packed))):
            obs, mask, got_cluster, got_group = layout.unpack(batch)
            expected = sp.pad_observation(stacked, own, layout.observation_space)
            if indicated:
                expected = (sp.indicate_image(expected, layout.observation_space, index, method, 2) if image
                            else sp.indicate(expected.reshape(4, -1), index, method, 2))
            np.testing.assert_array_equal(np.asarray(obs), expected.reshape(np.shape(obs)))
            np.testing.assert_array_equal(np.asarray(mask), np.tile(sp.action_mask(actions[agent],
                                                                                   layout.action_space), (4, 1)))
            for got, expected_index in ((got_cluster, cluster), (got_group, group)):
                if expected_index is None:
                    assert got is None
                else:
                    np.testing.assert_array_equal(np.asarray(got), [expected_index] * 4)


@pytest.mark.parametrize("indicated", [False, True], ids=["plain", "indicated"])
def test_the_envs_legal_action_mask_narrows_the_padding_mask(indicated):
    """An agent's own actions that its env marks illegal are masked too; padded ones stay masked."""
    observations = {"a": Dict({"board": Box(0, 1, (4,), np.int8), "action_mask": Box(0, 1, (3,), np.int8)}),
                    "b": Box(-1.0, 1.0, (2,), np.float32)}
    layout = layout_of(observations, ACTIONS["discrete"], indication="one_hot" if indicated else None)
    own = {"board": np.ones((2, 4), np.int8), "action_mask": np.array([[1, 0, 1], [0, 1, 0]], np.int8)}
    code = layout.agent_code(Discrete(3), indicator=0 if indicated else None)
    packed = layout.pack(own, observations["a"], layout.codes([code, code]))
    assert all(layout.space.contains(row) for row in packed)
    np.testing.assert_array_equal(layout.unpack(packed).action_mask, [[1, 0, 1, 0, 0], [0, 1, 0, 0, 0]])


def test_agent_codes_are_checked_against_the_layout():
    layout = layout_of(VECTORS, ACTIONS["discrete"], n_clusters=2)
    with pytest.raises(ValueError, match="with 2 AdaPS clusters got cluster None"):
        layout.agent_code(Discrete(3))
    with pytest.raises(ValueError, match=r"Cluster 2 outside 0..1"):
        layout.agent_code(Discrete(3), cluster=2)
    with pytest.raises(ValueError, match="does not fit padded_space"):
        layout.agent_code(Discrete(9), cluster=0)
    grouped = layout_of(VECTORS, ACTIONS["discrete"], n_groups=3)
    with pytest.raises(ValueError, match="with 3 groups got group None"):
        grouped.agent_code(Discrete(3))
    with pytest.raises(ValueError, match=r"Group 3 outside 0..2"):
        grouped.agent_code(Discrete(3), group=3)
