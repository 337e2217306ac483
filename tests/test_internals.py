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
        shared, _ = with_sharing(config, {"strategy": "fups_id", "execution": "modules"})
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
def test_custom_connectors_names_what_the_user_set():
    from ray.rllib.algorithms.ppo import PPOConfig

    from rllib_seps.rllib.internals import custom_connectors

    assert custom_connectors(PPOConfig()) == []
    config = PPOConfig().env_runners(env_to_module_connector=lambda env, spaces, device: [])
    assert custom_connectors(config.training(learner_connector=lambda obs, act: [])) == [
        "env_to_module_connector", "learner_connector"]


def _ppo_learner(learner_class):
    import gymnasium as gym
    import numpy as np
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core import DEFAULT_MODULE_ID

    spaces = {DEFAULT_MODULE_ID: (gym.spaces.Box(-1, 1, (3,), np.float32), gym.spaces.Discrete(2))}
    config = PPOConfig().learners(learner_class=learner_class).rl_module(model_config={"fcnet_hiddens": [4]})
    return config.build_learner(spaces=spaces)


def test_learner_connector_pieces_can_be_replaced_by_name():
    import pytest
    from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
    from ray.rllib.connectors.learner import AddOneTsToEpisodesAndTruncate

    from rllib_seps.rllib.internals import replace_learner_connector_piece

    learner = _ppo_learner(PPOTorchLearner)
    names = [type(p).__name__ for p in learner._learner_connector.connectors]
    replace_learner_connector_piece(learner, "GeneralAdvantageEstimation", AddOneTsToEpisodesAndTruncate())
    assert [type(p).__name__ for p in learner._learner_connector.connectors] == [
        "AddOneTsToEpisodesAndTruncate" if n == "GeneralAdvantageEstimation" else n for n in names]
    with pytest.raises(ValueError, match="no piece 'NoSuchPiece'"):
        replace_learner_connector_piece(learner, "NoSuchPiece", AddOneTsToEpisodesAndTruncate())


def test_minibatch_iterator_hook_gets_the_train_batch_and_settings():
    import numpy as np
    from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.core.columns import Columns
    from ray.rllib.evaluation.postprocessing import Postprocessing
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
    from ray.rllib.utils.minibatch_utils import MiniBatchCyclicIterator

    from rllib_seps.rllib.internals import MinibatchIteratorHook

    class Probe(MinibatchIteratorHook, PPOTorchLearner):
        def minibatches(self, batch, **settings):
            self.seen = (len(batch.policy_batches[DEFAULT_MODULE_ID]), settings)
            return MiniBatchCyclicIterator(batch, num_epochs=settings["num_epochs"],
                                           minibatch_size=settings["minibatch_size"])

    learner = _ppo_learner(Probe)
    n = 8
    batch = {Columns.OBS: np.zeros((n, 3), np.float32), Columns.ACTIONS: np.zeros(n, np.int64),
             Columns.ACTION_LOGP: np.zeros(n, np.float32), Columns.ACTION_DIST_INPUTS: np.zeros((n, 2), np.float32),
             Postprocessing.ADVANTAGES: np.ones(n, np.float32), Postprocessing.VALUE_TARGETS: np.ones(n, np.float32)}
    learner.update(batch=MultiAgentBatch({DEFAULT_MODULE_ID: SampleBatch(batch)}, n), minibatch_size=4,
                   num_epochs=2, shuffle_batch_per_epoch=True)
    assert learner.seen == (n, {"num_epochs": 2, "minibatch_size": 4, "shuffle": True, "num_total_minibatches": 0})
