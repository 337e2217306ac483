"""Experiment files: classic RLlib YAML -> validated ``AlgorithmConfig`` and SePS options.

A file maps experiment names to ``{run, env, stop, config}`` (Tune's experiment dict). ``config``
holds RLlib settings (old keys such as ``lambda`` or ``num_workers`` are accepted, as by
``AlgorithmConfig.update_from_dict``; ``model_config`` sets the new stack's model) and an
optional ``seps:`` block of :class:`rllib_seps.SePSOptions`; without it the run is plain RLlib.
Mistakes in a file (invalid YAML, an unknown algorithm, environment, config key or SePS option)
end in one line naming the file and the key.
"""

from __future__ import annotations

import copy
import importlib
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from rllib_seps.cli.errors import UserError, closest
from rllib_seps.options import MULTI_AGENT_ALGORITHMS, SePSOptions

# Keys of one experiment in a file; "config" holds the algorithm's settings.
EXPERIMENT_KEYS = ("run", "env", "stop", "config", "checkpoint_freq", "checkpoint_at_end")
# Config keys handled here rather than by AlgorithmConfig.update_from_dict.
SEPS_KEY, MODEL_KEYS = "seps", ("model_config", "model")


@dataclass
class Experiment:
    """One experiment of a file, ready to share and train.

    Attributes:
        name: The experiment's name (Tune's experiment directory under the storage path).
        source: The file it came from.
        config: The algorithm config, with environment and settings, but no sharing yet.
        seps: The ``seps:`` options, or None for a plain RLlib run.
        stop: Tune stop criteria (result key -> value).
        checkpoint_freq: Checkpoint every this many iterations (0: none on the way).
        checkpoint_at_end: Checkpoint when training stops.
        stop_source: Where ``stop`` came from if not the file (e.g. ``--stop``), for errors.
    """

    name: str
    source: str
    config: Any
    seps: SePSOptions | None
    stop: dict = field(default_factory=dict)
    checkpoint_freq: int = 0
    checkpoint_at_end: bool = True
    stop_source: str | None = None


def read_yaml(path: str | Path) -> dict:
    """Reads an experiment file.

    Raises:
        UserError: If the file cannot be read, is not valid YAML (naming line and column), or
            is not a mapping of experiment names to experiments.
    """
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise UserError(source, None, f"cannot read the file: {error.strerror or error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        raise UserError(source, where, f"invalid YAML: {error.problem}") from None
    except yaml.YAMLError as error:
        raise UserError(source, None, f"invalid YAML: {error}") from None
    if not isinstance(data, dict) or not data:
        raise UserError(source, None, "must map experiment names to {run, env, stop, config}; "
                        f"got {type(data).__name__}")
    return data


def algorithm_config(name: Any, source: str, key: str):
    """The default config of algorithm ``name``, importing that algorithm only.

    Raises:
        UserError: For an algorithm that cannot train multi-agent modules on the new stack.
    """
    if name not in MULTI_AGENT_ALGORITHMS:
        hint = (closest(str(name), MULTI_AGENT_ALGORITHMS)
                or f"; use one of {', '.join(MULTI_AGENT_ALGORITHMS)}")
        raise UserError(source, key, f"unknown or unsupported algorithm {name!r}{hint}")
    from ray.rllib.algorithms.registry import ALGORITHMS as RLLIB_ALGORITHMS

    _, config = RLLIB_ALGORITHMS[name]()
    return config


def check_env(env: Any, source: str, key: str) -> str:
    """Checks that ``env`` names an environment: one of rllib-seps', one registered with RLlib
    or gymnasium, or a user's as ``"module:attribute"`` (see :func:`register_user_env`).

    Raises:
        UserError: Naming the closest of rllib-seps' environments, or what the import lacks.
    """
    import gymnasium as gym

    from rllib_seps.envs import ENVIRONMENTS
    from rllib_seps.rllib.internals import registered_env_creator

    if not isinstance(env, str) or not env:
        raise UserError(source, key, f"must name an environment; got {env!r}")
    if env in ENVIRONMENTS or registered_env_creator(env) is not None or env in gym.registry:
        return env
    if ":" in env:
        register_user_env(env, source, key)
        return env
    hint = closest(env, sorted(ENVIRONMENTS)) or f"; rllib-seps registers {sorted(ENVIRONMENTS)}"
    raise UserError(source, key, f"unknown environment {env!r}{hint}; a user's environment is "
                    "given as 'module:attribute', an env class or a creator (env_config) -> env")


def register_user_env(env: str, source: str, key: str | None) -> None:
    """Imports ``"module:attribute"`` (the notation of gymnasium's and setuptools' entry points)
    and registers the attribute, an env class or a creator ``(env_config) -> env``, with RLlib
    under that very string, so that a file's ``env:`` can name a user's environment.

    The current directory is searched first, as ``python -m`` does: Ray adds the driver's
    current directory to its workers' paths, so they import the module from the same place.
    Workers on other machines need it installed (docs/cluster.md).

    Raises:
        UserError: If the module cannot be imported or has no such callable attribute.
    """
    from ray.tune.registry import register_env

    module_name, _, attribute = env.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise UserError(source, key, f"cannot import module {module_name!r} of environment {env!r} "
                        f"({type(error).__name__}: {error}); install it, or run from the directory "
                        "that holds it, or add that directory to PYTHONPATH") from None
    creator = getattr(module, attribute, None)
    if not callable(creator):
        public = [name for name in vars(module) if not name.startswith("_")]
        found = "is not callable" if hasattr(module, attribute) else "does not exist"
        raise UserError(source, key, f"{module_name}.{attribute} {found}{closest(attribute, public)}; "
                        "name an env class or a creator (env_config) -> env")
    register_env(env, creator)


def seps_options(options: Any, source: str, key: str) -> SePSOptions:
    """Validates a ``seps:`` block.

    Raises:
        UserError: Naming the unknown option (and the closest valid one) or the invalid value.
    """
    if not isinstance(options, Mapping):
        raise UserError(source, key, f"must be a mapping of SePS options; got {options!r}")
    known = list(SePSOptions.__dataclass_fields__)
    for name in options:
        if name not in known:
            raise UserError(source, f"{key}.{name}",
                            f"unknown SePS option {name!r}{closest(str(name), known)}")
    try:
        return SePSOptions.from_dict(options)
    except (TypeError, ValueError) as error:
        bad = re.search(r"SePS option (\w+)=", str(error))
        raise UserError(source, f"{key}.{bad.group(1)}" if bad else key, str(error)) from None


def model_settings(value: Any, config: Any, source: str, where: str) -> dict:
    """Checks a file's ``model_config`` block: a mapping of keys that RLlib's default modules
    (``DefaultModelConfig``), the algorithm, or the shared SePS module read.

    Raises:
        UserError: For a value that is not a mapping, or an unknown key (naming the closest).
    """
    if not isinstance(value, Mapping):
        raise UserError(source, where, "must be a mapping such as {fcnet_hiddens: [64, 64]}; "
                        f"got {value!r}")
    import dataclasses

    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    from rllib_seps.rllib.modules import MODEL_CONFIG_KEYS

    known = sorted({f.name for f in dataclasses.fields(DefaultModelConfig)} | set(MODEL_CONFIG_KEYS)
                   | set(config.model_config))
    for name in value:
        if name not in known:
            raise UserError(source, f"{where}.{name}", f"unknown model_config key{closest(str(name), known)}")
    return dict(value)


def apply_settings(config, settings: Mapping, source: str, key: str):
    """Applies a file's ``config:`` settings (without ``seps``, ``env``) to an AlgorithmConfig.

    Every key must be a setting of the algorithm's config (or one of the old names that
    ``update_from_dict`` translates); ``model_config`` (alias ``model``) sets the new stack's
    model config. Settings are applied one by one, so that a failing one is named.

    Raises:
        UserError: For an unknown key (naming the closest) or a value RLlib rejects.
    """
    known = sorted(k for k in vars(config) if not k.startswith("_")) + ["lambda", "model_config"]
    algo = getattr(config.algo_class, "__name__", "algorithm")
    for name, value in settings.items():
        where = f"{key}.{name}"
        try:
            if name in MODEL_KEYS:
                config.rl_module(model_config={**config.model_config,
                                               **model_settings(value, config, source, where)})
                continue
            attributes = set(vars(config))
            # update_from_dict translates old names (lambda, num_workers, ...) but sets an
            # unknown key as a new attribute without a word: that is how a typo shows.
            config.update_from_dict({name: value})
            if set(vars(config)) - attributes:
                delattr(config, name)
                raise UserError(source, where, f"not a setting of {algo}'s config{closest(str(name), known)}")
        except UserError:
            raise
        except Exception as error:  # RLlib raises ValueError, TypeError, DeprecationWarning ...
            raise UserError(source, where, f"{type(error).__name__}: {error}") from None
    return config


def parse_experiment(name: str, spec: Any, source: str, *, config_overrides: Mapping | None = None,
                     stop: Mapping | None = None) -> Experiment:
    """Turns one ``{run, env, stop, config}`` entry into an :class:`Experiment`.

    Args:
        name: The experiment's name (its key in the file).
        spec: The entry.
        source: The file, for error messages.
        config_overrides: Deep-merged into ``config`` (``--config``).
        stop: Replaces ``stop`` (``--stop``).

    Raises:
        UserError: For anything the file gets wrong, naming the key.
    """
    if not isinstance(spec, Mapping):
        raise UserError(source, name, "must be a mapping with run, env, stop and config; "
                        f"got {type(spec).__name__}")
    for key in spec:
        if key not in EXPERIMENT_KEYS:
            hint = closest(str(key), EXPERIMENT_KEYS)
            raise UserError(source, f"{name}.{key}", f"unknown experiment key{hint} "
                            f"(known: {', '.join(EXPERIMENT_KEYS)})")
    config = algorithm_config(spec.get("run"), source, f"{name}.run")
    settings = spec.get("config") or {}
    if not isinstance(settings, Mapping):
        raise UserError(source, f"{name}.config", f"must be a mapping of settings; got {settings!r}")
    # Ray's public deep_update merges nested mappings and replaces everything else.
    from ray.tune.utils import deep_update

    settings = deep_update(copy.deepcopy(dict(settings)), copy.deepcopy(dict(config_overrides or {})),
                           new_keys_allowed=True)
    # The classic format allowed env at the top or inside config; the top wins.
    in_config = settings.pop("env", None)
    if "env" in spec:
        env = check_env(spec["env"], source, f"{name}.env")
    else:
        env = check_env(in_config, source, f"{name}.config.env")
    env_config = settings.pop("env_config", None) or {}
    options = settings.pop(SEPS_KEY, None)
    seps = None if options is None else seps_options(options, source, f"{name}.config.{SEPS_KEY}")
    apply_settings(config, settings, source, f"{name}.config")
    config.environment(env, env_config=dict(env_config))
    stop = dict(spec.get("stop") or {}) if stop is None else dict(stop)
    freq = spec.get("checkpoint_freq", 0)
    if not isinstance(freq, int) or isinstance(freq, bool) or freq < 0:
        raise UserError(source, f"{name}.checkpoint_freq", f"must be an integer >= 0; got {freq!r}")
    at_end = spec.get("checkpoint_at_end", True)
    if not isinstance(at_end, bool):
        raise UserError(source, f"{name}.checkpoint_at_end", f"must be true or false; got {at_end!r}")
    try:
        config.validate()
    except Exception as error:  # noqa: BLE001  (RLlib's own checks of the settings)
        raise UserError(source, f"{name}.config", f"{type(error).__name__}: {error}") from None
    return Experiment(name=str(name), source=source, config=config, seps=seps, stop=stop,
                      checkpoint_freq=freq, checkpoint_at_end=at_end)


def load_experiments(path: str | Path, *, config_overrides: Mapping | None = None,
                     stop: Mapping | None = None, stop_source: str | None = None) -> list[Experiment]:
    """Reads and validates every experiment of a classic RLlib YAML file.

    Importing this registers rllib-seps' environments (``bps_1``, ``crware_1``, ``lbf``, ...).

    Args:
        path: The YAML file.
        config_overrides: Deep-merged into every experiment's ``config`` (e.g. ``--config``).
        stop: Replaces every experiment's ``stop`` (e.g. ``--stop``).
        stop_source: Where ``stop`` came from (e.g. "--stop"), named in errors.

    Returns:
        The experiments in file order; nothing is trained and no pretraining runs yet.

    Raises:
        UserError: For invalid YAML or an unknown algorithm, environment, key or SePS option.
    """
    import rllib_seps.envs  # noqa: F401  (registers the paper's environments)

    data = read_yaml(path)
    experiments = [parse_experiment(name, spec, str(path), config_overrides=config_overrides, stop=stop)
                   for name, spec in data.items()]
    for experiment in experiments:
        experiment.stop_source = stop_source if stop is not None else None
    return experiments


def share(experiment: Experiment, default_report_dir: str | Path | None = None):
    """The experiment's config with its sharing strategy applied, and the pretraining result.

    Runs SePS pretraining for ``seps`` and ``adaps`` (on the driver; with ``rollout_tasks`` on
    the cluster), printing the report and writing it into the ``seps:`` block's ``report_dir`` or
    else ``default_report_dir``, as every route does. Plain experiments (no ``seps:``)
    come back unchanged, with None.

    Raises:
        UserError: For an environment that is not multi-agent or options the env rules out.
    """
    if experiment.seps is None:
        return experiment.config, None
    from rllib_seps.rllib.configure import check_algorithm, with_sharing

    name, source = experiment.name, experiment.source
    try:
        check_algorithm(experiment.config)
    except ValueError as error:
        raise UserError(source, f"{name}.run", str(error)) from None
    try:
        return with_sharing(experiment.config, experiment.seps,
                            default_report_dir=default_report_dir)
    except TypeError as error:
        raise UserError(source, f"{name}.env", str(error)) from None
    except ValueError as error:
        raise UserError(source, f"{name}.config.{SEPS_KEY}", str(error)) from None
