"""The PPO learner of fast execution: one grouped module, every group trained as its own module.

On the module path RLlib trains each module on its own rows: advantages standardised per module,
minibatches of ``minibatch_size`` rows per module (cycling through each module's rows), a loss
that is the mean over the module's rows, a KL coefficient per module. :class:`FastPPOTorchLearner`
does the same per group of the grouped module, all groups in one pass:

- :class:`GroupedAdvantages` replaces RLlib's GAE piece: GAE as RLlib computes it, advantages
  standardised per group.
- :class:`GroupMinibatches` gives minibatches of ``minibatch_size`` rows of every group, cycling
  through each group's rows as RLlib's ``MiniBatchCyclicIterator`` does through each module's.
- The loss is the sum over groups of PPO's loss over the group's rows (RLlib's formulas). A
  group's parameters only see its own rows, so its gradient is the one its own module would get.
- Each group has its own KL coefficient, adapted as RLlib adapts a module's.
- :class:`GroupedAdam` is Adam with a step count per group, which skips a group whose gradient
  is zero (no rows of it anywhere), as RLlib does not step the optimizer of a module that is not
  in the batch; torch's Adam would move such a group with its momentum.

Each group's loss terms are logged under the id of the module it replaces (``cluster_0/...``,
``<agent>/...``), as RLlib logs a module's; the grouped module's own entry holds their means.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
from ray.rllib.algorithms.ppo.ppo import (
    LEARNER_RESULTS_CURR_ENTROPY_COEFF_KEY,
    LEARNER_RESULTS_CURR_KL_COEFF_KEY,
    LEARNER_RESULTS_KL_KEY,
    LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY,
    LEARNER_RESULTS_VF_LOSS_UNCLIPPED_KEY,
)
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import ENTROPY_KEY, POLICY_LOSS_KEY, VF_LOSS_KEY, Learner
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.annotations import override
from ray.rllib.utils.numpy import convert_to_numpy
from ray.rllib.utils.postprocessing.value_predictions import compute_value_targets

from rllib_seps.rllib.internals import MinibatchIteratorHook, replace_learner_connector_piece
from rllib_seps.rllib.modules import GROUPED_PLAN_KEY
from rllib_seps.sharing.groups import GroupedPlan

TOTAL_LOSS_KEY = Learner.TOTAL_LOSS_KEY


def grouped_plan_of(module: Any) -> GroupedPlan:
    """The :class:`GroupedPlan` in a grouped module's model_config."""
    return module.model_config[GROUPED_PLAN_KEY]


def group_index(module: Any, observations: Any) -> Any:
    """`(B,)` group of each row of a grouped module's input batch (numpy or torch)."""
    return module.layout.unpack(observations).group


def standardize_per_group(values: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """``(values - mean) / max(1e-4, std)`` within each group (RLlib's standardisation of a
    module's advantages, per group)."""
    counts = np.maximum(np.bincount(group, minlength=n_groups), 1)
    mean = np.bincount(group, values, minlength=n_groups) / counts
    centred = values - mean[group]
    std = np.sqrt(np.bincount(group, centred ** 2, minlength=n_groups) / counts)
    return centred / np.maximum(1e-4, std)[group]


class GroupedAdvantages(ConnectorV2):
    """Learner piece: GAE advantages and value targets, advantages standardised per group.

    What RLlib's ``GeneralAdvantageEstimation`` does for each module (values of the whole batch
    in one pass, bootstrapped at the artificial last step of every episode chunk), with the
    standardisation of the advantages done per group of the grouped module.

    Args:
        gamma: Discount factor.
        lambda_: GAE's lambda.
    """

    def __init__(self, input_observation_space: Any = None, input_action_space: Any = None, *,
                 gamma: float, lambda_: float, **kwargs: Any) -> None:
        super().__init__(input_observation_space, input_action_space, **kwargs)
        self.gamma, self.lambda_ = gamma, lambda_

    @override(ConnectorV2)
    def __call__(self, *, rl_module: Any, episodes: list, batch: dict, **kwargs: Any) -> Any:
        module = rl_module[DEFAULT_MODULE_ID].unwrapped()  # DDP-wrapped with several learners
        data = batch[DEFAULT_MODULE_ID]
        values_tensor = module.compute_values(data)
        values = convert_to_numpy(values_tensor)
        targets = compute_value_targets(
            values=values, rewards=convert_to_numpy(data[Columns.REWARDS]),
            terminateds=convert_to_numpy(data[Columns.TERMINATEDS]),
            truncateds=convert_to_numpy(data[Columns.TRUNCATEDS]), gamma=self.gamma, lambda_=self.lambda_)
        group = convert_to_numpy(group_index(module, data[Columns.OBS])).astype(np.int64)
        advantages = standardize_per_group(targets - values, group, module.n_groups)
        device = values_tensor.device
        data[Postprocessing.ADVANTAGES] = torch.as_tensor(advantages, dtype=torch.float32, device=device)
        data[Postprocessing.VALUE_TARGETS] = torch.as_tensor(targets, dtype=torch.float32, device=device)
        return batch


class GroupMinibatches:
    """Minibatches with ``minibatch_size`` rows of every group, rows sorted by group.

    Each group's rows are gone through in order, then reshuffled each time they run out (as
    ``MiniBatchCyclicIterator`` does per module), until every group has been covered
    ``num_epochs`` times, or for exactly ``num_total_minibatches`` minibatches if that is set (as
    RLlib sets it with several learners, so that they all take the same number of steps).

    Args:
        batch: The train batch (one module: the grouped one).
        group: `(B,)` group of each row.
        num_epochs: Passes over every group's rows.
        minibatch_size: Rows per group per minibatch (None: all of a group's rows).
        shuffle: Whether to reshuffle a group's rows when they run out.
        num_total_minibatches: If > 0, the exact number of minibatches.
    """

    def __init__(self, batch: MultiAgentBatch, group: np.ndarray, *, num_epochs: int,
                 minibatch_size: int | None, shuffle: bool, num_total_minibatches: int = 0) -> None:
        self._batch = batch
        self._data = batch.policy_batches[DEFAULT_MODULE_ID]
        self._rows = [rows for rows in (np.flatnonzero(group == g) for g in range(int(group.max()) + 1))
                      if len(rows)] if len(group) else []
        self._sizes = [minibatch_size or len(rows) for rows in self._rows]
        self._num_epochs, self._shuffle, self._num_total = num_epochs, shuffle, num_total_minibatches

    def __iter__(self) -> Iterator[MultiAgentBatch]:
        order = [rows.copy() for rows in self._rows]
        start = [0] * len(order)
        covered = [0] * len(order)
        count = 0
        while order and ((self._num_total == 0 and min(covered) < self._num_epochs)
                         or (self._num_total > 0 and count < self._num_total)):
            taken = []
            for g, rows in enumerate(order):
                need = self._sizes[g]
                while start[g] + need >= len(rows):  # as MiniBatchCyclicIterator
                    taken.append(rows[start[g]:])
                    need -= len(rows) - start[g]
                    start[g] = 0
                    covered[g] += 1
                    if self._shuffle:
                        rows = order[g] = np.random.permutation(rows)
                taken.append(rows[start[g]:start[g] + need])
                start[g] += need
            index = torch.from_numpy(np.concatenate(taken))
            minibatch = SampleBatch({key: value[index] for key, value in self._data.items()})
            yield MultiAgentBatch({DEFAULT_MODULE_ID: minibatch}, self._batch.env_steps())
            count += 1


class GroupedAdam(torch.optim.Optimizer):
    """Adam (torch's formulas, defaults) over parameters whose first dimension is the group.

    Each group has its own step count, and is left alone (no step, no momentum) when its gradient
    is all zero, as a module with no rows in a batch would be. A group counts as present if any
    of its parameters has a nonzero gradient. With several learners the gradients are averaged
    first, so every learner skips alike.
    """

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for param_group in self.param_groups:
            params = [p for p in param_group["params"] if p.grad is not None]
            if not params:
                continue
            beta1, beta2 = param_group["betas"]
            lr, eps = param_group["lr"], param_group["eps"]
            present = torch.stack([p.grad.flatten(1).any(dim=1) for p in params]).any(dim=0)
            # Kept with the first parameter's state, so that the state dict keeps one kind of key.
            counts = self.state[params[0]].setdefault("group_steps", torch.zeros(len(present), device=present.device))
            counts += present
            steps = counts.unique()
            if bool(present.all()) and len(steps) == 1:  # the usual case: as torch's Adam, in place
                step = float(steps[0])
                for p in params:
                    exp_avg, exp_avg_sq = self._moments(p)
                    exp_avg.lerp_(p.grad, 1 - beta1)
                    exp_avg_sq.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                    denom = exp_avg_sq.sqrt().div_((1 - beta2 ** step) ** 0.5).add_(eps)
                    p.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1 ** step))
                continue
            for p in params:
                shape = (-1,) + (1,) * (p.dim() - 1)
                on, step = present.view(shape), counts.clamp(min=1).view(shape)
                exp_avg, exp_avg_sq = self._moments(p)
                exp_avg.copy_(torch.where(on, exp_avg.lerp(p.grad, 1 - beta1), exp_avg))
                exp_avg_sq.copy_(torch.where(on, exp_avg_sq * beta2 + (1 - beta2) * p.grad * p.grad, exp_avg_sq))
                denom = exp_avg_sq.sqrt() / torch.sqrt(1 - beta2 ** step) + eps
                p.sub_(torch.where(on, exp_avg / denom * (lr / (1 - beta1 ** step)), torch.zeros_like(p)))

    def _moments(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        state = self.state[p]
        if "exp_avg" not in state:
            state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
        return state["exp_avg"], state["exp_avg_sq"]


class FastPPOTorchLearner(MinibatchIteratorHook, PPOTorchLearner):
    """PPO on a grouped module, each group trained as RLlib would train its own module."""

    @override(PPOTorchLearner)
    def build(self) -> None:
        super().build()
        plan = grouped_plan_of(self.module[DEFAULT_MODULE_ID].unwrapped())
        self._groups = plan.groups
        kl_coeff = self.config.get_config_for_module(DEFAULT_MODULE_ID).kl_coeff
        self._kl_coeffs = torch.full((len(plan.groups),), float(kl_coeff), device=self._device)
        self._last: dict[str, torch.Tensor] = {}
        if self.config.add_default_connectors_to_learner_pipeline:
            replace_learner_connector_piece(self, "GeneralAdvantageEstimation",
                                            GroupedAdvantages(gamma=self.config.gamma, lambda_=self.config.lambda_))

    @override(PPOTorchLearner)
    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        params = self.get_parameters(self.module[module_id])
        self.register_optimizer(module_id=module_id, optimizer=GroupedAdam(params), params=params,
                                lr_or_lr_schedule=config.lr)

    def minibatches(self, batch: MultiAgentBatch, *, num_epochs: int, minibatch_size: int | None,
                    shuffle: bool, num_total_minibatches: int) -> GroupMinibatches:
        """See :class:`GroupMinibatches`. With several learners RLlib counts minibatches over all
        rows; here they count over the largest group's (by its share of the agents), as the
        module path counts over the largest module's."""
        module = self.module[DEFAULT_MODULE_ID].unwrapped()
        plan = grouped_plan_of(module)
        group = convert_to_numpy(group_index(module, batch.policy_batches[DEFAULT_MODULE_ID][Columns.OBS]))
        if num_total_minibatches:
            largest = np.bincount(plan.group_of_agent).max() / len(plan.agents)
            num_total_minibatches = max(1, round(num_total_minibatches * largest))
        return GroupMinibatches(batch, group.astype(np.int64), num_epochs=num_epochs, minibatch_size=minibatch_size,
                                shuffle=shuffle, num_total_minibatches=num_total_minibatches)

    @override(PPOTorchLearner)
    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict, fwd_out: dict) -> torch.Tensor:
        module = self.module[module_id].unwrapped()
        n = len(self._groups)
        group = group_index(module, batch[Columns.OBS]).long()
        valid = (batch[Columns.LOSS_MASK].float() if Columns.LOSS_MASK in batch
                 else torch.ones_like(group, dtype=torch.float32))
        count = _group_sum(valid, group, n)
        weight = valid / count.clamp(min=1.0)[group]

        def group_mean(x: torch.Tensor) -> torch.Tensor:
            return _group_sum(x * weight, group, n)

        curr = module.get_train_action_dist_cls().from_logits(fwd_out[Columns.ACTION_DIST_INPUTS])
        prev = module.get_exploration_action_dist_cls().from_logits(batch[Columns.ACTION_DIST_INPUTS])
        ratio = torch.exp(curr.logp(batch[Columns.ACTIONS]) - batch[Columns.ACTION_LOGP])
        advantages = batch[Postprocessing.ADVANTAGES]
        surrogate = torch.min(advantages * ratio,
                              advantages * torch.clamp(ratio, 1 - config.clip_param, 1 + config.clip_param))
        entropy = curr.entropy()
        zero = torch.zeros_like(ratio)
        kl = prev.kl(curr) if config.use_kl_loss else zero
        if config.use_critic:
            values = module.compute_values(batch, embeddings=fwd_out.get(Columns.EMBEDDINGS))
            vf_loss = torch.pow(values - batch[Postprocessing.VALUE_TARGETS], 2.0)
            vf_clipped = torch.clamp(vf_loss, 0, config.vf_clip_param)
        else:
            values = vf_loss = vf_clipped = zero
        entropy_coeff = self.entropy_coeff_schedulers_per_module[module_id].get_current_value()
        per_group = group_mean(-surrogate + config.vf_loss_coeff * vf_clipped - entropy_coeff * entropy)
        mean_kl = group_mean(kl)
        if config.use_kl_loss:
            per_group = per_group + self._kl_coeffs * mean_kl
        # The loss terms of the last minibatch are kept (detached) for the logs: RLlib logs each
        # minibatch's with window 1, so only the last one shows in the results anyway.
        self._last = {"group": group.detach(), "weight": weight.detach(), "count": count,
                      "surrogate": surrogate.detach(), "vf_loss": vf_loss.detach(), "vf_clipped": vf_clipped.detach(),
                      "values": values.detach(), "targets": batch[Postprocessing.VALUE_TARGETS],
                      "entropy": entropy.detach(), "kl": mean_kl.detach(), "total": per_group.detach()}
        return per_group[count > 0].sum()

    def _group_stats(self) -> dict[str, torch.Tensor]:
        """Each group's loss terms, `(G,)` each, in the last minibatch."""
        last, n = self._last, len(self._groups)

        def group_mean(x: torch.Tensor) -> torch.Tensor:
            return _group_sum(x * last["weight"], last["group"], n)

        return {POLICY_LOSS_KEY: group_mean(-last["surrogate"]), VF_LOSS_KEY: group_mean(last["vf_clipped"]),
                LEARNER_RESULTS_VF_LOSS_UNCLIPPED_KEY: group_mean(last["vf_loss"]),
                LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY: _explained_variance(last["targets"], last["values"],
                                                                          last["group"], n),
                ENTROPY_KEY: group_mean(last["entropy"]), LEARNER_RESULTS_KL_KEY: last["kl"],
                TOTAL_LOSS_KEY: last["total"]}

    @override(PPOTorchLearner)
    def after_gradient_based_update(self, *, timesteps: dict) -> None:
        stats = {}
        if self._last:
            present = convert_to_numpy(self._last["count"] > 0)
            stats = {key: convert_to_numpy(value) for key, value in self._group_stats().items()}
            # The grouped module's own entry: means over groups (PPO adapts KL coefficients from it).
            self.metrics.log_dict({key: float(value[present].mean()) for key, value in stats.items()
                                   if key != TOTAL_LOSS_KEY}, key=DEFAULT_MODULE_ID, window=1)
        super().after_gradient_based_update(timesteps=timesteps)
        entropy_coeff = self.entropy_coeff_schedulers_per_module[DEFAULT_MODULE_ID].get_current_value()
        kl_coeffs = convert_to_numpy(self._kl_coeffs)
        for g, group_id in enumerate(self._groups):
            if stats and present[g]:
                self.metrics.log_dict({key: float(value[g]) for key, value in stats.items()}, key=group_id, window=1)
                self.metrics.log_dict({LEARNER_RESULTS_CURR_KL_COEFF_KEY: float(kl_coeffs[g]),
                                       LEARNER_RESULTS_CURR_ENTROPY_COEFF_KEY: float(entropy_coeff)},
                                      key=group_id, window=1)
        self._last = {}

    @override(PPOTorchLearner)
    def _update_module_kl_coeff(self, *, module_id: str, config: Any, kl_loss: float) -> None:
        """Adapts each group's KL coefficient from its mean KL in the last minibatch, as RLlib
        adapts a module's (x1.5 above twice the target, x0.5 below half of it)."""
        if not self._last:
            return
        kl, present = self._last["kl"], self._last["count"] > 0
        factor = torch.ones_like(self._kl_coeffs)
        factor[present & (kl > 2.0 * config.kl_target)] = 1.5
        factor[present & (kl < 0.5 * config.kl_target)] = 0.5
        self._kl_coeffs *= factor


def _group_sum(x: torch.Tensor, group: torch.Tensor, n: int) -> torch.Tensor:
    """`(n,)`: the sum of ``x``'s rows of each group (differentiable)."""
    return torch.zeros(n, device=x.device, dtype=x.dtype).index_add(0, group, x)


def _explained_variance(targets: torch.Tensor, predictions: torch.Tensor, group: torch.Tensor,
                        n: int) -> torch.Tensor:
    """RLlib's explained variance, ``max(-1, 1 - var(y - pred) / var(y))``, per group."""
    counts = _group_sum(torch.ones_like(targets), group, n)

    def variance(x: torch.Tensor) -> torch.Tensor:
        mean = _group_sum(x, group, n) / counts.clamp(min=1)
        return _group_sum((x - mean[group]) ** 2, group, n) / (counts - 1).clamp(min=1)  # unbiased, as torch.var

    return torch.clamp(1.0 - variance(targets - predictions) / variance(targets), min=-1.0)
