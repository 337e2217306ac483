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
def custom_connectors(config: Any) -> list[str]:
    """The connector pipelines of ``config`` that the user set (env-to-module, module-to-env,
    learner), by name.

    Why private: ``AlgorithmConfig`` stores the user's connector factories in
    ``_env_to_module_connector``, ``_module_to_env_connector`` and ``_learner_connector`` and offers
    only builders that call them (with an env or spaces); fast execution and the padding
    connectors must know, before anything is built, whether a user's connector would be skipped
    by the fast EnvRunner or replaced.
    """
    names = ("env_to_module_connector", "module_to_env_connector", "learner_connector")
    return [name for name in names if getattr(config, f"_{name}") is not None]


def replace_learner_connector_piece(learner: Any, name: str, piece: Any) -> None:
    """Puts ``piece`` in the place of the piece called ``name`` in a Learner's connector pipeline.

    Why private: a Learner subclass adds its pieces to ``Learner._learner_connector`` in
    ``build()`` (as RLlib's own PPOLearner does); there is no public handle on the pipeline.

    Raises:
        ValueError: If the pipeline has no piece called ``name``.
    """
    pipeline = learner._learner_connector
    if pipeline is None:  # aggregator actors run the connectors, not the Learner
        raise ValueError(f"{type(learner).__name__} has no learner connector pipeline; fast execution needs "
                         "one. Fix: keep num_aggregator_actors_per_learner=0.")
    if name not in [type(p).__name__ for p in pipeline.connectors]:
        raise ValueError(f"Learner connector pipeline has no piece {name!r}: {pipeline}.")
    pipeline.insert_after(name, piece)
    pipeline.remove(name)


class MinibatchIteratorHook:
    """Learner mixin: its minibatches come from ``self.minibatches(batch, ...)``.

    Why private: ``Learner.update`` picks its minibatch iterator in the private
    ``_create_iterator_if_necessary`` and offers no public hook. A grouped module needs every
    minibatch to hold ``minibatch_size`` rows of every group, as RLlib's own iterator gives every
    module of a MultiRLModule; RLlib's iterator cuts the train batch without regard to groups. The
    train batch is taken from RLlib's iterator (``MiniBatchCyclicIterator._batch``), so that
    RLlib keeps building it (learner connector, module filter, slicing flags).
    """

    def minibatches(self, batch: Any, *, num_epochs: int, minibatch_size: int | None, shuffle: bool,
                    num_total_minibatches: int) -> Any:
        raise NotImplementedError

    def _create_iterator_if_necessary(self, **kwargs: Any) -> Any:
        from ray.rllib.utils.minibatch_utils import MiniBatchCyclicIterator

        iterator = super()._create_iterator_if_necessary(**kwargs)
        if not isinstance(iterator, MiniBatchCyclicIterator):
            return iterator  # the whole batch once (every group whole), Ray Data, or nothing
        return self.minibatches(
            iterator._batch, num_epochs=kwargs.get("num_epochs", 1), minibatch_size=kwargs.get("minibatch_size"),
            shuffle=bool(kwargs.get("shuffle_batch_per_epoch")) and kwargs.get("num_epochs", 1) > 1,
            num_total_minibatches=kwargs.get("num_total_minibatches", 0))
