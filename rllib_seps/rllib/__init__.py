"""The sharing plan inside RLlib: :mod:`.configure` (plan -> AlgorithmConfig, the one code path),
:mod:`.callback` (the same from an RLlib callback), :mod:`.connectors` and :mod:`.modules`
(padding, indication and AdaPS masks at run time), :mod:`.internals` (the few private RLlib and
Ray accesses, each checked by a test)."""
