"""rllib-seps: selective (SePS) and adaptive (AdaPS) parameter sharing for RLlib."""
