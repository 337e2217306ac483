"""rllib-seps: selective (SePS) and adaptive (AdaPS) parameter sharing for RLlib.

The data flows through the package's modules in this order: ``rollouts`` (random-policy data) ->
``encoder`` (agent embeddings) -> ``clustering`` -> ``mapping`` and ``specs`` (module per agent)
-> ``spaces``, ``connectors`` and ``modules`` (padding, indication, masks) -> ``configure`` and
``callback`` (the RLlib config) -> ``cli`` (``rllib train``).
"""

from rllib_seps.callback import SePSCallback
from rllib_seps.configure import apply_plan, with_sharing
from rllib_seps.mapping import AgentToModuleMapping
from rllib_seps.options import SePSOptions
from rllib_seps.pretraining import PretrainingResult, run_pretraining

__all__ = [
    "AgentToModuleMapping",
    "PretrainingResult",
    "SePSCallback",
    "SePSOptions",
    "apply_plan",
    "run_pretraining",
    "with_sharing",
]
