"""Sampling overhead of the padding connectors + SharedActorCriticModule vs RLlib's default module.

How to run:
    .venv/bin/python benchmarks/overhead.py                 # BPS(1), fups, about 1 minute
    .venv/bin/python benchmarks/overhead.py --fragment 1000  # longer sample() calls (see below)

Both sides sample the same environment (BPS(1): 15 agents, Discrete(5), 50-step episodes) with
one EnvRunner in this process and the same MLP (fcnet_hiddens, tanh):
- "default": plan ``fups``: a plain module, RLlib's default PPO module, no custom connector.
- "padded": plan ``fups`` with ``force_padding=True``: our env-to-module ``PadObservations``, our
  module (one flat vector of observation and action mask, masked logits) and our module-to-env
  ``UnpadActions``.
A repetition is ``--calls`` calls of ``EnvRunner.sample(num_timesteps=--fragment)`` (environment,
connectors, module forward, RLlib's episode bookkeeping). After a warm-up, each round runs one
repetition of each side, in alternating order, so drifts of a shared machine hit both alike.
Throughput is agent steps per second, per wall-clock second and per CPU second of this process
(steadier when other processes share the cores). The ratio is the median over rounds of
padded / default and, as a check, best against best.

Results to expect (2-core machine, fragment 200): the padded side within 15% of the default
(ratio >= 0.85); measured 1.05 (median of pairs), and 0.94 with 1000-step calls
(``--fragment 1000``). Before padded modules took one flat vector, they took a Dict of
observation and mask, and measured 0.94 and 0.81: RLlib 2.60's MultiAgentEnvRunner calls
``to_numpy()`` (and so ``validate()``) on every episode finished in the current ``sample()`` call
at every env step, a cost quadratic in the call's length, and each call costs about twice as much
for Dict observations (the length of a Dict buffer is taken by flattening it). That still hits
any Dict observation (RLlib's own action-masking example included; here only image modules).
Short fragments (``config.env_runners(rollout_fragment_length=200)``) avoid it, and so does
``--no-episodes-to-numpy`` (seen: at fragment 1000 it nearly doubles both throughputs).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from dataclasses import dataclass

import torch
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.env.multi_agent_env_runner import MultiAgentEnvRunner

import rllib_seps.envs  # noqa: F401  (registers the environments)
from rllib_seps.rllib.configure import apply_plan, env_creator_of, env_spaces
from rllib_seps.sharing.plan import build_plan


@dataclass
class Args:
    """Command-line options."""

    env: str = "bps_1"
    """Registered multi-agent environment."""
    fragment: int = 200
    """Env steps per sample() call (RLlib's classic rollout_fragment_length)."""
    calls: int = 3
    """sample() calls per repetition."""
    reps: int = 11
    """Rounds: timed repetitions per side (after a warm-up)."""
    hiddens: tuple[int, ...] = (64, 64)
    """fcnet_hiddens of both modules."""
    max_cycles: int = 50
    """Episode length (env_config max_cycles)."""
    torch_threads: int = 1
    """torch intra-op threads; 1 avoids OpenMP spinning against the environment on 2 cores."""
    episodes_to_numpy: bool = True
    """RLlib's config.env_runners(episodes_to_numpy=...) (default True; see the module docstring)."""


def parse_args(argv: list[str] | None = None) -> Args:
    defaults = Args()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default=defaults.env, help="registered environment (default bps_1)")
    parser.add_argument("--fragment", type=int, default=defaults.fragment,
                        help="env steps per sample() call (default 200)")
    parser.add_argument("--calls", type=int, default=defaults.calls, help="sample() calls per repetition")
    parser.add_argument("--reps", type=int, default=defaults.reps, help="timed repetitions per side")
    parser.add_argument("--hiddens", type=int, nargs="+", default=list(defaults.hiddens),
                        help="fcnet_hiddens of both modules")
    parser.add_argument("--max-cycles", type=int, default=defaults.max_cycles, help="episode length")
    parser.add_argument("--torch-threads", type=int, default=defaults.torch_threads,
                        help="torch intra-op threads (default 1)")
    parser.add_argument("--no-episodes-to-numpy", dest="episodes_to_numpy", action="store_false",
                        help="sample with config.env_runners(episodes_to_numpy=False), both sides")
    ns = parser.parse_args(argv)
    return Args(ns.env, ns.fragment, ns.calls, ns.reps, tuple(ns.hiddens), ns.max_cycles, ns.torch_threads,
                ns.episodes_to_numpy)


def make_runner(args: Args, force_padding: bool) -> MultiAgentEnvRunner:
    """An EnvRunner sampling ``args.env`` under fups, padded or with RLlib's default module."""
    base = (PPOConfig().environment(args.env, env_config={"max_cycles": args.max_cycles, "seed": 0})
            .env_runners(num_env_runners=0, num_envs_per_env_runner=1, episodes_to_numpy=args.episodes_to_numpy))
    obs, act = env_spaces(env_creator_of(base), base.env_config)
    plan = build_plan("fups", obs, act, force_padding=force_padding)
    model_config = {"fcnet_hiddens": list(args.hiddens), "fcnet_activation": "tanh"}
    return MultiAgentEnvRunner(config=apply_plan(base, plan, model_config))


def timed_sampling(runner: MultiAgentEnvRunner, fragment: int, calls: int) -> tuple[float, float]:
    """Agent steps per wall-clock second and per CPU second over `calls` sample() calls."""
    steps, wall, cpu = 0, 0.0, 0.0
    for _ in range(calls):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        episodes = runner.sample(num_timesteps=fragment, explore=True)
        wall += time.perf_counter() - wall0
        cpu += time.process_time() - cpu0
        steps += sum(e.agent_steps() for e in episodes)
        runner.get_metrics()  # as an Algorithm does after sampling: frees the finished episodes
    return steps / wall, steps / cpu


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    torch.set_num_threads(args.torch_threads)
    runners = {"default": make_runner(args, False), "padded": make_runner(args, True)}
    for runner in runners.values():  # warm-up: first episodes, torch kernels
        timed_sampling(runner, args.fragment, 2)
    rates: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in runners}
    for rep in range(args.reps):
        order = list(runners.items())
        for name, runner in order if rep % 2 == 0 else order[::-1]:  # neither side always goes first
            wall, cpu = timed_sampling(runner, args.fragment, args.calls)
            rates[name]["wall"].append(wall)
            rates[name]["cpu"].append(cpu)
    print(f"environment {args.env}, fups; {args.reps} rounds of alternating repetitions of {args.calls} x sample("
          f"{args.fragment} env steps); fcnet_hiddens {list(args.hiddens)}; torch threads {args.torch_threads}; "
          f"episodes_to_numpy {args.episodes_to_numpy}")
    result = {}
    for clock in ("wall", "cpu"):
        for name in runners:
            values = rates[name][clock]
            print(f"  {name:8s} {clock:4s}: median {statistics.median(values):7.0f}, best {max(values):7.0f} "
                  f"agent steps/s  (all: {', '.join(f'{x:.0f}' for x in values)})")
        # Each padded repetition against the default one of the same round: both saw about the same load.
        paired = statistics.median(p / d for d, p in zip(rates["default"][clock], rates["padded"][clock]))
        best = max(rates["padded"][clock]) / max(rates["default"][clock])
        result[clock] = paired
        print(f"  ratio padded/default ({clock}): {paired:.3f} median of pairs ({(1 - paired) * 100:+.1f}% slower), "
              f"{best:.3f} best vs best; target >= 0.85 (at most 15% slower)")
    print("reproduce: .venv/bin/python benchmarks/overhead.py " + shlex.join(argv if argv is not None else sys.argv[1:]))
    for runner in runners.values():
        runner.stop()
    return result


if __name__ == "__main__":
    main()
