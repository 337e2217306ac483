"""The private Ray accesses of rllib_seps.rllib.internals: these fail loudly when Ray changes them."""

from __future__ import annotations

import ray
from ray.tune.registry import register_env

from rllib_seps.rllib.internals import call_after_every_ray_init, registered_env_creator


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
