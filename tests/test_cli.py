"""The ``rllib`` command: mistakes in experiment files end in one line naming file and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from rllib_seps.cli.errors import UserError
from rllib_seps.cli.evaluate import find_checkpoint, format_returns
from rllib_seps.cli.experiment_file import load_experiments
from rllib_seps.cli.main import main
from rllib_seps.cli.train import checked_stopper, progress_line
from rllib_seps.cli.plots import plot_learning_curve

RLLIB = Path(sys.executable).parent / "rllib"

VALID = """\
exp:
  run: PPO
  env: bps_1
  stop: {training_iteration: 1}
  config:
    lr: 0.0003
    lambda: 0.95
    model_config: {fcnet_hiddens: [64, 64]}
    seps: {strategy: seps, n_clusters: 3}
"""


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def run_main(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


@pytest.mark.parametrize("text, key, message", [
    ("exp:\n  run: PPO\n  env: [bps_1\n", "line 4, column 1", "invalid YAML"),
    (VALID.replace("env: bps_1", "env: bps_9"), "exp.env", "unknown environment 'bps_9'; did you mean"),
    (VALID.replace("run: PPO", "run: PPOO"), "exp.run", "unknown or unsupported algorithm 'PPOO'; did you mean 'PPO'"),
    (VALID.replace("run: PPO", "run: BC"), "exp.run", "use one of PPO, APPO, IMPALA"),
    (VALID.replace("n_clusters: 3", "n_cluster: 3"), "exp.config.seps.n_cluster",
     "unknown SePS option 'n_cluster'; did you mean 'n_clusters'?"),
    (VALID.replace("n_clusters: 3", "n_clusters: 0"), "exp.config.seps.n_clusters", "n_clusters=0 is invalid"),
    (VALID.replace("lr: 0.0003", "lrr: 0.0003"), "exp.config.lrr", "did you mean 'lr'?"),
    (VALID.replace("fcnet_hiddens: [64, 64]", "fcnet_hidens: [64, 64]"), "exp.config.model_config.fcnet_hidens",
     "unknown model_config key; did you mean 'fcnet_hiddens'?"),
    (VALID.replace("stop:", "stopp:"), "exp.stopp", "unknown experiment key; did you mean 'stop'?"),
    (VALID.replace("  stop:", "  checkpoint_at_end: 3\n  stop:"), "exp.checkpoint_at_end", "must be true or false"),
    (VALID.replace("    lr: 0.0003", "    lr: 0.0003\n    minibatch_size: 9000"), "exp.config",
     "ValueError: `minibatch_size` (9000) must be <= `train_batch_size_per_learner`"),
    ("- just\n- a list\n", None, "must map experiment names to {run, env, stop, config}"),
])
def test_file_mistakes_are_one_line_naming_file_and_key(tmp_path, capsys, text, key, message):
    path = write(tmp_path, text)
    code, err = run_main(capsys, "train", "file", str(path))
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    expected = f"rllib: error: {path}: " + (f"{key}: " if key else "")
    assert err.startswith(expected), err
    assert message in err, err


def test_missing_file_and_bad_json_options(tmp_path, capsys):
    code, err = run_main(capsys, "train", "file", str(tmp_path / "nope.yaml"))
    assert code == 2 and err.startswith(f"rllib: error: {tmp_path / 'nope.yaml'}: cannot read the file")
    path = write(tmp_path, VALID)
    code, err = run_main(capsys, "train", "file", str(path), "--config", "{lr: 1}")
    assert code == 2 and err.startswith("rllib: error: --config: invalid JSON")
    code, err = run_main(capsys, "train", "file", str(path), "--stop", "[1]")
    assert code == 2 and err.startswith("rllib: error: --stop: must be a JSON object")
    code, err = run_main(capsys, "evaluate", str(tmp_path))
    assert code == 2 and "no RLlib algorithm checkpoint here" in err


def test_console_script_prints_one_line_and_exits_2(tmp_path):
    path = write(tmp_path, VALID.replace("n_clusters: 3", "n_cluster: 3"))
    proc = subprocess.run([str(RLLIB), "train", "file", str(path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("rllib: error:")]
    assert error_lines == [f"rllib: error: {path}: exp.config.seps.n_cluster: unknown SePS option "
                           "'n_cluster'; did you mean 'n_clusters'?"]
    assert "Traceback" not in proc.stderr


def test_yaml_becomes_an_rllib_config_with_overrides(tmp_path):
    path = write(tmp_path, VALID)
    (exp,) = load_experiments(path, config_overrides={"lr": 1e-3, "seps": {"seed": 3},
                                                       "env_config": {"max_cycles": 10}},
                              stop={"training_iteration": 7})
    assert exp.name == "exp" and exp.stop == {"training_iteration": 7}
    assert exp.config.algo_class.__name__ == "PPO" and exp.config.env == "bps_1"
    assert exp.config.lr == 1e-3 and exp.config.lambda_ == 0.95
    assert exp.config.env_config == {"max_cycles": 10}
    assert exp.config.model_config["fcnet_hiddens"] == [64, 64]
    assert (exp.seps.strategy, exp.seps.n_clusters, exp.seps.seed) == ("seps", 3, 3)


def test_file_without_seps_block_is_a_plain_rllib_run(tmp_path):
    (exp,) = load_experiments(write(tmp_path, VALID.replace("    seps: {strategy: seps, n_clusters: 3}\n", "")))
    assert exp.seps is None


def test_config_overrides_merge_into_nested_settings_and_replace_the_rest(tmp_path):
    (exp,) = load_experiments(write(tmp_path, VALID), config_overrides={
        "seps": {"seed": 5}, "model_config": {"fcnet_hiddens": [32]}, "lr": 0.01})
    assert (exp.seps.seed, exp.seps.n_clusters) == (5, 3)  # merged: n_clusters stays
    assert exp.config.model_config["fcnet_hiddens"] == [32] and exp.config.lr == 0.01


def test_user_error_is_one_line():
    assert str(UserError("f.yaml", "exp.env", "two\nlines")) == "f.yaml: exp.env: two lines"
    assert str(UserError("f.yaml", None, "bad")) == "f.yaml: bad"


def test_progress_line_reads_nested_and_flat_results():
    nested = {"training_iteration": 3, "time_total_s": 12.0,
              "env_runners": {"num_env_steps_sampled_lifetime": 600, "episode_return_mean": -12.5}}
    assert "iter    3  env steps       600  episode return mean      -12.50" in progress_line("x", nested)
    assert "no episode finished yet" in progress_line("x", {"training_iteration": 1})


def test_returns_table_sums_modules_into_total():
    table = format_returns({"cluster_0": [-1.0, -3.0], "cluster_1": [-2.0, -2.0]},
                           {"cluster_0": {"a", "b"}, "cluster_1": {"c"}})
    lines = table.splitlines()
    assert lines[1].split() == ["cluster_0", "2", "-2.00", "1.00"]
    assert lines[-1].split() == ["total", "3", "-4.00", "1.00"]


def test_find_checkpoint_takes_the_newest_below_a_directory(tmp_path):
    for name in ("checkpoint_000000", "checkpoint_000001"):
        directory = tmp_path / "trial" / name
        (directory / "learner_group").mkdir(parents=True)
        for marker in ("class_and_ctor_args.pkl", "algorithm_state.pkl",
                       "learner_group/class_and_ctor_args.pkl"):
            (directory / marker).write_bytes(b"")
    assert find_checkpoint(tmp_path).name == "checkpoint_000001"
    assert find_checkpoint(tmp_path / "trial" / "checkpoint_000000").name == "checkpoint_000000"


def test_learning_curve_is_written_with_module_panel(tmp_path):
    frame = pd.DataFrame({"env_runners/num_env_steps_sampled_lifetime": [100, 200, 300],
                          "env_runners/episode_return_mean": [-10.0, -8.0, -5.0],
                          "env_runners/module_episode_returns_mean/cluster_0": [-6.0, -5.0, -3.0],
                          "env_runners/module_episode_returns_mean/cluster_1": [-4.0, -3.0, -2.0]})
    path = plot_learning_curve(frame, tmp_path / "curve.png", title="test")
    assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="no 'env_runners/episode_return_mean' column"):
        plot_learning_curve(frame.drop(columns=["env_runners/episode_return_mean"]), tmp_path / "x.png")


def test_stopper_stops_at_thresholds_and_on_unknown_keys():
    stopper = checked_stopper({"env_runners": {"num_env_steps_sampled_lifetime": 400}})
    assert not stopper("t", {"env_runners": {"num_env_steps_sampled_lifetime": 200}})
    assert stopper("t", {"env_runners/num_env_steps_sampled_lifetime": 400})
    assert not stopper.missing
    typo = checked_stopper({"training_iter": 2})
    assert typo("t", {"training_iteration": 1}) and typo.missing == ["training_iter"]
    assert typo.result_keys == ["training_iteration"]
