"""The private Ray accesses of rllib_seps.rllib.internals: these fail loudly when Ray changes them."""

from __future__ import annotations

import pytest
import ray
from ray.tune.registry import register_env

from rllib_seps.rllib.internals import (
    call_after_every_ray_init,
    checkpoint_config,
    rebuild_algorithm,
    registered_env_creator,
    tune_trial_dir,
)


def test_registered_env_creator_finds_what_register_env_registered():
    def creator(config):
        return config

    register_env("seps_internals_probe", creator)
    assert registered_env_creator("seps_internals_probe")({"x": 1}) == {"x": 1}
    assert registered_env_creator("seps_internals_no_such_env") is None


def test_hooks_run_after_every_ray_init_and_keep_registrations_alive():
    calls = []
    call_after_every_ray_init(lambda: calls.append(1))
    import rllib_seps.envs  # noqa: F401  (registers after every init through the same hook)

    for _ in range(2):  # Ray forgets registrations between sessions; the hook brings them back
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
        try:
            assert registered_env_creator("bps_1") is not None
        finally:
            ray.shutdown()
    assert len(calls) == 2


def test_rebuild_algorithm_builds_every_part_again_from_the_new_config(ray_session):
    from ray.rllib.algorithms.ppo import PPOConfig

    from rllib_seps import with_sharing
    from rllib_seps.rllib.modules import SharedActorCriticModule
    from tests.conftest import TwoTypeEnv, per_agent_modules

    config = (PPOConfig().environment(TwoTypeEnv).env_runners(num_env_runners=0)
              .rl_module(model_config={"fcnet_hiddens": [8]}))
    algo = per_agent_modules(config, TwoTypeEnv().possible_agents).build_algo()
    try:
        old_runner = algo.env_runner
        shared, _ = with_sharing(config, {"strategy": "fups_id"})
        rebuild_algorithm(algo, shared)
        assert algo.config is shared
        assert algo.env_runner is not old_runner and set(algo.env_runner.module.keys()) == {"shared"}
        assert isinstance(algo.get_module("shared"), SharedActorCriticModule)  # the learner's
        assert algo.env_runner.config.policy_mapping_fn("scout_0") == "shared"
        # The EnvRunner's connectors are the new config's: it samples the padded module.
        assert algo.env_runner.sample(num_timesteps=8, random_actions=False)
    finally:
        algo.stop()


def test_trainables_keep_tunes_storage_context_where_tune_trial_dir_reads_it():
    import inspect

    from ray.train._internal.storage import StorageContext
    from ray.tune.trainable import Trainable

    assert "self._storage = storage" in inspect.getsource(Trainable.__init__)
    assert isinstance(StorageContext.trial_fs_path, property)
    assert "self.storage_filesystem" in inspect.getsource(StorageContext.__init__)
    # Outside Tune there is no trial directory (the Tune route: tests/test_callback.py).
    assert tune_trial_dir(object()) is None


def test_checkpoint_config_reads_the_class_and_config_a_checkpoint_was_saved_with(ray_session, tmp_path):
    from ray.rllib.algorithms.ppo import PPO, PPOConfig

    config = (PPOConfig().environment("CartPole-v1").env_runners(num_env_runners=0)
              .training(lr=0.0123, train_batch_size=64, minibatch_size=32))
    algo = config.build_algo()
    try:
        path = algo.save_to_path(str(tmp_path / "checkpoint"))
    finally:
        algo.stop()
    algo_class, saved = checkpoint_config(path)
    assert algo_class is PPO and isinstance(saved, PPOConfig)
    assert (saved.env, saved.lr, saved.train_batch_size) == ("CartPole-v1", 0.0123, 64)
    with pytest.raises(ValueError, match="is not an RLlib checkpoint: it has no class_and_ctor_args.pkl"):
        checkpoint_config(str(tmp_path))
