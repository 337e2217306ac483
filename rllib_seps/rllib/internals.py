"""The private RLlib and Ray accesses this package cannot avoid, in one place.

Each one says why no public API does the job; ``tests/test_internals.py`` fails loudly when a Ray
release changes any of them.
"""

from __future__ import annotations

from typing import Any, Callable


def registered_env_creator(name: str) -> Callable[[dict], Any] | None:
    """The creator registered under ``name`` with ``ray.tune.register_env``, or None.

    Why private: Ray offers ``register_env`` but no public lookup; RLlib's EnvRunners read the
    same registry (``ray.tune.registry._global_registry``) to build a named env, and SePS must
    build the very env they will build.
    """
    from ray.tune.registry import ENV_CREATOR, _global_registry

    if _global_registry.contains(ENV_CREATOR, name):
        return _global_registry.get(ENV_CREATOR, name)
    return None


def call_after_every_ray_init(fn: Callable[[], None]) -> None:
    """Calls ``fn`` after every ``ray.init()`` of this process.

    Why private: Ray forgets ``register_env`` registrations when its session ends, and a process
    that calls ``ray.init()`` again (tests, notebooks, the CLI after a run) would no longer find
    ``env: bps_1``. Ray's own registry flushes through this hook list
    (``ray._private.worker._post_init_hooks``); there is no public one.
    """
    import ray._private.worker

    hooks = ray._private.worker._post_init_hooks
    if fn not in hooks:
        hooks.append(fn)


def rebuild_algorithm(algorithm: Any, config: Any) -> None:
    """Builds a running algorithm's parts again from ``config``, as ``config.build_algo()`` would.

    Stops its EnvRunners, learners and helper actors (``Algorithm.cleanup``), sets the validated,
    frozen ``config`` and runs the algorithm's own ``setup`` again, which builds every part (also
    algorithm-specific ones, such as IMPALA's aggregator actors) from it. EnvRunner actors are
    created with ``config``, so Ray restarts them with it.

    Why not public: RLlib has no API to re-configure a built algorithm. ``add_module`` /
    ``remove_module`` change modules and the mapping but not the EnvRunners' connectors, and a
    restarted EnvRunner comes back with the config it was created with. ``setup`` (public,
    meant to be called by ``Trainable.__init__``) reads ``algorithm.config``, not its argument,
    when given an ``AlgorithmConfig``; ``cleanup`` is what ``stop()`` runs.
    """
    config.validate()
    config.freeze()
    algorithm.cleanup()
    algorithm.config = config
    algorithm.setup(config)


def tune_trial_dir(algorithm: Any) -> str | None:
    """The trial's directory in Tune's storage (beside ``params.json`` and ``result.json``), when
    the algorithm runs as a Tune trial on a local storage path; else None.

    Why private: a Trainable keeps its ``StorageContext`` in ``_storage`` and exposes only
    ``logdir``, the trial's working directory, which Tune copies to the storage path only with
    ``SyncConfig(sync_artifacts=True)``: a report written there would be lost with the Ray session.
    """
    storage = getattr(algorithm, "_storage", None)
    if storage is None or storage.storage_filesystem.type_name != "local":
        return None
    return storage.trial_fs_path


def checkpoint_config(path: str) -> tuple[type, Any]:
    """The algorithm class and config an RLlib algorithm checkpoint was saved with.

    Why private: RLlib keeps them only in the pickled constructor arguments of the checkpoint
    (``class_and_ctor_args.pkl``, read by ``Algorithm.from_checkpoint``) and offers no public
    reader; building the algorithm as saved, only to read its config, would start every remote
    EnvRunner and learner of the training run. Evaluation changes where it runs, not what.

    Raises:
        ValueError: If ``path`` holds no algorithm checkpoint.
    """
    from pathlib import Path

    import ray.cloudpickle as pickle
    from ray.rllib.algorithms.algorithm import Algorithm
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

    file = Path(path) / Algorithm.CLASS_AND_CTOR_ARGS_FILE_NAME
    try:
        with open(file, "rb") as f:
            ctor = pickle.load(f)
    except FileNotFoundError:
        raise ValueError(f"{path} is not an RLlib checkpoint: it has no {file.name}.") from None
    algo_class = ctor["class"]
    if not (isinstance(algo_class, type) and issubclass(algo_class, Algorithm)):
        raise ValueError(f"{path} is a checkpoint of {algo_class}, not of an RLlib algorithm.")
    # Algorithm.get_ctor_args_and_kwargs() saves ((config.get_state(),), {}).
    return algo_class, AlgorithmConfig.from_state(ctor["ctor_args_and_kwargs"][0][0])
