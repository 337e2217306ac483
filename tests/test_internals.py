"""The private Ray accesses of rllib_seps.rllib.internals: these fail loudly when Ray changes them."""

from __future__ import annotations

import pytest
import ray
from ray.tune.registry import register_env

from rllib_seps.rllib.internals import call_after_every_ray_init, checkpoint_config, registered_env_creator


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


def test_checkpoint_config_reads_the_class_and_config_a_checkpoint_was_saved_with(tmp_path):
    from ray.rllib.algorithms.ppo import PPO, PPOConfig

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        config = (PPOConfig().environment("CartPole-v1").env_runners(num_env_runners=0)
                  .training(lr=0.0123, train_batch_size=64, minibatch_size=32))
        algo = config.build_algo()
        try:
            path = algo.save_to_path(str(tmp_path / "checkpoint"))
        finally:
            algo.stop()
    finally:
        ray.shutdown()
    algo_class, saved = checkpoint_config(path)
    assert algo_class is PPO and isinstance(saved, PPOConfig)
    assert (saved.env, saved.lr, saved.train_batch_size) == ("CartPole-v1", 0.0123, 64)
    with pytest.raises(ValueError, match="is not an RLlib checkpoint: it has no class_and_ctor_args.pkl"):
        checkpoint_config(str(tmp_path))
