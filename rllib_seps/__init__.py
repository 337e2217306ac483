"""rllib-seps: selective (SePS) and adaptive (AdaPS) parameter sharing for RLlib.

The subpackages follow the data flow, and import only down this list:

- :mod:`rllib_seps.cli`: ``rllib train`` / ``rllib evaluate`` (experiment files, runs, plots).
- :mod:`rllib_seps.rllib`: the sharing plan inside RLlib (config, callback, connectors, modules).
- :mod:`rllib_seps.pretraining`: random rollouts -> encoder -> clusters -> report (no RLlib).
- :mod:`rllib_seps.sharing`: spaces, module input layouts, the sharing plan, AdaPS masks (no Ray).
- :mod:`rllib_seps.options`: :class:`SePSOptions`, read by every layer.

:mod:`rllib_seps.envs` holds the paper's environments. Public names below resolve on first use
(PEP 562), so ``import rllib_seps`` (and the ``rllib`` command) does not import Ray or torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> module that defines it.
_EXPORTS = {
    "AgentToModuleMapping": "rllib_seps.sharing.mapping",
    "PretrainingResult": "rllib_seps.pretraining.pipeline",
    "SePSCallback": "rllib_seps.rllib.callback",
    "SePSOptions": "rllib_seps.options",
    "apply_plan": "rllib_seps.rllib.configure",
    "run_pretraining": "rllib_seps.pretraining.pipeline",
    "with_sharing": "rllib_seps.rllib.configure",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from rllib_seps.options import SePSOptions
    from rllib_seps.pretraining.pipeline import PretrainingResult, run_pretraining
    from rllib_seps.rllib.callback import SePSCallback
    from rllib_seps.rllib.configure import apply_plan, with_sharing
    from rllib_seps.sharing.mapping import AgentToModuleMapping


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rllib_seps' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # resolve once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
