"""Agent steps per second of fast execution and of the module path, against the limit.

How to run:
    .venv/bin/python benchmarks/throughput.py              # all sections, BPS with 15, 30 and 200 agents
    .venv/bin/python benchmarks/throughput.py --quick      # fewer rounds and steps: a look, not a figure
    .venv/bin/python benchmarks/throughput.py --sections sampling --envs bps_200

Sections (all in one run, on BPS with 15 (``bps_1``), 30 (``bps_2``) and 200 (``bps_200``) agents):

1. ``sampling``: agent steps per CPU second of ``sample()`` on a local EnvRunner (this process,
   one torch thread), for every strategy on both paths (``modules``: RLlib's
   ``MultiAgentEnvRunner`` with one RLModule per module of the plan; ``fast``: the fast EnvRunner
   with one grouped module), and of **the limit**: the environment's own array step plus one
   batched torch forward pass (an MLP of the same widths) and one action sample for all agents,
   nothing else; with ``nops``, also nops's own limit, where every agent has its own network's
   weights (one batched matrix product per layer). Ratios: fast / limit, modules / limit,
   fast / modules.
2. ``iterations``: agent steps per CPU second of whole PPO iterations (sampling, learner
   connectors, updates, weight sync; ``num_env_runners=0``, so all in this process, one torch
   thread), ``--agent-steps`` per iteration, every strategy on both paths; ratio fast / modules.
3. ``tuned``: wall-clock time of whole iterations of the tuned BPS(1) configs
   (``tuned_configs/bps_1-{fups,seps}-ppo.yaml`` as they are: one remote EnvRunner, 2000 env
   steps per iteration) on both paths, and on the 200-agent BPS with the same settings, fast
   execution, ``nops`` against ``fups``.

Every strategy uses the same MLP (``--hiddens``, default RLlib's [256, 256] for sections 1-2, as
the issue's figures; the tuned configs' own [64, 64] in section 3). seps and adaps take the
environment's colours as clusters (no pretraining: this measures speed, not clustering). Measures
alternate: each round runs every contender once, so the drifts of a shared machine hit all alike;
a figure is the median over rounds. Sampling calls are ``--fragment`` env steps long on both paths
(RLlib's MultiAgentEnvRunner pays per step for every episode finished in the current call, so long
calls would hurt the module path beyond its typical cost).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from typing import Any

import numpy as np
import torch

ENVS = {"bps_1": 15, "bps_2": 30, "bps_200": 200}
STRATEGIES = ("fups", "fups_id", "seps", "adaps", "nops")
EXECUTIONS = ("fast", "modules")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", default=["sampling", "iterations", "tuned"],
                        choices=["sampling", "iterations", "tuned"])
    parser.add_argument("--envs", nargs="+", default=list(ENVS), choices=list(ENVS))
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--hiddens", type=int, nargs="+", default=[256, 256], help="fcnet_hiddens (sections 1-2)")
    parser.add_argument("--num-envs", type=int, default=1, help="env copies per EnvRunner (and in the limit)")
    parser.add_argument("--fragment", type=int, default=200, help="env steps per sample() call")
    parser.add_argument("--sample-steps", type=int, default=20000, help="agent steps per sampling measure")
    parser.add_argument("--agent-steps", type=int, default=20000, help="agent steps per iteration (section 2)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (after one warm-up)")
    parser.add_argument("--quick", action="store_true", help="1 round, 5000 agent steps per measure")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.sample_steps, args.agent_steps = 1, 5000, 5000
    return args


def base_config(env: str, hiddens: list[int], num_envs: int, fragment: int) -> Any:
    from ray.rllib.algorithms.ppo import PPOConfig

    return (PPOConfig().environment(env).debugging(seed=0)
            .env_runners(num_env_runners=0, num_envs_per_env_runner=num_envs, rollout_fragment_length=fragment)
            .rl_module(model_config={"fcnet_hiddens": list(hiddens)}))


def shared_configs(config: Any, strategy: str) -> dict[str, Any]:
    """The config of ``strategy`` on both paths (the environment's colours as clusters)."""
    from rllib_seps.rllib.configure import apply_plan, env_creator_of, env_spaces
    from rllib_seps.sharing.adaps import adaps_model_config
    from rllib_seps.sharing.plan import build_plan

    env = env_creator_of(config)(dict(config.env_config))
    colours = [env.agent_types[a] for a in sorted(env.possible_agents)]
    obs, act = env_spaces(env_creator_of(config), config.env_config)
    plan = build_plan(strategy, obs, act, labels=colours if strategy in ("seps", "adaps") else None)
    model = adaps_model_config() if strategy == "adaps" else None
    return {execution: apply_plan(config, plan, model, execution=execution) for execution in EXECUTIONS}


def median_rate(steps: float, seconds: list[float]) -> float:
    return statistics.median(steps / s for s in seconds)


# --- 1. Sampling -------------------------------------------------------------------------------

class Limit:
    """The environment's array step and one batched forward pass and action sample for all agents
    of ``num_envs`` copies: what sampling costs without any bookkeeping. ``per_agent``: every
    agent has its own network's weights (nops), applied in one batched matrix product per layer."""

    def __init__(self, env: str, hiddens: list[int], num_envs: int, per_agent: bool = False) -> None:
        from rllib_seps.envs import ENVIRONMENTS

        self.envs = [ENVIRONMENTS[env]() for _ in range(num_envs)]
        self.obs = np.concatenate([e.reset_arrays(seed=i) for i, e in enumerate(self.envs)])
        self.n = len(self.envs[0].possible_agents)
        sizes = [self.obs.shape[1], *hiddens, 5]
        copies = len(self.obs) if per_agent else 1
        self.weights = [(torch.randn(copies, i, o) / i**0.5, torch.zeros(copies, 1, o))
                        for i, o in zip(sizes[:-1], sizes[1:])]

    def logits(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.unsqueeze(1) if len(self.weights[0][0]) > 1 else obs.unsqueeze(0)
        for k, (w, b) in enumerate(self.weights):
            x = torch.baddbmm(b, x, w)
            x = torch.tanh(x) if k < len(self.weights) - 1 else x
        return x.reshape(len(obs), -1)

    def sample(self, env_steps: int) -> None:
        for _ in range(env_steps):
            with torch.inference_mode():  # Gumbel-max: the cheapest exact categorical sample
                logits = self.logits(torch.from_numpy(self.obs))
                actions = (logits - torch.log(-torch.log(torch.rand_like(logits)))).argmax(dim=-1).numpy()
            for i, env in enumerate(self.envs):
                rows = slice(i * self.n, (i + 1) * self.n)
                obs, _, terminated, truncated = env.step_arrays(actions[rows])
                self.obs[rows] = env.reset_arrays() if terminated or truncated else obs


def runner_of(config: Any) -> Any:
    from ray.rllib.env.multi_agent_env_runner import MultiAgentEnvRunner

    from rllib_seps.rllib.fast.execution import uses_fast_execution
    from rllib_seps.rllib.fast.env_runner import FastEnvRunner

    return (FastEnvRunner if uses_fast_execution(config) else MultiAgentEnvRunner)(config=config, worker_index=0)


def measure_sampling(env: str, args: argparse.Namespace) -> dict[str, float]:
    """Agent steps per CPU second: the limit and every (strategy, path)."""
    n = ENVS[env]
    base = base_config(env, args.hiddens, args.num_envs, args.fragment)
    contenders: dict[str, Any] = {"limit": Limit(env, args.hiddens, args.num_envs)}
    if "nops" in args.strategies:
        contenders["limit per agent"] = Limit(env, args.hiddens, args.num_envs, per_agent=True)
    for strategy in args.strategies:
        for execution, config in shared_configs(base, strategy).items():
            contenders[f"{strategy}/{execution}"] = runner_of(config)
    calls = max(1, round(args.sample_steps / (n * args.fragment * args.num_envs)))
    steps = calls * args.fragment * args.num_envs * n

    def run(name: str, contender: Any) -> float:
        start = time.process_time()
        for _ in range(calls):
            if name.startswith("limit"):
                contender.sample(args.fragment)
            else:
                contender.sample(num_timesteps=args.fragment * args.num_envs)
        return time.process_time() - start

    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for name, contender in contenders.items():
        run(name, contender)  # warm-up
    for round_ in range(args.rounds):
        names = list(contenders)
        names = names[round_ % len(names):] + names[:round_ % len(names)]
        for name in names:
            seconds[name].append(run(name, contenders[name]))
        print(f"  {env} sampling round {round_ + 1}/{args.rounds} done", flush=True)
    for name, contender in contenders.items():
        if not name.startswith("limit"):
            contender.stop()
    return {name: median_rate(steps, s) for name, s in seconds.items()}


def print_sampling(env: str, rates: dict[str, float], args: argparse.Namespace) -> None:
    limit = rates["limit"]
    print(f"\n{env} ({ENVS[env]} agents), sampling: agent steps per CPU second, one torch thread, fcnet_hiddens "
          f"{args.hiddens}, {args.num_envs} env cop{'y' if args.num_envs == 1 else 'ies'}, "
          f"sample() calls of {args.fragment} env steps")
    print(f"  limit (array env step + one batched forward and sample): {limit:,.0f}")
    print(f"  {'strategy':9s} {'fast':>10s} {'modules':>10s} {'fast/limit':>11s} {'modules/limit':>14s} "
          f"{'fast/modules':>13s}")
    for strategy in args.strategies:
        fast, modules = rates[f"{strategy}/fast"], rates[f"{strategy}/modules"]
        print(f"  {strategy:9s} {fast:10,.0f} {modules:10,.0f} {fast / limit:11.2f} {modules / limit:14.3f} "
              f"{fast / modules:12.1f}x")
    if "limit per agent" in rates:
        own = rates["limit per agent"]
        print(f"  limit with one network per agent (nops's own): {own:,.0f}; nops fast / its own limit: "
              f"{rates['nops/fast'] / own:.2f}")


# --- 2. Whole iterations -----------------------------------------------------------------------

def measure_iterations(env: str, args: argparse.Namespace) -> dict[str, float]:
    """Agent steps per CPU second of whole PPO iterations, per (strategy, path)."""
    n = ENVS[env]
    steps = max(1, round(args.agent_steps / n))
    fragment = min(args.fragment, steps)
    batch = fragment * max(1, round(steps / fragment))  # whole sample() calls
    base = base_config(env, args.hiddens, args.num_envs, fragment).training(
        train_batch_size=batch, minibatch_size=min(500, batch), num_epochs=5)
    rates = {}
    for strategy in args.strategies:  # two algorithms at a time: 200-module learners are large
        seconds = time_alternating(shared_configs(base, strategy), args.rounds, time.process_time)
        for execution, s in seconds.items():
            rates[f"{strategy}/{execution}"] = median_rate(batch * n, s)
        print(f"  {env} iterations of {strategy} done", flush=True)
    rates["batch"] = batch
    return rates


def print_iterations(env: str, rates: dict[str, float], args: argparse.Namespace) -> None:
    print(f"\n{env} ({ENVS[env]} agents), whole PPO iterations of {rates['batch']} env steps "
          f"({rates['batch'] * ENVS[env]} agent steps; minibatches of min(500, batch) rows per module, "
          f"5 epochs): agent steps per CPU second, one torch thread, fcnet_hiddens {args.hiddens}")
    print(f"  {'strategy':9s} {'fast':>10s} {'modules':>10s} {'fast/modules':>13s} {'vs fups: fast':>14s} "
          f"{'modules':>8s}")
    for strategy in args.strategies:
        fast, modules = rates[f"{strategy}/fast"], rates[f"{strategy}/modules"]
        vs = [f"{rates['fups/' + e] / rates[strategy + '/' + e]:.2f}x" if "fups/" + e in rates else "-"
              for e in EXECUTIONS]
        print(f"  {strategy:9s} {fast:10,.0f} {modules:10,.0f} {fast / modules:12.1f}x {vs[0]:>14s} {vs[1]:>8s}")
    print("  (vs fups: the strategy's iteration time over fups's on the same path)")


# --- 3. Tuned configs --------------------------------------------------------------------------

def tuned_config(strategy: str, execution: str, env: str = "bps_1") -> Any:
    from rllib_seps.cli.experiment_file import load_experiments
    from rllib_seps.rllib.configure import apply_plan, env_creator_of, env_spaces
    from rllib_seps.sharing.plan import build_plan

    (experiment,) = load_experiments(f"tuned_configs/bps_1-{strategy}-ppo.yaml")
    config = experiment.config.environment(env)
    creator = env_creator_of(config)
    probe = creator(dict(config.env_config))
    colours = [probe.agent_types[a] for a in sorted(probe.possible_agents)]
    obs, act = env_spaces(creator, config.env_config)
    plan = build_plan(strategy, obs, act, labels=colours if strategy == "seps" else None)
    return apply_plan(config, plan, experiment.seps.module_kwargs, execution=execution)


def time_alternating(configs: dict[str, Any], rounds: int, clock: Any = time.perf_counter) -> dict[str, list[float]]:
    """Seconds (by ``clock``) of each timed iteration of each config: built together, one warm-up
    iteration each, then rounds that alternate their order."""
    algos = {name: config.build_algo() for name, config in configs.items()}
    seconds: dict[str, list[float]] = {name: [] for name in algos}
    try:
        for algo in algos.values():
            algo.train()  # warm-up
        names = list(algos)
        for round_ in range(rounds):
            for name in (names if round_ % 2 == 0 else names[::-1]):
                start = clock()
                algos[name].train()
                seconds[name].append(clock() - start)
    finally:
        for algo in algos.values():
            algo.stop()
    return seconds


def measure_tuned(args: argparse.Namespace) -> dict[str, float]:
    """Median wall seconds per iteration of the tuned configs (see the module docstring)."""
    seconds = {}
    for strategy in ("fups", "seps"):
        seconds.update(time_alternating({f"{strategy}/{e}": tuned_config(strategy, e) for e in EXECUTIONS},
                                        args.rounds))
        print(f"  tuned BPS(1) {strategy} done", flush=True)
    seconds.update(time_alternating({f"bps_200 {s}/fast": tuned_config(s, "fast", "bps_200")
                                     for s in ("fups", "nops")}, args.rounds))
    return {name: statistics.median(s) for name, s in seconds.items()}


def print_tuned(times: dict[str, float]) -> None:
    print("\nTuned BPS(1) configs as they are (PPO, 2000 env steps per iteration, one remote EnvRunner, "
          "fcnet_hiddens [64, 64]): wall seconds per iteration")
    for strategy in ("fups", "seps"):
        fast, modules = times[f"{strategy}/fast"], times[f"{strategy}/modules"]
        print(f"  {strategy:5s} fast {fast:6.2f} s, modules {modules:6.2f} s: fast is {modules / fast:.1f}x faster")
    fups, nops = times["bps_200 fups/fast"], times["bps_200 nops/fast"]
    print(f"  200-agent BPS, same settings, fast execution: fups {fups:.2f} s, nops {nops:.2f} s "
          f"(nops / fups = {nops / fups:.2f})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import ray

    import rllib_seps.envs  # noqa: F401  (registers the environments)

    torch.set_num_threads(1)
    start = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        sampling = {env: measure_sampling(env, args) for env in args.envs} if "sampling" in args.sections else {}
        iterations = ({env: measure_iterations(env, args) for env in args.envs}
                      if "iterations" in args.sections else {})
        tuned = measure_tuned(args) if "tuned" in args.sections else {}
    finally:
        ray.shutdown()
    for env, rates in sampling.items():
        print_sampling(env, rates, args)
    for env, rates in iterations.items():
        print_iterations(env, rates, args)
    if tuned:
        print_tuned(tuned)
    print(f"\ntotal {time.perf_counter() - start:.0f} s; reproduce: .venv/bin/python benchmarks/throughput.py "
          + shlex.join(argv if argv is not None else sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
