"""The torch RLModule that one group of agents with different spaces shares.

A shared module reads the input its :class:`rllib_seps.sharing.layout.InputLayout` describes and
:class:`rllib_seps.rllib.connectors.PadObservations` packs: for vectors one float32 vector
``[observation (indicated), action mask, cluster (AdaPS)]``, for images a Dict
``{"observations", "action_mask", ["cluster"]}``. The layout travels in the module's
model_config (:data:`LAYOUT_KEY`), so connector and module take the input apart the same way.
:class:`SharedActorCriticModule` serves PPO and IMPALA (``ValueFunctionAPI``) and APPO
(``TargetNetworkAPI``). Every forward pass (inference, exploration, training, target) masks the
action distribution inputs in one place, :meth:`SharedActorCriticModule._masked`:

- Discrete / MultiDiscrete: ``logits + clamp(log(mask), min=FLOAT_MIN)`` (as RLlib's
  ``action_masking_rlm.py``), so a padded action has probability zero when sampling, when acting
  greedily, and in the training loss.
- Box: a diagonal Gaussian over the padded dimensions. Padded dimensions are pinned to N(0, 1)
  (mean and log-std multiplied by the mask): they depend on no parameter, so they cancel out of
  PPO's probability ratio and KL and receive no gradient. The connector slices them away.

Network input sizes come from the layout: the MLP input is the size of the indicated
observation; an (H, W, C) image gets a CNN in front of the MLP, its flat size found by a dummy
forward pass.

A layout with groups (``n_groups`` > 0, fast execution: see :mod:`rllib_seps.sharing.groups`) makes
the module *grouped*: every dense layer holds one set of weights per group (:class:`GroupedLinear`,
``(G, in, out)``), and a batch is laid out by group (:class:`RowGroups`) so that each layer is one
batched matrix product over all groups. A group's outputs depend only on its own parameters, so
each group is trained by its own agents' samples only.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import (
    TorchCategorical,
    TorchDiagGaussian,
    TorchMultiCategorical,
)
from ray.rllib.core.learner.utils import make_target_network
from ray.rllib.core.rl_module.apis import (
    TARGET_NETWORK_ACTION_DIST_INPUTS,
    InferenceOnlyAPI,
    TargetNetworkAPI,
    ValueFunctionAPI,
)
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
from ray.rllib.models.utils import get_activation_fn
from ray.rllib.utils.annotations import override
from ray.rllib.utils.torch_utils import FLOAT_MIN
from torch import nn

from rllib_seps.sharing import adaps
from rllib_seps.sharing.adaps import masks_for_module
from rllib_seps.sharing.layout import InputLayout
from rllib_seps.sharing.plan import ModulePlan
from rllib_seps.sharing.spaces import same_space

_RLLIB_DEFAULTS = DefaultModelConfig()
DEFAULT_HIDDENS = tuple(_RLLIB_DEFAULTS.fcnet_hiddens)
"""Width of each dense layer when model_config has no "fcnet_hiddens": RLlib's default ([256, 256]),
so that a padded or AdaPS module has as many parameters as RLlib's own module for full sharing."""
DEFAULT_ACTIVATION = _RLLIB_DEFAULTS.fcnet_activation
"""Activation when model_config has no "fcnet_activation": RLlib's default ("tanh")."""
def default_conv_filters(image_shape: Sequence[int]) -> tuple[tuple[int, int, int], ...]:
    """(out_channels, kernel, stride) of each conv layer when model_config has no "conv_filters".

    Images of 16 pixels a side or more (up to Atari's 84x84): two layers of kernel 4, stride 2.
    Smaller ones (grid worlds such as 7x7): kernel 3 (or the image's side), stride 1, so that no
    cell is skipped; one layer when a second would not fit.
    """
    side = int(min(image_shape[:2]))
    if side >= 16:
        return (16, 4, 2), (32, 4, 2)
    kernel = min(3, side)
    layers = ((16, kernel, 1), (32, kernel, 1))
    return layers if side - kernel + 1 >= kernel else layers[:1]


LAYOUT_KEY = "seps_input_layout"
"""model_config key of a shared module's :class:`InputLayout` (set by :func:`padded_module_spec`)."""
GROUPED_PLAN_KEY = "seps_grouped_plan"
"""model_config key of a grouped module's :class:`rllib_seps.sharing.groups.GroupedPlan`: the module
reads only its layout (under :data:`LAYOUT_KEY`); the fast EnvRunner and learner read the plan."""
MODEL_CONFIG_KEYS = ("fcnet_hiddens", "fcnet_activation", "conv_filters", "conv_activation",
                     "vf_share_layers", LAYOUT_KEY, GROUPED_PLAN_KEY, *adaps.MODEL_CONFIG_KEYS)
"""The model_config keys :class:`SharedActorCriticModule` reads."""
_INTERNAL_KEYS = (LAYOUT_KEY, GROUPED_PLAN_KEY)  # set by this package, never by users


def _rllib_default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


_RLLIB_MODEL_DEFAULTS = {f.name: _rllib_default(f) for f in dataclasses.fields(DefaultModelConfig)}


def check_model_config(model_config: dict) -> None:
    """Raises ValueError for a model_config that :class:`SharedActorCriticModule` would not honour.

    RLlib's own keys are accepted at their defaults (RLlib merges them into every module's
    config); any other value of a key the module does not read is refused by name, and so is a key
    RLlib does not know (a typo).
    """
    for key, value in model_config.items():
        if key in MODEL_CONFIG_KEYS:
            continue
        if key not in _RLLIB_MODEL_DEFAULTS:
            close = difflib.get_close_matches(str(key), [*MODEL_CONFIG_KEYS, *_RLLIB_MODEL_DEFAULTS], n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"Unknown model_config key {key!r}.{hint}")
        if value != _RLLIB_MODEL_DEFAULTS[key] and value is not None:
            raise ValueError(
                f"model_config {key}={value!r} is not supported by the shared module that serves "
                f"agents with padding, indication or AdaPS masks (SharedActorCriticModule), which "
                f"reads only {', '.join(k for k in MODEL_CONFIG_KEYS if k not in _INTERNAL_KEYS)}. Fix: "
                f"remove {key!r}, or use a strategy and clusters whose agents need no padding.")


def padded_module_spec(module_plan: ModulePlan, model_config: dict) -> RLModuleSpec:
    """The spec of a shared (non-plain) module of a sharing plan.

    Args:
        module_plan: The module's plan; its layout's space (what the connector emits) and
            padded action space become the module's spaces, and the layout joins the model_config.
        model_config: ``fcnet_hiddens`` (default RLlib's, [256, 256]), ``fcnet_activation``
            (default RLlib's, "tanh"), ``conv_filters`` (list of [out_channels, kernel, stride],
            default :func:`default_conv_filters`), ``conv_activation`` (default "relu"),
            ``vf_share_layers`` (default False: the critic has its own body), and the ``adaps_*``
            keys of :func:`rllib_seps.sharing.adaps.adaps_model_config`.

    Returns:
        An ``RLModuleSpec`` of :class:`SharedActorCriticModule`.

    Raises:
        ValueError: For a model_config key the module would not honour (see
            :func:`check_model_config`).
    """
    check_model_config(model_config)
    return RLModuleSpec(
        module_class=SharedActorCriticModule,
        observation_space=module_plan.observation_space,
        action_space=module_plan.action_space,
        model_config={**model_config, LAYOUT_KEY: module_plan.layout},
    )


def _activation(name: Any) -> nn.Module:
    """A torch activation module from an RLlib activation name ("tanh", "relu", "linear" ...)."""
    fn = get_activation_fn(name, framework="torch")
    if fn is None:
        return nn.Identity()
    return fn() if isinstance(fn, type) else fn


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    """(h, w) from an int or a pair (conv kernel and stride)."""
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    return int(value[0]), int(value[1])


class GroupedLinear(nn.Module):
    """``n_groups`` dense layers applied at once to inputs laid out by group.

    Each group is initialised exactly as an ``nn.Linear(in_features, out_features)`` would be
    (:meth:`reset_group`: same draws, in the same order).

    Args:
        n_groups: Number of groups G.
        in_features: Input features.
        out_features: Output features.
    """

    def __init__(self, n_groups: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = nn.Parameter(torch.empty(n_groups, self.in_features, self.out_features))
        self.bias = nn.Parameter(torch.empty(n_groups, 1, self.out_features))
        for group in range(n_groups):
            self.reset_group(group)

    @torch.no_grad()
    def reset_group(self, group: int) -> None:
        """Draws group ``group``'s weights and bias as ``nn.Linear.reset_parameters`` does."""
        weight = torch.empty(self.out_features, self.in_features)
        nn.init.kaiming_uniform_(weight, a=np.sqrt(5))
        bound = 1.0 / np.sqrt(self.in_features)
        self.weight[group] = weight.T
        self.bias[group, 0] = torch.empty(self.out_features).uniform_(-bound, bound)

    @override(nn.Module)
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(G, M, in_features)` -> `(G, M, out_features)`: group g's rows through group g's layer."""
        return torch.baddbmm(self.bias, x, self.weight)


class RowGroups:
    """The rows of a batch laid out by group, `(B, ...)` <-> `(G, M, ...)`.

    M is the row count of the largest group; smaller groups are padded with zero rows, whose
    outputs :meth:`from_groups` drops. Rows already sorted by group with equal counts (the fast
    learner's minibatches, the fast EnvRunner's batches of equal groups) are a free reshape.

    Args:
        group: `(B,)` group index of each row (any numeric dtype holding integers).
        n_groups: Number of groups G.
    """

    def __init__(self, group: torch.Tensor, n_groups: int) -> None:
        self.n_groups, self.n_rows = n_groups, len(group)
        self.size = len(group)
        self.index: tuple[torch.Tensor, torch.Tensor] | None = None  # (group, position) of each row
        if n_groups == 1:
            return
        group = group.long()
        counts = torch.bincount(group, minlength=n_groups)
        self.size = int(counts.max()) if len(group) else 0
        if n_groups * self.size != len(group) or not bool((group[1:] >= group[:-1]).all()):
            order = torch.argsort(group, stable=True)
            position = torch.empty_like(group)
            position[order] = torch.arange(len(group)) - (torch.cumsum(counts, 0) - counts)[group[order]]
            self.index = (group, position)

    def to_groups(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, ...)` -> `(G, M, ...)`."""
        if self.index is None:
            return x.reshape(self.n_groups, self.size, *x.shape[1:])
        return x.new_zeros(self.n_groups, self.size, *x.shape[1:]).index_put(self.index, x)

    def from_groups(self, y: torch.Tensor) -> torch.Tensor:
        """`(G, M, ...)` -> `(B, ...)`, in the batch's row order."""
        if self.index is None:
            return y.reshape(self.n_rows, *y.shape[2:])
        return y[self.index]


def _dense(n_groups: int, in_features: int, out_features: int) -> nn.Module:
    """A dense layer: ``nn.Linear`` over rows, or :class:`GroupedLinear` over rows laid out by group."""
    return GroupedLinear(n_groups, in_features, out_features) if n_groups else nn.Linear(in_features, out_features)


class MaskableMLP(nn.Module):
    """Dense layers (kept in an ``nn.ModuleList``), each followed by the activation.

    :meth:`hidden_mask` is the single place where AdaPS switches hidden units off per sample:
    :meth:`set_cluster_masks` registers one `(K, width)` bool buffer per masked layer
    (``cluster_mask_<layer>``: saved in the state dict, synced to EnvRunners, never trained), and
    each sample's row is picked by its cluster index inside the batched forward pass, so a batch
    mixing clusters costs one pass. Without masks (or without a cluster) nothing is masked.

    Args:
        in_size: Input features.
        hiddens: Width of each layer.
        activation: RLlib activation name.
        n_groups: 0 for one set of weights over `(B, in_size)` rows; G for :class:`GroupedLinear`
            layers over `(G, M, in_size)` rows laid out by group.
    """

    def __init__(self, in_size: int, hiddens: Sequence[int], activation: Any, n_groups: int = 0) -> None:
        super().__init__()
        sizes = [int(in_size), *(int(h) for h in hiddens)]
        self.layers = nn.ModuleList(_dense(n_groups, i, o) for i, o in zip(sizes[:-1], sizes[1:]))
        self.activation = _activation(activation)
        self.out_size = sizes[-1]
        self._mask_names: tuple[str | None, ...] = (None,) * len(self.layers)

    def set_cluster_masks(self, masks: Sequence[np.ndarray | None]) -> None:
        """Registers the AdaPS masks as buffers: `(K, width)` bool per layer, None to leave a layer whole.

        Raises:
            ValueError: If the masks do not match the layers' widths.
        """
        if len(masks) != len(self.layers):
            raise ValueError(f"Got AdaPS masks for {len(masks)} layers; this MLP has {len(self.layers)}.")
        names = []
        for i, (layer, mask) in enumerate(zip(self.layers, masks)):
            if mask is not None and (np.ndim(mask) != 2 or np.shape(mask)[1] != layer.out_features):
                raise ValueError(f"AdaPS mask of layer {i} has shape {np.shape(mask)}; the layer "
                                 f"has {layer.out_features} units, so it needs (K, {layer.out_features}).")
            if mask is not None:
                self.register_buffer(f"cluster_mask_{i}", torch.as_tensor(np.asarray(mask, bool)))
            names.append(None if mask is None else f"cluster_mask_{i}")
        self._mask_names = tuple(names)

    def hidden_mask(self, layer: int, cluster: torch.Tensor | None) -> torch.Tensor | None:
        """Per-sample 0/1 mask `(B, width)` over the units of `layer`, or None for no mask.

        Args:
            layer: Index into :attr:`layers`.
            cluster: `(B,)` (or `(G, M)` laid out by group) cluster of each sample, or None
                without AdaPS.
        """
        name = self._mask_names[layer]
        if name is None or cluster is None:
            return None
        return getattr(self, name)[cluster.long()]

    @override(nn.Module)
    def forward(self, x: torch.Tensor, cluster: torch.Tensor | None = None) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = self.activation(layer(x))
            mask = self.hidden_mask(i, cluster)
            if mask is not None:
                x = x * mask
        return x


class ConvStack(nn.Module):
    """Conv layers (in an ``nn.ModuleList``) over `(B, C, H, W)`, flattened to `(B, out_size)`.

    Args:
        image_shape: (H, W, C) of the input images.
        filters: (out_channels, kernel, stride) per layer; kernel and stride an int or a pair.
        activation: RLlib activation name.

    Raises:
        ValueError: If the filters shrink the image to nothing.
    """

    def __init__(self, image_shape: Sequence[int], filters: Sequence[Sequence[Any]],
                 activation: Any) -> None:
        super().__init__()
        height, width, channels = (int(s) for s in image_shape)
        layers, in_channels = [], channels
        for out_channels, kernel, stride in filters:
            layers.append(nn.Conv2d(in_channels, int(out_channels), _pair(kernel), _pair(stride)))
            in_channels = int(out_channels)
        self.layers = nn.ModuleList(layers)
        self.activation = _activation(activation)
        try:
            with torch.no_grad():
                out_size = self(torch.zeros(1, channels, height, width)).shape[-1]
        except RuntimeError:  # a kernel larger than its input
            out_size = 0
        if out_size == 0:
            raise ValueError(f"conv_filters {[list(f) for f in filters]} leave nothing of images of "
                             f"shape {tuple(image_shape)}. Fix: use fewer, smaller or less strided "
                             "filters (model_config['conv_filters']).")
        self.out_size = int(out_size)

    @override(nn.Module)
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = self.activation(layer(x))
        return x.flatten(start_dim=1)


class Body(nn.Module):
    """Observation -> features: an MLP, with a CNN in front for (H, W, C) images.

    Vectors arrive flat (the layout flattens them). Images with finite bounds are scaled to
    [0, 1] with the space's elementwise bounds (uint8 pixels and the indicator planes alike).

    Args:
        obs_space: The Box of the padded (indicated) observations.
        model_config: See :func:`padded_module_spec`.
        n_groups: Groups of a grouped MLP (see :class:`MaskableMLP`); vectors only.

    Raises:
        ValueError: For a grouped body over images.
    """

    def __init__(self, obs_space: gym.spaces.Box, model_config: dict, n_groups: int = 0) -> None:
        super().__init__()
        self.is_image = len(obs_space.shape) == 3
        if self.is_image and n_groups:
            raise ValueError("A grouped module (fast execution) takes vector observations only; got images "
                             f"of shape {obs_space.shape}. Fix: use execution='modules'.")
        if self.is_image:
            filters = model_config.get("conv_filters") or default_conv_filters(obs_space.shape)
            self.conv = ConvStack(obs_space.shape, filters, model_config.get("conv_activation", "relu"))
            in_size = self.conv.out_size
            low = np.asarray(obs_space.low, np.float64)
            span = np.asarray(obs_space.high, np.float64) - low
            scaled = np.isfinite(low) & np.isfinite(span) & (span > 0)  # else left as they are
            offset, scale = np.where(scaled, low, 0.0), np.ones_like(span)
            scale[scaled] = 1.0 / span[scaled]
            # Derived from the space, so not part of the state (persistent=False).
            self.register_buffer("obs_low", torch.as_tensor(offset, dtype=torch.float32), persistent=False)
            self.register_buffer("obs_scale", torch.as_tensor(scale, dtype=torch.float32), persistent=False)
        else:
            self.conv = None
            in_size = int(np.prod(obs_space.shape))
        hiddens = model_config.get("fcnet_hiddens") or DEFAULT_HIDDENS
        self.mlp = MaskableMLP(in_size, hiddens, model_config.get("fcnet_activation", DEFAULT_ACTIVATION),
                               n_groups)
        self.out_size = self.mlp.out_size

    @override(nn.Module)
    def forward(self, obs: torch.Tensor, cluster: torch.Tensor | None = None) -> torch.Tensor:
        x = obs.float()
        if self.conv is not None:
            x = ((x - self.obs_low) * self.obs_scale).permute(0, 3, 1, 2)
            x = self.conv(x)
        return self.mlp(x, cluster)


class GaussianHead(nn.Module):
    """Diagonal Gaussian inputs `(..., 2 * D)` = [mean, log_std]; log_std is state-independent
    (one per group in a grouped head).

    Dimensions where `mask` is 0 are pinned to N(0, 1), independent of the parameters.
    """

    def __init__(self, in_size: int, dims: int, n_groups: int = 0) -> None:
        super().__init__()
        self.mean = _dense(n_groups, in_size, dims)
        self.log_std = nn.Parameter(torch.zeros((n_groups, 1, dims) if n_groups else (dims,)))

    @override(nn.Module)
    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.to(features.dtype)
        return torch.cat([self.mean(features) * mask, self.log_std * mask], dim=-1)


def _action_dist_cls(space: gym.Space) -> type:
    if isinstance(space, gym.spaces.Discrete):
        return TorchCategorical
    if isinstance(space, gym.spaces.MultiDiscrete):
        return TorchMultiCategorical.get_partial_dist_cls(
            space=space, input_lens=[int(n) for n in space.nvec.ravel()])
    return TorchDiagGaussian


class SharedActorCriticModule(TorchRLModule, ValueFunctionAPI, InferenceOnlyAPI, TargetNetworkAPI):
    """Actor-critic shared by agents whose spaces were padded to the module's spaces.

    Observation space: ``model_config[LAYOUT_KEY].space`` (see
    :class:`rllib_seps.sharing.layout.InputLayout`). The action mask has one entry per logit
    (Discrete, MultiDiscrete) or dimension (1-D Box actions).

    Layout: an actor body (CNN for images, then MLP) and a policy head; the critic has its own
    body unless ``vf_share_layers`` is set (PPO's default is separate: under parameter sharing
    the value of one agent type must not pull the shared policy features), then a value head.
    EnvRunners build it ``inference_only`` (no critic, no target networks).

    Grouped (a layout with G = ``n_groups`` > 0, fast execution): every dense layer of the bodies
    and heads holds G sets of weights, and each agent's group entry picks its set (see
    :class:`GroupedLinear` and :class:`RowGroups`); vector observations only.

    AdaPS (a layout with K = ``n_clusters`` > 0): every
    hidden layer chosen by ``model_config["adaps_masked_layers"]`` gets one fixed bool mask per
    cluster (buffers, see :class:`MaskableMLP`), built by :func:`rllib_seps.sharing.adaps.masks_for_module`
    from the ``adaps_*`` model_config entries; the critic body gets the same masks as the actor body.

    Raises (on construction):
        ValueError: No layout in the model_config, or spaces other than the layout's.
        TypeError: An action space other than Discrete, MultiDiscrete or 1-D Box.
    """

    @override(TorchRLModule)
    def setup(self) -> None:
        space, actions = self.observation_space, self.action_space
        if not isinstance(actions, (gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.Box)) or (
                isinstance(actions, gym.spaces.Box) and len(actions.shape) != 1):
            raise TypeError(f"SharedActorCriticModule supports Discrete, MultiDiscrete and 1-D Box "
                            f"action spaces, got {actions!r}. Fix: give these agents RLlib's default module.")
        config = self.model_config
        config = dict(dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config or {})
        layout = config.get(LAYOUT_KEY)
        if not isinstance(layout, InputLayout):
            raise ValueError("SharedActorCriticModule needs the InputLayout of its input in "
                             f"model_config[{LAYOUT_KEY!r}]. Fix: build its spec with padded_module_spec().")
        if not (same_space(space, layout.space) and same_space(actions, layout.action_space)):
            raise ValueError(f"SharedActorCriticModule got spaces {space!r} / {actions!r}, but its layout "
                             f"has {layout.space!r} / {layout.action_space!r}. Fix: build its spec with "
                             "padded_module_spec().")
        check_model_config(config)
        self.layout = layout
        self.n_mask, self.n_clusters, self.n_groups = layout.mask_size, layout.n_clusters, layout.n_groups
        obs_space = layout.indicated_space
        self.is_box = isinstance(actions, gym.spaces.Box)
        # Built in the order of RLlib's default PPO module (actor body, critic body, policy head,
        # value head), so that the same seed gives the same weights.
        with torch.random.fork_rng(enabled=self.n_groups > 0):  # grouped: drawn below, module by module
            self.actor_body = Body(obs_space, config, self.n_groups)
            self.critic_body = None if config.get("vf_share_layers") else Body(obs_space, config, self.n_groups)
            width = self.actor_body.out_size
            self.pi = GaussianHead(width, self.n_mask, self.n_groups) if self.is_box else _dense(
                self.n_groups, width, self.n_mask)
            self.vf = _dense(self.n_groups, width if self.critic_body is None else self.critic_body.out_size, 1)
        for group in range(self.n_groups):  # as the plan's modules, one after the other, would draw them
            for layer in self._dense_layers():
                layer.reset_group(group)
        self.action_dist_cls = _action_dist_cls(actions)
        if self.n_clusters:
            # AdaPS: one fixed mask per cluster (rllib_seps.sharing.adaps), the same over the actor's and
            # the critic's hidden units, so a cluster's policy and value use one sub-network.
            widths = [layer.out_features for layer in self.actor_body.mlp.layers]
            masks = masks_for_module(config, self.n_clusters, widths)
            for body in (self.actor_body, self.critic_body):
                if body is not None:
                    body.mlp.set_cluster_masks(masks)

    def _dense_layers(self) -> list[nn.Module]:
        """The dense layers, in the order they are built."""
        bodies = [b for b in (self.actor_body, self.critic_body) if b is not None]
        head = self.pi.mean if self.is_box else self.pi
        return [layer for body in bodies for layer in body.mlp.layers] + [head, self.vf]

    def _parts(self, obs: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, RowGroups | None]:
        """(observation, action mask, cluster index or None, row groups or None) of a batch of
        module inputs; a grouped module's parts come laid out by group."""
        x, mask, cluster, group = self.layout.unpack(obs)
        if not self.n_groups:
            return x, mask, cluster, None
        groups = RowGroups(group, self.n_groups)
        return (groups.to_groups(x), groups.to_groups(mask),
                None if cluster is None else groups.to_groups(cluster), groups)

    @staticmethod
    def _rows(groups: RowGroups | None, y: torch.Tensor) -> torch.Tensor:
        """Outputs back in the batch's row order."""
        return y if groups is None else groups.from_groups(y)

    def _masked(self, head: nn.Module, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Masked action distribution inputs from a body's features: the one place where every
        forward path (inference, exploration, train, target) masks them."""
        if self.is_box:
            return head(features, mask)
        return head(features) + torch.clamp(torch.log(mask), min=FLOAT_MIN)

    def _policy_inputs(self, body: Body, head: nn.Module, obs: Any) -> torch.Tensor:
        """Masked action distribution inputs `(B, n)`."""
        x, mask, cluster, groups = self._parts(obs)
        return self._rows(groups, self._masked(head, body(x, cluster), mask))

    def action_dist_inputs(self, obs: Any) -> torch.Tensor:
        """Masked action distribution inputs `(B, n)` of a batch of module inputs: what inference
        and exploration return, without RLlib's switch of train/eval mode around every call
        (the fast EnvRunner calls this at every step, under ``torch.inference_mode``)."""
        return self._policy_inputs(self.actor_body, self.pi, obs)

    @override(TorchRLModule)
    def _forward(self, batch: dict, **kwargs) -> dict:
        """Inference and exploration (RLlib wraps both in ``no_grad``): masked inputs only."""
        return {Columns.ACTION_DIST_INPUTS: self.action_dist_inputs(batch[Columns.OBS])}

    @override(TorchRLModule)
    def _forward_train(self, batch: dict, **kwargs) -> dict:
        """Masked action distribution inputs, and the critic's features as embeddings."""
        x, mask, cluster, groups = self._parts(batch[Columns.OBS])
        features = self.actor_body(x, cluster)
        logits = self._masked(self.pi, features, mask)
        if self.critic_body is not None:
            features = self.critic_body(x, cluster)
        return {Columns.ACTION_DIST_INPUTS: self._rows(groups, logits),
                Columns.EMBEDDINGS: self._rows(groups, features)}

    @override(ValueFunctionAPI)
    def compute_values(self, batch: dict, embeddings: Any = None) -> torch.Tensor:
        """State values `(B,)`; `embeddings` from :meth:`_forward_train` skip the critic body."""
        x, _, cluster, groups = self._parts(batch[Columns.OBS])
        if embeddings is None:
            body = self.actor_body if self.critic_body is None else self.critic_body
            features = body(x, cluster)
        else:
            features = embeddings if groups is None else groups.to_groups(embeddings)
        return self._rows(groups, self.vf(features)).squeeze(-1)

    @override(InferenceOnlyAPI)
    def get_non_inference_attributes(self) -> list[str]:
        return ["critic_body", "vf", "_target_actor_body", "_target_pi"]

    @override(TargetNetworkAPI)
    def make_target_networks(self) -> None:
        self._target_actor_body = make_target_network(self.actor_body)
        self._target_pi = make_target_network(self.pi)

    @override(TargetNetworkAPI)
    def get_target_network_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.actor_body, self._target_actor_body), (self.pi, self._target_pi)]

    @override(TargetNetworkAPI)
    def forward_target(self, batch: dict) -> dict:
        """Masked action distribution inputs of the target networks (APPO)."""
        logits = self._policy_inputs(self._target_actor_body, self._target_pi, batch[Columns.OBS])
        return {TARGET_NETWORK_ACTION_DIST_INPUTS: logits}
