"""The ``rllib`` command: mistakes in experiment files end in one line naming file and key; runs
exit non-zero when interrupted or failed, and resume after Ctrl-C or SIGKILL."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from rllib_seps.cli.errors import INTERRUPTED, UserError
from rllib_seps.cli.evaluate import agents_per_module, find_checkpoint, format_returns
from rllib_seps.cli.experiment_file import load_experiments
from rllib_seps.cli.main import main
from rllib_seps.cli.train import STOP_KEY_PATIENCE, checked_stopper, progress_line
from rllib_seps.cli.plots import plot_learning_curve
from rllib_seps.rllib.fast.execution import plan_mapping
from rllib_seps.rllib.internals import checkpoint_config
from tests.conftest import TINY

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
    (VALID.replace("env: bps_1", "env: no_such_module:make"), "exp.env",
     "cannot import module 'no_such_module' of environment 'no_such_module:make' (ModuleNotFoundError"),
    (VALID.replace("env: bps_1", "env: 'mpe2.simple_spread_v3:parallel_envv'"), "exp.env",
     "mpe2.simple_spread_v3.parallel_envv does not exist; did you mean 'parallel_env'?"),
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
    assert code == 2 and err.startswith(f"rllib: error: {tmp_path}: no checkpoint here")
    code, err = run_main(capsys, "resume", str(tmp_path))
    assert code == 2 and err.startswith(f"rllib: error: {tmp_path}: not an experiment directory")


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


def test_returns_table_lists_modules_and_the_total_over_episodes():
    runners = {"module_episode_returns_mean": {"cluster_1": -2.0, "cluster_0": -2.0},
               "episode_return_mean": -4.0, "episode_return_min": -5.0, "episode_return_max": -3.0,
               "num_episodes": 2}
    lines = format_returns(runners, agents_per_module(["a", "b", "c"], {"a": "cluster_0", "b": "cluster_0",
                                                                        "c": "cluster_1"}.get)).splitlines()
    assert lines[1].split() == ["cluster_0", "2", "-2.00"]
    assert lines[-1] == f"{'total':<20} {3:>6}  {-4.0:>12.2f}  (min -5.00, max -3.00 over 2 episodes)"


def test_learning_curve_is_written_with_module_panel(tmp_path):
    frame = pd.DataFrame({"env_runners/num_env_steps_sampled_lifetime": [100, 200, 300],
                          "env_runners/episode_return_mean": [-10.0, -8.0, -5.0],
                          "env_runners/module_episode_returns_mean/cluster_0": [-6.0, -5.0, -3.0],
                          "env_runners/module_episode_returns_mean/cluster_1": [-4.0, -3.0, -2.0]})
    path = plot_learning_curve(frame, tmp_path / "curve.png", title="test")
    assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="no 'env_runners/episode_return_mean' column"):
        plot_learning_curve(frame.drop(columns=["env_runners/episode_return_mean"]), tmp_path / "x.png")


def test_stopper_waits_for_keys_a_result_lacks_and_names_one_never_reported():
    stopper = checked_stopper({"env_runners": {"num_env_steps_sampled_lifetime": 400}},
                              source="f.yaml", prefix="exp.stop.")
    assert not stopper("t", {"training_iteration": 1})  # sampling timed out: no env_runners/...
    assert not stopper("t", {"env_runners": {"num_env_steps_sampled_lifetime": 200}})
    for _ in range(STOP_KEY_PATIENCE):  # reported once: later results may lack it
        assert not stopper("t", {"training_iteration": 3})
    assert stopper("t", {"env_runners/num_env_steps_sampled_lifetime": 400})
    typo = checked_stopper({"training_iter": 2}, source="--stop", patience=3)
    assert not typo("t", {"training_iteration": 1}) and not typo("t", {"training_iteration": 2})
    with pytest.raises(UserError, match="^--stop: training_iter: none of the first 3 training "
                       "results reported this key.*did you mean 'training_iteration'"):
        typo("t", {"training_iteration": 3})


# ------------------------------------------------------------------ runs: exit status and resume

ROOT = Path(__file__).resolve().parents[1]


def test_a_failed_trial_exits_1(tmp_path, capsys):
    # A plain RLlib run whose environment cannot be built: the trial fails in Tune.
    path = write(tmp_path, VALID.replace("    seps: {strategy: seps, n_clusters: 3}\n",
                                         "    env_config: {max_cycles: 0}\n    num_env_runners: 0\n"))
    code = main(["train", "file", str(path), "--storage-path", str(tmp_path), "--num-cpus", "1"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"rllib: error: exp: training failed: ValueError: max_cycles must be >= 1, got 0." in err
    assert f"rllib resume {tmp_path / 'exp'} retries from the last checkpoint" in err


class Run:
    """``rllib ...`` in its own session (so that it and the Ray processes it starts can be
    ended together), its output in files."""

    def __init__(self, tmp_path: Path, name: str, *args: str):
        self.out, self.err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.process = subprocess.Popen([str(RLLIB), *args], stdout=out, stderr=err,
                                            cwd=tmp_path, start_new_session=True)

    def text(self) -> str:
        return self.out.read_text()

    def wait_for(self, line: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while line not in self.text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.end()
                pytest.fail(f"no {line!r} in time:\n{self.text()[-3000:]}{self.err.read_text()[-3000:]}")
            time.sleep(0.2)

    def wait(self, timeout: float = 300) -> int:
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.end()

    def end(self) -> None:
        """Kills whatever is left of the run's session."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()


@pytest.mark.slow
def test_interrupted_and_killed_runs_resume_with_the_same_clusters(tmp_path):
    """Ctrl-C after iteration 1 (exit 130), ``rllib resume``, SIGKILL after iteration 2 (of 4),
    ``rllib resume`` again to the end: the iteration count continues from a checkpoint each time,
    pretraining never runs again and the clusters stay those of the report. Then ``rllib
    evaluate`` rolls out the experiment's newest checkpoint."""
    experiment = tmp_path / "bps_1-seps-ppo"
    train = Run(tmp_path, "train", "train", "file", str(ROOT / "tuned_configs" / "bps_1-seps-ppo.yaml"),
                "--stop", json.dumps({"training_iteration": 4}), "--config", json.dumps(TINY),
                "--checkpoint-freq", "1", "--storage-path", str(tmp_path), "--num-cpus", "2")
    try:
        train.wait_for("[bps_1-seps-ppo] iter    1")
        # Ctrl-C once iteration 1's checkpoint is on disk: the line is printed before it is saved.
        deadline = time.monotonic() + 120
        while not any(experiment.glob("*/checkpoint_*/algorithm_state.*")) and time.monotonic() < deadline:
            time.sleep(0.2)
        train.process.send_signal(signal.SIGINT)
        assert train.wait(timeout=120) == INTERRUPTED
    finally:
        train.end()
    assert f"rllib resume {experiment}" in train.err.read_text()
    report = experiment / "seps_report.json"
    written = report.read_text()  # with pretraining's timings: a rerun would change them

    killed = Run(tmp_path, "killed", "resume", str(experiment), "--num-cpus", "2")
    try:
        killed.wait_for("[bps_1-seps-ppo] iter    2")
        killed.process.kill()
    finally:
        killed.end()
    assert "iter    1" not in killed.text()  # continued from the checkpoint of iteration 1

    last = Run(tmp_path, "last", "resume", str(experiment), "--num-cpus", "2")
    assert last.wait() == 0, last.text()[-3000:] + last.err.read_text()[-3000:]
    iterations = [int(i) for i in re.findall(r"^\[bps_1-seps-ppo\] iter +(\d+)", last.text(), re.M)]
    # From the newest checkpoint Tune recorded: after SIGKILL that may be iteration 1's.
    assert iterations[0] >= 2 and iterations[-1] == 4, iterations
    for run in (killed, last):
        assert "SePS:" not in run.text() and "SePS rollouts" not in run.err.read_text()
    assert report.read_text() == written

    checkpoint = Path(re.search(r"^Checkpoint: (.+)$", last.text(), re.M).group(1))
    assert find_checkpoint(experiment) == find_checkpoint(checkpoint.parent) == checkpoint
    _, config = checkpoint_config(str(checkpoint))
    assert plan_mapping(config).agent_to_module == json.loads(written)["mapping"]
    curve = Path(re.search(r"^Learning curve: (.+)$", last.text(), re.M).group(1))
    assert curve.is_file() and curve.parent == checkpoint.parent

    # The experiment directory's newest checkpoint, rolled out: returns per cluster.
    evaluate = subprocess.run([str(RLLIB), "evaluate", str(experiment), "--episodes", "2",
                               "--num-cpus", "1"], capture_output=True, text=True, timeout=300)
    assert evaluate.returncode == 0, evaluate.stdout[-3000:] + evaluate.stderr[-3000:]
    assert f"Evaluated {checkpoint} on bps_1: 2 episodes, greedy actions" in evaluate.stdout
    rows = {line.split()[0]: line.split() for line in evaluate.stdout.splitlines()[1:]}
    clusters = sorted(m for m in rows if m.startswith("cluster_"))
    assert clusters == sorted(set(json.loads(written)["mapping"].values())) and rows["total"][1] == "15"
    total = float(rows["total"][2])
    assert total == pytest.approx(sum(float(rows[m][2]) for m in clusters), abs=0.05)
    assert total < 0  # BPS rewards are negative distances


USER_ENVS = """\
from pathlib import Path

from mpe2 import simple_speaker_listener_v4
from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv

FAIL_ONCE = Path(__file__).with_name("fail_once")


class SpeakerListener(ParallelPettingZooEnv):
    def __init__(self, env_config):
        super().__init__(simple_speaker_listener_v4.parallel_env(**env_config))
        self.steps = 0

    def step(self, actions):
        # Once, while the file is there, at a step that only training reaches: in iteration 2.
        self.steps += 1
        if self.steps > 300 and FAIL_ONCE.exists():
            FAIL_ONCE.unlink()
            raise RuntimeError("the environment failed")
        return super().step(actions)


def speaker_listener(env_config):
    return SpeakerListener(env_config)
"""


@pytest.mark.slow
def test_a_users_env_named_as_module_attribute_trains_resumes_and_evaluates(tmp_path):
    """``env: user_envs:speaker_listener`` names a creator in the user's own module (RLlib's
    PettingZoo wrapper around mpe2's speaker and listener, whose spaces differ), found in the
    working directory by the driver and its workers, and again by ``rllib resume`` and ``rllib
    evaluate``, each a process of its own. The env fails once in iteration 2, so the run needs
    the resume."""
    write(tmp_path, USER_ENVS, "user_envs.py")
    write(tmp_path, "", "fail_once")
    path = write(tmp_path, VALID.replace("env: bps_1", "env: user_envs:speaker_listener")
                 .replace("    lr: 0.0003\n", "    env_config: {max_cycles: 25}\n")
                 .replace("n_clusters: 3", "n_clusters: auto"))
    experiment = tmp_path / "exp"
    train = Run(tmp_path, "train", "train", "file", str(path), "--stop", json.dumps({"training_iteration": 2}),
                "--config", json.dumps(TINY), "--checkpoint-freq", "1", "--storage-path", str(tmp_path),
                "--num-cpus", "2")
    assert train.wait() == 1, train.text()[-3000:] + train.err.read_text()[-3000:]
    assert "SePS: 2 agents ->" in train.text() and "[exp] iter    1" in train.text()
    assert "RuntimeError: the environment failed" in train.err.read_text()

    resumed = Run(tmp_path, "resumed", "resume", str(experiment), "--num-cpus", "2")
    assert resumed.wait() == 0, resumed.text()[-3000:] + resumed.err.read_text()[-3000:]
    assert "[exp] iter    2" in resumed.text() and "iter    1" not in resumed.text()

    evaluate = subprocess.run([str(RLLIB), "evaluate", str(experiment), "--episodes", "2", "--num-cpus", "1"],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert evaluate.returncode == 0, evaluate.stdout[-3000:] + evaluate.stderr[-3000:]
    assert "on user_envs:speaker_listener: 2 episodes" in evaluate.stdout
    assert re.search(r"^total +2 ", evaluate.stdout, re.M), evaluate.stdout
