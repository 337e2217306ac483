"""Several learners, whatever module a learner's shard lacks: gradients synchronised by hand.

With ``num_learners > 1`` RLlib wraps every module in torch's ``DistributedDataParallel``, which
averages gradients through hooks that fire only on learners whose batch reached the module. PPO
shards a train batch by episodes (sliced by env steps), so a learner can get no rows of a module
whose agents act rarely or only in part of an episode (small clusters make it likely); the other
learners then wait for it forever (upstream issue #63819). RLlib's IMPALA and APPO learners
synchronise by hand for this reason; :class:`ModuleGradientSync` does the same for the others.

Every learner takes part in one all-reduce per update step, over the gradients of every trainable
module in sorted order (zeros where its batch had no rows) plus a count of the learners that had
rows. A module's gradient is then the mean over the learners that trained it, which is what DDP
gives when all of them have rows; a module that no learner saw keeps no gradient, as on one
learner.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.distributed as dist
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.learner.learner import Learner
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.annotations import override
from torch.nn.parallel import DistributedDataParallel

logger = logging.getLogger(__name__)


class ModuleGradientSync:
    """Mixin for a ``TorchLearner``: averages each module's gradients over the learners whose
    batch held its rows, and never waits for a learner without them.

    Put it first among the bases (``class MyLearner(ModuleGradientSync, PPOTorchLearner)``). With
    one learner it does nothing.
    """

    @override(Learner)
    def build(self) -> None:
        super().build()
        self._take_over_gradient_sync()

    @override(Learner)
    def add_module(self, **kwargs: Any):
        spec = super().add_module(**kwargs)
        self._take_over_gradient_sync()
        return spec

    def _take_over_gradient_sync(self) -> None:
        """Stops DDP's own communication on every module: what ``DDP.no_sync()`` switches off,
        and the buffer broadcast in each forward pass (fixed buffers such as AdaPS masks are the
        same on every learner), so that a learner that skips a module's forward pass cannot
        leave another waiting."""
        if not self.distributed:
            return
        for module_id in self.module.keys():
            module = self.module[module_id]
            if isinstance(module, DistributedDataParallel):
                module.require_backward_grad_sync = False
                module.require_forward_param_sync = False

    @override(TorchLearner)
    def compute_gradients(self, loss_per_module: dict, **kwargs: Any) -> dict:
        gradients = super().compute_gradients(loss_per_module, **kwargs)
        if not self.distributed:
            return gradients
        return self._all_reduce_gradients(set(loss_per_module))

    def _all_reduce_gradients(self, trained_here: set) -> dict:
        """One all-reduce over every trainable module's gradients and "had rows" flags.

        Args:
            trained_here: Modules with a loss on this learner.

        Returns:
            The averaged gradients (param ref -> tensor) of every module some learner trained.
        """
        module_ids = [m for m in sorted(self.module.keys()) if self.should_module_be_updated(m)]
        params = {m: [p for p in self.get_parameters(self.module[m]) if p.requires_grad]
                  for m in module_ids}
        device = next((p.device for m in module_ids for p in params[m]), torch.device("cpu"))
        flags = torch.tensor([float(m in trained_here) for m in module_ids], device=device)
        pieces = [flags] + [
            (p.grad if m in trained_here and p.grad is not None else torch.zeros_like(p))
            .reshape(-1).to(torch.float32)
            for m in module_ids for p in params[m]
        ]
        flat = torch.cat(pieces)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        counts, offset, gradients = flat[: len(module_ids)], len(module_ids), {}
        for m, count in zip(module_ids, counts.tolist()):
            for p in params[m]:
                summed = flat[offset: offset + p.numel()]
                offset += p.numel()
                if count == 0:  # no learner had rows: no update, as with one learner
                    p.grad = None
                    continue
                p.grad = (summed / count).view_as(p).to(p.dtype)
                gradients[self.get_param_ref(p)] = p.grad
        return gradients


class PPOTorchLearnerWithModuleSync(ModuleGradientSync, PPOTorchLearner):
    """RLlib's PPO learner, safe with several learners whatever modules their shards hold."""


# Algorithms whose default learner gets the hand sync. IMPALA and APPO synchronise by hand
# already (their learners' _uncompiled_update); DQN and SAC shard replay samples per module.
SYNCED_LEARNERS = {PPOTorchLearner: PPOTorchLearnerWithModuleSync}


def sync_every_module(config: AlgorithmConfig) -> AlgorithmConfig:
    """Sets a learner class that synchronises gradients by hand where RLlib's default would hang
    on a module missing from one learner's shard; changes nothing for other algorithms.

    Call it on configs that use several learners (``with_sharing`` does). It is harmless with
    one learner, so the number of learners can still change afterwards.

    Args:
        config: An RLlib config (changed in place and returned).

    Returns:
        ``config``.
    """
    default = config.get_default_learner_class()
    synced = SYNCED_LEARNERS.get(default)
    if synced is None or config.learner_class is synced:
        return config
    if config.learner_class is not default:
        if config.num_learners > 1 and not issubclass(config.learner_class, ModuleGradientSync):
            logger.warning(
                "%s with %d learners can hang when a learner's shard holds no rows of a module "
                "(ray-project/ray#63819); add rllib_seps.rllib.learners.ModuleGradientSync as the "
                "first base of the learner class %s.", default.__name__, config.num_learners,
                config.learner_class.__name__)
        return config
    config.learners(learner_class=synced)
    return config
