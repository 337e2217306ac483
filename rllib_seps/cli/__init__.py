"""The ``rllib`` command: :mod:`.main` (argument parsing), :mod:`.experiment_file` (YAML ->
config), :mod:`.session` (the Ray session), :mod:`.train`, :mod:`.evaluate`, :mod:`.plots`."""
