"""Fast execution: the grouped module, its learner (each group trained as its own module), the
array adapters and the fast EnvRunner."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.env.multi_agent_env import MultiAgentEnv
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

from rllib_seps.rllib.fast.execution import fast_module_spec
from rllib_seps.rllib.fast.learner import FastPPOTorchLearner, GroupMinibatches, standardize_per_group
from rllib_seps.rllib.modules import LAYOUT_KEY, GroupedLinear, RowGroups, SharedActorCriticModule
from rllib_seps.sharing.groups import grouped_plan
from rllib_seps.sharing.plan import build_plan

Box, Discrete = gym.spaces.Box, gym.spaces.Discrete

# Four agents of two observation sizes and two action sizes in three clusters.
OBS = {"a": Box(-1, 1, (4,), np.float32), "b": Box(-1, 1, (4,), np.float32),
       "c": Box(-1, 1, (7,), np.float32), "d": Box(-1, 1, (4,), np.float32)}
ACT = {"a": Discrete(3), "b": Discrete(3), "c": Discrete(6), "d": Discrete(3)}
LABELS = [0, 0, 1, 2]
HIDDENS = {"fcnet_hiddens": [8, 8]}


@pytest.mark.parametrize("counts", [[3, 3, 3], [1, 4, 0, 2]], ids=["balanced", "uneven"])
def test_row_groups_lay_rows_out_by_group_and_back(counts):
    group = torch.as_tensor(np.random.default_rng(0).permutation(np.repeat(np.arange(len(counts)), counts)))
    x = torch.arange(len(group) * 2.0).reshape(len(group), 2)
    groups = RowGroups(group, len(counts))
    laid_out = groups.to_groups(x)
    assert laid_out.shape == (len(counts), max(counts), 2)
    for g in range(len(counts)):  # each group's rows, in batch order, then zero padding
        own = x[group == g]
        assert torch.equal(laid_out[g, :len(own)], own) and not laid_out[g, len(own):].any()
    assert torch.equal(groups.from_groups(laid_out), x)
    ordered = RowGroups(torch.sort(group).values, len(counts))
    assert (ordered.index is None) == (len(set(counts)) == 1)  # sorted equal groups: a free reshape


def test_grouped_linear_is_one_linear_layer_per_group():
    layer = GroupedLinear(3, 5, 2)
    x = torch.randn(3, 4, 5)
    expected = torch.stack([x[g] @ layer.weight[g] + layer.bias[g] for g in range(3)])
    assert torch.allclose(layer(x), expected)
    assert layer.weight.abs().max() <= 1 / np.sqrt(5)  # nn.Linear's initialisation bound


def _learner(spec: RLModuleSpec, learner_class: type):
    config = (PPOConfig().training(lr=0.01, entropy_coeff=0.01).learners(learner_class=learner_class)
              .rl_module(rl_module_spec=spec))
    learner = config.build_learner(spaces={DEFAULT_MODULE_ID: (spec.observation_space, spec.action_space)})
    # Adam's step lr * g / (|g| + eps) turns a gradient entry near eps (a sum that nearly cancels)
    # into a step of any size up to lr: two machines' rounding then differ by far more than any
    # tolerance (3.6e-5 on one entry, seen). An eps far above rounding keeps the step smooth in g.
    for group in learner.get_optimizer(DEFAULT_MODULE_ID).param_groups:
        group["eps"] = 1e-3
    return learner


def _train_batch(grouped, agents: list[str], rows_per_agent: int, seed: int = 0) -> dict:
    """A train batch of random rows of the given agents, as the learner connector would make it."""
    rng = np.random.default_rng(seed)
    index = [grouped.agents.index(a) for a in agents for _ in range(rows_per_agent)]
    obs = np.stack([grouped.layout.pack(grouped.observation_spaces[i].sample()[None], grouped.observation_spaces[i],
                                        grouped.stacked_codes([i]))[0] for i in index])
    n = len(index)
    return {Columns.OBS: obs, Columns.ACTIONS: np.array([rng.integers(grouped.action_spaces[i].n) for i in index]),
            Columns.ACTION_LOGP: rng.normal(-1.0, 0.3, n).astype(np.float32),
            Columns.ACTION_DIST_INPUTS: rng.normal(0, 1, (n, grouped.layout.mask_size)).astype(np.float32),
            Postprocessing.ADVANTAGES: rng.normal(0, 1, n).astype(np.float32),
            Postprocessing.VALUE_TARGETS: rng.normal(0, 5, n).astype(np.float32)}


def _update(learner, batch: dict) -> None:
    learner.update(batch=MultiAgentBatch({DEFAULT_MODULE_ID: SampleBatch(batch)}, len(batch[Columns.OBS])),
                   num_epochs=1, minibatch_size=None)


def _group_parameters(module, g: int) -> dict[str, torch.Tensor]:
    """Group g's parameters of a grouped module, shaped as a plain module's."""
    out = {}
    for name, p in module.named_parameters():
        p = p.detach()[g].clone()
        out[name] = p.squeeze(0).T.contiguous() if name.endswith("weight") else p.squeeze(0)
    return out


def _reference(grouped, group_parameters: dict):
    """A learner of one plain module with the grouped module's layout (no group entry) and the
    given group's weights: what training that group as its own module gives."""
    plain = grouped.layout.__class__(grouped.layout.observation_space, grouped.layout.action_space)
    spec = RLModuleSpec(module_class=SharedActorCriticModule, observation_space=plain.space,
                        action_space=plain.action_space, model_config={**HIDDENS, LAYOUT_KEY: plain})
    learner = _learner(spec, PPOTorchLearner)
    learner.module[DEFAULT_MODULE_ID].load_state_dict(group_parameters, strict=False)
    return learner


def _rows_of(batch: dict, rows: np.ndarray) -> dict:
    """The given rows of a train batch, observations without the group entry (the last one)."""
    return {k: (v[rows, :-1] if k == Columns.OBS else v[rows]) for k, v in batch.items()}


def test_a_group_is_trained_by_its_own_rows_only_and_as_its_own_module_would_be():
    grouped = grouped_plan(build_plan("seps", OBS, ACT, labels=LABELS))
    fast = _learner(fast_module_spec(grouped, HIDDENS), FastPPOTorchLearner)
    module = fast.module[DEFAULT_MODULE_ID]
    references = [_reference(grouped, _group_parameters(module, g)) for g in range(3)]

    def assert_group_trained_as_its_module(g: int) -> None:
        own = dict(references[g].module[DEFAULT_MODULE_ID].named_parameters())
        for name, value in _group_parameters(module, g).items():
            torch.testing.assert_close(value, own[name].detach(), rtol=1e-5, atol=1e-6,
                                       msg=lambda m: f"group {g} {name}: {m}")

    # Rows of every group: each group moves as its own module, trained on its own rows alone.
    batch = _train_batch(grouped, ["a", "b", "c", "d"], 5, seed=1)
    group_of_row = grouped.group_of_agent[[grouped.agents.index(a) for a in "abcd" for _ in range(5)]]
    _update(fast, batch)
    for g in range(3):
        _update(references[g], _rows_of(batch, group_of_row == g))
        assert_group_trained_as_its_module(g)

    # Rows of group 1 ("c") alone: the other groups stay exactly as they were (no step on their
    # momentum), group 1 goes on as its own module.
    before = [_group_parameters(module, g) for g in range(3)]
    batch = _train_batch(grouped, ["c"], 6, seed=2)
    _update(fast, batch)
    _update(references[1], _rows_of(batch, np.ones(6, bool)))
    for g in (0, 2):
        for name, value in _group_parameters(module, g).items():
            assert torch.equal(value, before[g][name]), (g, name)
    assert_group_trained_as_its_module(1)


def test_minibatches_hold_the_same_rows_of_every_group_as_modules_would_get():
    group = np.repeat([0, 1, 2], [8, 3, 5])
    batch = MultiAgentBatch({DEFAULT_MODULE_ID: SampleBatch({"x": torch.arange(16)})}, 16)
    seen = {g: [] for g in range(3)}
    minibatches = list(GroupMinibatches(batch, group, num_epochs=2, minibatch_size=4, shuffle=True))
    for minibatch in minibatches:
        rows = minibatch.policy_batches[DEFAULT_MODULE_ID]["x"].numpy()
        assert list(group[rows]) == [0] * 4 + [1] * 4 + [2] * 4  # sorted by group, 4 each
        for g in range(3):
            seen[g] += rows[group[rows] == g].tolist()
    assert len(minibatches) == 4  # until the largest group (8 rows) is covered twice
    assert sorted(seen[0]) == sorted(list(range(8)) * 2)
    assert len(GroupMinibatches(batch, group, num_epochs=2, minibatch_size=4, shuffle=True,
                                num_total_minibatches=7).__iter__().__class__.__name__) > 0


def test_advantages_are_standardised_per_group():
    values = np.array([1.0, 3.0, 10.0, 30.0, 50.0])
    group = np.array([0, 0, 1, 1, 1])
    out = standardize_per_group(values, group, 2)
    for g in range(2):
        own = values[group == g]
        np.testing.assert_allclose(out[group == g], (own - own.mean()) / own.std())


# --- The fast EnvRunner, without Ray -----------------------------------------------------------

def fast_runner(env, strategy: str, labels=None, num_envs: int = 1, **env_config):
    """A local FastEnvRunner of ``strategy`` on ``env`` (RLlib's default MLP, tiny)."""
    from rllib_seps.rllib.configure import apply_plan, env_creator_of, env_spaces
    from rllib_seps.rllib.fast.env_runner import FastEnvRunner

    config = (PPOConfig().environment(env, env_config=env_config)
              .env_runners(num_env_runners=0, num_envs_per_env_runner=num_envs, rollout_fragment_length=7)
              .rl_module(model_config=HIDDENS).debugging(seed=3))
    obs, act = env_spaces(env_creator_of(config), config.env_config)
    config = apply_plan(config, build_plan(strategy, obs, act, labels=labels), execution="fast")
    return FastEnvRunner(config=config, worker_index=0)


def test_fast_env_runner_returns_each_agents_episode_chunks_from_every_copy():
    from rllib_seps.envs.bps import BlindParticleSpread

    runner = fast_runner("bps_1", "seps", labels=[a // 5 for a in range(15)], num_envs=2, max_cycles=10)
    episodes = runner.sample(num_timesteps=50)  # 25 steps of each copy: two whole episodes, one chunk
    assert len(episodes) == 15 * 2 * 3
    assert sorted({len(e) for e in episodes}) == [5, 10]
    done = [e for e in episodes if e.is_done]  # truncated, and terminated as RLlib's MultiAgentEpisode says
    assert len(done) == 15 * 2 * 2 and all(e.is_truncated and e.is_terminated for e in done)
    assert sum(e.env_steps() for e in episodes) == 50 and sum(e.agent_steps() for e in episodes) == 15 * 50
    # Copy 0's first episode starts from the env's own reset with the runner's seed.
    first = BlindParticleSpread((5, 5, 5), max_cycles=10).reset_arrays(seed=runner._seed)
    runner_agents = list(runner.grouped.agents)
    starts = [e.get_observations(0)[:first.shape[1]] for e in episodes if e.t_started == 0][:15]
    np.testing.assert_allclose(starts, first[[int(a[-2:]) for a in runner_agents]], rtol=1e-6)
    metrics = runner.get_metrics()
    assert metrics["num_episodes"] == 4 and metrics["episode_len_mean"] == 10
    assert set(metrics["module_episode_returns_mean"]) == {"cluster_0", "cluster_1", "cluster_2"}
    assert len(metrics["agent_episode_returns_mean"]) == 15
    # The next call goes on with the same episodes: the open chunks continue.
    later = runner.sample(num_timesteps=10)
    assert {e.t_started for e in later} == {5} and {e.id_ for e in later} <= {e.id_ for e in episodes}

    # Whole episodes (as evaluation asks for them), across calls of 7 steps, greedy actions.
    whole = runner.sample(num_episodes=3, explore=False)
    assert {len(e) for e in whole} == {10} and all(e.is_truncated for e in whole)
    assert len({e.env_episode for e in whole}) == 4  # 3 asked; both copies end at the same step
    groups = {e.agent: e.group for e in whole}
    assert [a for a, g in sorted(groups.items()) if g == "cluster_1"] == [f"agent_{i:02d}" for i in range(5, 10)]


class _Agents:
    """A tiny PettingZoo parallel env whose agents come and go (see the tests below).

    Observation ``[step, agent index]``; reward 1 per step; the episode is truncated after 6 steps.
    An agent that does not act at the next step terminates, unless ``pausing`` (turn-based).
    """

    def __init__(self, present, pausing=False):
        self.pausing = pausing
        from gymnasium.spaces import Box as B, Discrete as D

        self.possible_agents = ["a", "b", "c"]
        self.present = present  # step -> agents that act at it
        self.observation_spaces = {a: B(-10, 10, (2,), np.float32) for a in self.possible_agents}
        self.action_spaces = {a: D(2) for a in self.possible_agents}

    def observation_space(self, agent):
        return self.observation_spaces[agent]

    def action_space(self, agent):
        return self.action_spaces[agent]

    def _obs(self, agents):
        return {a: np.array([self.t, self.possible_agents.index(a)], np.float32) for a in agents}

    def reset(self, seed=None, options=None):
        self.t = 0
        self.agents = list(self.present(0))
        return self._obs(self.agents), {a: {} for a in self.agents}

    def step(self, actions):
        assert sorted(actions) == sorted(self.agents), (self.t, actions, self.agents)
        acted = self.agents
        self.t += 1
        nxt = [] if self.t >= 6 else list(self.present(self.t))
        left = [] if self.pausing else [a for a in acted if a not in nxt]
        obs = self._obs(sorted(set(left) | set(nxt)))
        rewards = {a: 1.0 for a in acted}
        terminated = {a: a in left and self.t < 6 for a in obs}
        truncated = {a: self.t >= 6 for a in obs}
        self.agents = nxt
        return obs, rewards, terminated, truncated, {a: {} for a in obs}

    def close(self):
        pass


def _agents_env(present, pausing=False):
    from rllib_seps.envs.adapter import SortedParallelEnv

    class Env(SortedParallelEnv):
        def __init__(self, config=None):
            super().__init__(_Agents(present, pausing))

    return Env


# "a" leaves after 3 steps, "b" stays, "c" joins at step 2.
LEAVING = _agents_env(lambda t: [a for a, ok in (("a", t < 3), ("b", True), ("c", t >= 2)) if ok])


def test_agents_that_join_late_or_leave_early_get_episodes_of_their_own_steps():
    from ray.rllib.env.multi_agent_env_runner import MultiAgentEnvRunner

    from rllib_seps.rllib.configure import apply_plan, env_creator_of, env_spaces

    runner = fast_runner(LEAVING, "nops")
    episodes = {e.agent: e for e in runner.sample(num_timesteps=6)}
    a, b, c = (episodes[x] for x in "abc")
    assert (len(a), a.is_terminated, a.is_truncated) == (3, True, False)
    assert (len(b), b.is_truncated, len(c), c.is_truncated) == (6, True, 4, True)
    np.testing.assert_array_equal(c.get_observations(slice(None))[:, 0], [2, 3, 4, 5, 6])  # own steps + final
    np.testing.assert_array_equal(a.get_rewards(), [1, 1, 1])
    metrics = runner.get_metrics()
    assert metrics["agent_episode_returns_mean"] == {"a": 3.0, "b": 6.0, "c": 4.0}
    assert metrics["episode_return_mean"] == 13.0

    # RLlib's own MultiAgentEnvRunner (the module path) makes the same agent episodes, flags and all.
    config = PPOConfig().environment(LEAVING).env_runners(num_env_runners=0).rl_module(model_config=HIDDENS)
    obs, act = env_spaces(env_creator_of(config), {})
    reference = MultiAgentEnvRunner(config=apply_plan(config, build_plan("nops", obs, act)), worker_index=0)
    (episode,) = reference.sample(num_episodes=1)
    for agent, own in episode.agent_episodes.items():
        fast = episodes[agent]
        assert (len(own), own.is_terminated, own.is_truncated) == (len(fast), fast.is_terminated, fast.is_truncated)
        np.testing.assert_array_equal(own.get_observations(slice(None))[:, 0],
                                      fast.get_observations(slice(None))[:, 0])  # the step numbers


@pytest.mark.parametrize("settings", [{"count_steps_by": "agent_steps"}, {"batch_mode": "complete_episodes"}])
def test_fast_env_runner_samples_as_much_as_rllibs_by_agent_steps_or_whole_episodes(settings):
    """A rollout fragment counts agent steps with ``count_steps_by="agent_steps"``, and is whole
    episodes with ``batch_mode="complete_episodes"``, on both paths (agents join and leave)."""
    from ray.rllib.env.multi_agent_env_runner import MultiAgentEnvRunner

    from rllib_seps.rllib.configure import apply_plan, env_creator_of, env_spaces
    from rllib_seps.rllib.fast.env_runner import FastEnvRunner

    config = (PPOConfig().environment(LEAVING).rl_module(model_config=HIDDENS)
              .env_runners(num_env_runners=0, rollout_fragment_length=7,
                           batch_mode=settings.get("batch_mode", "truncate_episodes"))
              .multi_agent(count_steps_by=settings.get("count_steps_by", "env_steps")))
    plan = build_plan("nops", *env_spaces(env_creator_of(config), {}))
    fast = FastEnvRunner(config=apply_plan(config, plan, execution="fast"), worker_index=0)
    modules = MultiAgentEnvRunner(config=apply_plan(config, plan, execution="modules"), worker_index=0)
    sampled = []  # [env steps, agent steps] of three calls in a row, by each runner
    for _ in range(3):
        fast_steps, module_steps = ([int(sum(e.env_steps() for e in episodes)), sum(e.agent_steps() for e in episodes)]
                                    for episodes in (fast.sample(), modules.sample()))
        assert fast_steps == module_steps
        sampled.append(module_steps)
    # 7 agent steps: "a" and "b" act, then "c" joins, then "a" leaves; or the whole 6-step episode.
    assert sampled == ([[6, 13]] * 3 if "batch_mode" in settings else [[3, 7], [4, 8], [3, 7]])


class RandomLegalMovesEnv(MultiAgentEnv):
    """Three agents whose legal actions (an "action_mask" observation) change at random every step;
    ``illegal`` counts the actions taken that their masks forbade."""

    illegal = 0

    def __init__(self, config=None):
        super().__init__()
        self.possible_agents = self.agents = ["a", "b", "c"]
        space = gym.spaces.Dict({"x": Box(-1, 1, (2,), np.float32), "action_mask": gym.spaces.MultiBinary(4)})
        self.observation_spaces = dict.fromkeys(self.agents, space)
        self.action_spaces = dict.fromkeys(self.agents, Discrete(4))
        self.rng = np.random.default_rng(0)

    def _observe(self):
        self.masks = {a: (self.rng.random(4) < 0.4).astype(np.int8) | np.eye(4, dtype=np.int8)[self.rng.integers(4)]
                      for a in self.agents}
        return {a: {"x": np.zeros(2, np.float32), "action_mask": mask} for a, mask in self.masks.items()}

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return self._observe(), {}

    def step(self, actions):
        RandomLegalMovesEnv.illegal += sum(not self.masks[a][u] for a, u in actions.items())
        self.t += 1
        return self._observe(), dict.fromkeys(actions, 0.0), {"__all__": False}, {"__all__": self.t >= 10}, {}


@pytest.mark.parametrize("strategy, labels", [("fups", None), ("adaps", [0, 1, 1])])
def test_fast_env_runner_acts_only_where_the_envs_action_mask_allows(strategy, labels):
    RandomLegalMovesEnv.illegal = 0
    fast_runner(RandomLegalMovesEnv, strategy, labels=labels).sample(num_timesteps=300)
    assert RandomLegalMovesEnv.illegal == 0


@pytest.mark.parametrize("present, pausing, message", [
    (lambda t: ["a", "b", "c"] if t % 2 == 0 else ["a"], True, "did not act at a step"),  # turn-based
    (lambda t: ["a", "b"] if t != 2 else ["b"], False, "acted again in the episode"),  # "a" comes back
], ids=["turn_based", "comes_back"])
def test_envs_whose_agents_skip_steps_are_refused_by_name(present, pausing, message):
    from rllib_seps.rllib.configure import apply_plan, env_creator_of, env_spaces

    env = _agents_env(present, pausing)
    config = PPOConfig().environment(env).env_runners(num_env_runners=0).rl_module(model_config=HIDDENS)
    obs, act = env_spaces(env_creator_of(config), {})
    plan = build_plan("fups", obs, act)
    with pytest.raises(ValueError, match=f"execution='fast' does not apply here: the environment .*{message}"):
        apply_plan(config, plan, execution="fast")
    assert apply_plan(config, plan, execution="auto").env_runner_cls is None  # the module path


def _bps_plan(strategy: str):
    from rllib_seps.rllib.configure import env_creator_of, env_spaces
    from tests.conftest import quick_ppo_config

    obs, act = env_spaces(env_creator_of(quick_ppo_config("bps_1")), {})
    return build_plan(strategy, obs, act, labels=[a // 5 for a in range(15)])


class _EpisodeCounter(RLlibCallback):
    def on_episode_end(self, **kwargs):
        pass


@pytest.mark.parametrize("change, reason", [
    (lambda c: c, None),
    (lambda c: c.env_runners(env_to_module_connector=lambda *a: []), "custom connectors"),
    (lambda c: c.callbacks(_EpisodeCounter), r"per-episode hooks \(on_episode_end\)"),
    (lambda c: c.rl_module(model_config={"use_lstm": True}), "model_config the grouped module does not honour"),
    (lambda c: c.training(grad_clip=0.5), "grad_clip by 'global_norm' with 3 groups"),
    (lambda c: c.learners(learner_class=FastPPOTorchLearner), "a custom learner class"),
], ids=["applies", "connectors", "episode_callbacks", "lstm", "grad_clip", "learner"])
def test_fast_execution_says_why_it_does_not_apply(change, reason):
    from rllib_seps.rllib.fast.execution import fast_blockers
    from tests.conftest import quick_ppo_config

    reasons = fast_blockers(change(quick_ppo_config("bps_1")), _bps_plan("seps"))
    assert reasons == [] if reason is None else any(re.search(reason, r) for r in reasons), reasons


def test_appo_and_impala_run_fast_with_one_group_only():
    from ray.rllib.algorithms.appo import APPOConfig

    from rllib_seps.rllib.fast.execution import fast_blockers

    config = APPOConfig().environment("bps_1")
    assert fast_blockers(config, _bps_plan("fups")) == []
    assert fast_blockers(config, _bps_plan("seps")) == [
        "APPO with 3 groups (fast execution trains PPO with any number of groups, APPO and IMPALA with one)"]


def test_execution_is_an_option_with_three_values():
    from rllib_seps.options import SePSOptions

    assert SePSOptions.from_dict({"execution": "fast"}).execution == "fast"
    with pytest.raises(ValueError, match="execution='quick' is invalid"):
        SePSOptions(execution="quick")


def test_a_seed_gives_the_grouped_module_the_weights_of_the_module_it_replaces():
    from rllib_seps.rllib.configure import apply_plan
    from tests.conftest import quick_ppo_config

    plan = _bps_plan("fups")  # on the module path: RLlib's default PPO module, "shared"
    shared = plan.modules["shared"]
    weights = {}
    for execution, module_id, spaces in (("fast", DEFAULT_MODULE_ID, None),
                                         ("modules", "shared", (shared.observation_space, shared.action_space))):
        config = apply_plan(quick_ppo_config("bps_1").rl_module(model_config=HIDDENS).debugging(seed=4), plan,
                            execution=execution)
        spaces = spaces or (config.rl_module_spec.observation_space, config.rl_module_spec.action_space)
        learner = config.build_learner(spaces={module_id: spaces})
        weights[execution] = [p.detach() for p in learner.module[module_id].parameters()]
    fast = [p[0] for p in weights["fast"]]  # the one group
    assert sorted(torch.cat([p.flatten() for p in fast]).tolist()) == sorted(
        torch.cat([p.flatten() for p in weights["modules"]]).tolist())
    torch.testing.assert_close(fast[0].T, weights["modules"][0])  # the first layer, in place
