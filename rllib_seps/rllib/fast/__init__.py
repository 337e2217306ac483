"""Fast execution: one grouped module for every group of agents, sampled and trained in batches.

:func:`rllib_seps.rllib.fast.execution.apply_execution` is what the routes call (through
:func:`rllib_seps.rllib.configure.apply_plan`); see :mod:`rllib_seps.rllib.fast.execution` for
when fast execution applies.
"""
