"""``rllib`` (also ``rllib-seps``): train from classic RLlib YAML files and evaluate checkpoints.

Ray 2.60 ships no ``rllib`` command any more; this one reads the classic experiment files
(see :mod:`rllib_seps.cli.experiment_file`)::

    rllib train file tuned_configs/bps_1-seps-ppo.yaml --stop '{"training_iteration": 20}'
    rllib resume results/bps_1-seps-ppo            # after Ctrl-C, a killed driver or a failure
    rllib evaluate results/bps_1-seps-ppo/PPO_bps_1_.../checkpoint_000000 --episodes 20

Training runs through Ray Tune, so results, checkpoints and TensorBoard logs land in
``<storage-path>/<experiment name>/`` as usual. Exit status: 0 when training finished, 1 when it
failed, 2 for a mistake in the command line or a file, 130 when interrupted (Ctrl-C). Only this
module is imported to parse the command line: Ray, RLlib and torch load when a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from rllib_seps.cli.errors import INTERRUPTED, UserError

DEFAULT_STORAGE = "results"


def parse_json(text: str | None, option: str) -> dict | None:
    """A JSON object given on the command line, or None.

    Raises:
        UserError: For invalid JSON or JSON that is not an object.
    """
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(option, None, f"invalid JSON: {error}") from None
    if not isinstance(value, dict):
        raise UserError(option, None, f"must be a JSON object; got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rllib", description="Train RLlib (with SePS parameter sharing) from classic YAML "
        "experiment files, resume stopped runs, and evaluate checkpoints.")
    commands = parser.add_subparsers(dest="command", required=True)

    train_parser = commands.add_parser("train", help="train from an experiment file")
    train_from = train_parser.add_subparsers(dest="source", required=True)
    file_parser = train_from.add_parser("file", help="rllib train file <yaml>")
    file_parser.add_argument("file", help="YAML file: {name: {run, env, stop, config}}")
    file_parser.add_argument("--stop", help='stop criteria as JSON, replacing the file\'s '
                             '(e.g. \'{"training_iteration": 2}\')')
    file_parser.add_argument("--config", help="settings as JSON, deep-merged into the file's "
                             "config (e.g. '{\"lr\": 0.001, \"seps\": {\"seed\": 1}}')")
    file_parser.add_argument("--checkpoint-freq", type=int, default=None,
                             help="checkpoint every N iterations (default: the file's "
                             "checkpoint_freq, else only at the end)")
    file_parser.add_argument("--storage-path", default=DEFAULT_STORAGE,
                             help="where Tune writes <experiment>/ (default: ./results)")
    file_parser.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2),
                             help="Tune's own console output (default 0: one line per iteration)")
    _add_ray_options(file_parser)
    file_parser.set_defaults(handler=_train)

    resume_parser = commands.add_parser(
        "resume", help="continue an interrupted, killed or failed run from its last checkpoint")
    resume_parser.add_argument("experiment", help="the run's experiment directory "
                               "(<storage-path>/<experiment name>, e.g. results/bps_1-seps-ppo)")
    _add_ray_options(resume_parser)
    resume_parser.set_defaults(handler=_resume)

    eval_parser = commands.add_parser("evaluate", help="roll out a trained checkpoint")
    eval_parser.add_argument("checkpoint", help="checkpoint directory, or a trial or experiment "
                             "directory (its newest checkpoint is used)")
    eval_parser.add_argument("--episodes", type=int, default=10, help="episodes to roll out (default 10)")
    eval_parser.add_argument("--seed", type=int, default=0, help="seed of the environment (default 0)")
    eval_parser.add_argument("--explore", action="store_true",
                             help="sample actions from the policy instead of taking the greedy ones")
    _add_ray_options(eval_parser)
    eval_parser.set_defaults(handler=_evaluate)
    return parser


def _add_ray_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=None,
                        help="address of a running Ray cluster, host:port or auto (default: "
                        "RAY_ADDRESS, else start a local instance)")
    parser.add_argument("--num-cpus", type=int, default=None,
                        help="CPUs of a local Ray instance (default: all)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rllib`` and ``rllib-seps`` console scripts."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "episodes", 1) < 1:
        parser.error("--episodes must be >= 1")
    try:
        return args.handler(args)
    except UserError as error:
        print(f"rllib: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # outside Tune's own handling (e.g. during pretraining)
        print("rllib: interrupted", file=sys.stderr)
        return INTERRUPTED


def _train(args: argparse.Namespace) -> int:
    from rllib_seps.cli.train import train

    return train(args, config_overrides=parse_json(args.config, "--config"),
                 stop=parse_json(args.stop, "--stop"))


def _resume(args: argparse.Namespace) -> int:
    from rllib_seps.cli.train import resume

    return resume(args)


def _evaluate(args: argparse.Namespace) -> int:
    from rllib_seps.cli.evaluate import evaluate

    return evaluate(args)


if __name__ == "__main__":
    sys.exit(main())
