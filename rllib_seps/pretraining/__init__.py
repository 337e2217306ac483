"""SePS pretraining, in data-flow order: :mod:`.rollouts` (random-policy transitions) ->
:mod:`.encoder` (agent embeddings and behaviours) -> :mod:`.clustering` (K and the partition) ->
:mod:`.report`; :mod:`.pipeline` runs them in order. Needs no RLlib."""
