"""AdaPS masks: one fixed binary mask per cluster over the hidden units of the shared network.

AdaPS (Li et al. 2023, ``shared/papers/adaps-li-2023-summary.md``) keeps one network for all
agents and gives each cluster of agents its own sub-network: a fixed, randomly initialised,
never-trained *mapping network* turns each cluster centre into activation probabilities through
a sigmoid, and units whose probability is below the drop threshold lambda are switched off for
that cluster. Everything here is pure numpy (no Ray, no torch), so masks can be computed and
inspected without building a module; :class:`rllib_seps.rllib.modules.MaskableMLP` holds them as
buffers and applies them.

Design (the paper leaves these details open; they are chosen here and fixed by the seed):

1. **Standardised centres.** A centre is the mean of its agents' encoder means. What tells
   clusters apart is where the centres lie *relative to each other*, not the encoder's arbitrary
   offset and scale (seen on BPS(1): centres around (2, 1, -0.7, 0.4, 1.8), differing by about 1
   per coordinate). Centres are therefore centred on their mean and scaled to unit RMS per
   coordinate before mapping; without this, the common offset dominates and every cluster gets
   nearly the same mask. With K=1 the single centre becomes 0 and its mask is the bias's alone.
2. **Mapping network** ``m -> 64 -> sum(layer_sizes)``, drawn once from ``numpy``'s PCG64 with
   the seed: ``h = tanh(c W1)``, ``W1 ~ N(0, 1/m)``, no hidden bias (``h`` has roughly unit-scale
   entries that differ between clusters); ``logits = h W2 + b``, ``W2 ~ N(0, 2.5/64)``,
   ``b ~ N(0, 1)``. The cluster-dependent part ``h W2`` and the shared bias ``b`` have about the
   same spread (std ~1 each), so two clusters' logits are correlated by about 0 (K=2: their
   standardised centres are opposite) to 0.5 (many clusters): their masks overlap partly, and
   every pair of clusters has units of its own and units in common.
3. **Threshold.** ``mask = sigmoid(logits) >= lambda``. With logits of std ~1.4,
   lambda = 0.5 keeps about half of the units, 0.3 about 3/4 and 0.7 about 1/4 (the expected
   density is ``P(N(0, 2) >= logit(lambda))``). A cluster left without any unit in a layer gets
   the unit of its highest probability back, so no cluster's network is cut in two.

The masks are binary and multiply the activations unscaled (no 1/density rescaling as in
dropout): the mask never changes during training, so the next layer's weights adapt to it.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal, Mapping, Sequence

import numpy as np
from sklearn.metrics import pairwise_distances

MAPPING_HIDDEN = 64
"""Width of the mapping network's hidden layer."""
_W2_VARIANCE = 2.5
"""Variance scale of the mapping network's output weights (times 1/MAPPING_HIDDEN)."""

DEFAULT_DROP_THRESHOLD = 0.5
"""Default lambda: keeps about half of the units per cluster (see :class:`SePSOptions`
``adaps_drop_threshold`` for the measurement behind it)."""
DEFAULT_MASKED_LAYERS = "all"
"""Default hidden layers to mask: all of them (see ``adaps_masked_layers``)."""

# model_config keys through which the masks' inputs reach the module (see masks_for_module).
CENTRES_KEY = "adaps_centres"
DROP_THRESHOLD_KEY = "adaps_drop_threshold"
MASKED_LAYERS_KEY = "adaps_masked_layers"
SEED_KEY = "adaps_seed"
MODEL_CONFIG_KEYS = (CENTRES_KEY, DROP_THRESHOLD_KEY, MASKED_LAYERS_KEY, SEED_KEY)

MaskedLayers = Literal["all"] | Sequence[int]


def standardise_centres(centres: np.ndarray) -> np.ndarray:
    """Centres `(K, m)` centred on their mean and scaled to unit RMS per coordinate.

    Identical centres (and K=1) come back as zeros.
    """
    centres = np.asarray(centres, np.float64)
    centred = centres - centres.mean(axis=0, keepdims=True)
    rms = float(np.sqrt(np.mean(centred**2)))
    return centred / rms if rms > 1e-12 else np.zeros_like(centred)


def mask_probabilities(centres: np.ndarray, n_units: int, *, seed: int) -> np.ndarray:
    """Activation probabilities `(K, n_units)` of the fixed mapping network (see module docstring).

    Args:
        centres: `(K, m)` cluster centres (raw; they are standardised here).
        n_units: Total number of maskable units (all masked layers together).
        seed: Seed of the mapping network's weights.

    Raises:
        ValueError: For centres that are not a non-empty 2-D array of finite numbers.
    """
    centres = np.asarray(centres, np.float64)
    if centres.ndim != 2 or centres.shape[0] < 1 or centres.shape[1] < 1 or not np.all(np.isfinite(centres)):
        raise ValueError(f"AdaPS cluster centres must be a finite (K, m) array with K, m >= 1; got "
                         f"shape {centres.shape}. Fix: pass one centre (e.g. the mean encoder "
                         "mean of its agents) per cluster.")
    m = centres.shape[1]
    rng = np.random.Generator(np.random.PCG64(seed))
    w1 = rng.standard_normal((m, MAPPING_HIDDEN)) / np.sqrt(m)
    w2 = rng.standard_normal((MAPPING_HIDDEN, n_units)) * np.sqrt(_W2_VARIANCE / MAPPING_HIDDEN)
    bias = rng.standard_normal(n_units)
    logits = np.tanh(standardise_centres(centres) @ w1) @ w2 + bias
    return 1.0 / (1.0 + np.exp(-logits))


def cluster_masks(centres: np.ndarray, layer_sizes: Sequence[int], *, drop_threshold: float,
                  seed: int) -> list[np.ndarray]:
    """One binary mask per cluster and layer, from a fixed random mapping of the cluster centres.

    Args:
        centres: `(K, m)` cluster centres, row k for cluster k.
        layer_sizes: Units of each masked layer.
        drop_threshold: lambda in (0, 1): units with activation probability below it are off.
        seed: Seed of the mapping network; the same inputs and seed give the same masks.

    Returns:
        One bool array `(K, units)` per layer; True keeps the unit. Every cluster keeps at least
        one unit per layer.

    Raises:
        ValueError: For a threshold outside (0, 1), empty layers, or bad centres.
    """
    if not 0.0 < drop_threshold < 1.0:
        raise ValueError(f"AdaPS drop_threshold={drop_threshold!r} is invalid: it must lie in (0, 1) "
                         "(0.5 keeps about half of the units).")
    sizes = [int(s) for s in layer_sizes]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"AdaPS needs at least one masked layer of at least one unit; got {sizes}.")
    probs = mask_probabilities(centres, sum(sizes), seed=seed)
    masks = []
    for layer_probs in np.split(probs, np.cumsum(sizes)[:-1], axis=1):
        mask = layer_probs >= drop_threshold
        empty = ~mask.any(axis=1)
        mask[empty, layer_probs[empty].argmax(axis=1)] = True
        masks.append(mask)
    k = probs.shape[0]
    if k > 1:
        flat = np.concatenate(masks, axis=1)
        same = [(i, j) for i in range(k) for j in range(i + 1, k) if np.array_equal(flat[i], flat[j])]
        if same:
            warnings.warn(f"AdaPS clusters {same} got identical masks over {flat.shape[1]} units at "
                          f"drop threshold {drop_threshold}: they share one sub-network. Their centres "
                          "coincide, or the threshold leaves too few units to tell them apart. Fix: "
                          "use fewer clusters (n_clusters) or a threshold nearer 0.5.", stacklevel=2)
    return masks


def resolve_masked_layers(masked_layers: MaskedLayers, n_layers: int) -> tuple[int, ...]:
    """Indices of the hidden layers to mask, from ``"all"`` or a sequence of indices.

    Raises:
        ValueError: For an index outside ``0..n_layers-1`` or an empty selection.
    """
    if isinstance(masked_layers, str):
        if masked_layers != "all":
            raise ValueError(f'AdaPS masked_layers={masked_layers!r} is invalid: use "all" or a list '
                             "of hidden layer indices such as [0].")
        return tuple(range(n_layers))
    layers = tuple(sorted({int(i) for i in masked_layers}))
    if not layers or layers[0] < 0 or layers[-1] >= n_layers:
        raise ValueError(f"AdaPS masked_layers={list(masked_layers)} do not fit a network of "
                         f"{n_layers} hidden layer(s) (indices 0..{n_layers - 1}). Fix: change "
                         "adaps_masked_layers or fcnet_hiddens.")
    return layers


def adaps_model_config(*, centres: np.ndarray | Sequence[Sequence[float]] | None = None,
                       drop_threshold: float = DEFAULT_DROP_THRESHOLD,
                       masked_layers: MaskedLayers = DEFAULT_MASKED_LAYERS, seed: int = 0) -> dict[str, Any]:
    """The model_config entries that tell an AdaPS module how to build its masks (plain types)."""
    config: dict[str, Any] = {DROP_THRESHOLD_KEY: float(drop_threshold),
                              MASKED_LAYERS_KEY: masked_layers if isinstance(masked_layers, str)
                              else [int(i) for i in masked_layers],
                              SEED_KEY: int(seed)}
    if centres is not None:
        config[CENTRES_KEY] = np.asarray(centres, np.float64).tolist()
    return config


def masks_for_module(model_config: Mapping[str, Any], n_clusters: int,
                     layer_sizes: Sequence[int]) -> list[np.ndarray | None]:
    """The masks of an AdaPS module: `(K, units)` bool per hidden layer, None where unmasked.

    Reads the :func:`adaps_model_config` keys of ``model_config``. Without centres (a plan built
    without pretraining) the K unit vectors serve as centres: clusters equally far apart.

    Raises:
        ValueError: If the centres are not one per cluster, or for bad options.
    """
    centres = model_config.get(CENTRES_KEY)
    centres = np.eye(n_clusters) if centres is None else np.asarray(centres, np.float64)
    if centres.ndim != 2 or centres.shape[0] != n_clusters:
        raise ValueError(f"AdaPS module has {n_clusters} clusters but model_config[{CENTRES_KEY!r}] "
                         f"holds centres of shape {centres.shape}. Fix: give one centre per cluster.")
    layers = resolve_masked_layers(model_config.get(MASKED_LAYERS_KEY, DEFAULT_MASKED_LAYERS),
                                   len(layer_sizes))
    masks = cluster_masks(centres, [layer_sizes[i] for i in layers],
                          drop_threshold=float(model_config.get(DROP_THRESHOLD_KEY, DEFAULT_DROP_THRESHOLD)),
                          seed=int(model_config.get(SEED_KEY, 0)))
    out: list[np.ndarray | None] = [None] * len(layer_sizes)
    for i, mask in zip(layers, masks):
        out[i] = mask
    return out


def mask_report(masks: Sequence[np.ndarray | None]) -> dict[str, Any]:
    """Density of every cluster's mask and the overlap between clusters, per layer and overall.

    Args:
        masks: `(K, units)` bool per layer, None for unmasked layers (skipped).

    Returns:
        JSON-ready dict: ``n_clusters``; ``layers``: per masked layer ``{"layer", "units",
        "density": [K], "overlap": [[K x K]]}``; ``density`` and ``overlap`` over all masked units
        together. Density is the fraction of units kept; overlap is the Jaccard index
        |A & B| / |A | B| of two clusters' kept units (1 on the diagonal).
    """
    layers = [(i, np.asarray(m, bool)) for i, m in enumerate(masks) if m is not None]
    if not layers:
        return {"n_clusters": 0, "layers": [], "density": [], "overlap": []}

    def describe(mask: np.ndarray) -> dict[str, Any]:
        # Jaccard similarity = 1 - Jaccard distance, between every pair of clusters' rows.
        overlap = 1.0 - pairwise_distances(mask, metric="jaccard")
        return {"density": [round(float(row.mean()), 4) for row in mask],
                "overlap": np.round(overlap, 4).tolist()}

    per_layer = [{"layer": i, "units": int(m.shape[1]), **describe(m)} for i, m in layers]
    return {"n_clusters": int(layers[0][1].shape[0]), "layers": per_layer,
            **describe(np.concatenate([m for _, m in layers], axis=1))}


def format_mask_report(report: Mapping[str, Any]) -> str:
    """A few lines: each cluster's density per layer, and the pairwise overlaps."""
    k = report["n_clusters"]
    lines = [f"AdaPS masks: {k} cluster(s) over {sum(l['units'] for l in report['layers'])} units in "
             f"layer(s) {[l['layer'] for l in report['layers']]}"]
    for c in range(k):
        per_layer = ", ".join(f"layer {l['layer']} {l['density'][c]:.2f}" for l in report["layers"])
        lines.append(f"  cluster {c}: density {report['density'][c]:.2f} ({per_layer})")
    pairs = [f"{i}-{j}: {report['overlap'][i][j]:.2f}" for i in range(k) for j in range(i + 1, k)]
    if pairs:
        lines.append("  overlap (Jaccard) " + ", ".join(pairs))
    return "\n".join(lines)
