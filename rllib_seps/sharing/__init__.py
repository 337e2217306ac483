"""How agents share networks, as pure data (numpy, gymnasium, no Ray): :mod:`.spaces` (paired
space/data transforms), :mod:`.layout` (a shared module's input), :mod:`.plan` (strategy and
clusters -> modules), :mod:`.adaps` (AdaPS masks), :mod:`.mapping` (agent -> module)."""
