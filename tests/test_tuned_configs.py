"""Every file in tuned_configs/ loads and trains, and its checkpoints evaluate (the ``rllib``
command end to end: tests/test_cli.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ray.rllib.core import DEFAULT_MODULE_ID

from rllib_seps.cli.experiment_file import load_experiments, share
from rllib_seps.cli.main import main
from rllib_seps.options import STRATEGIES
from rllib_seps.rllib.fast.execution import plan_mapping
from tests.conftest import TINY, load_benchmark

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "tuned_configs").glob("*.yaml"))
TASKS = ("bps_1", "bps_2", "bps_h_1", "bps_h_2", "bps_h_3", "crware_1", "crware_2", "crware_3", "lbf")
# One module per agent for 200 agents is infeasible (the paper did not run it either).
NO_FILE = {("bps_h_3", "nops")}


def name_parts(path: Path) -> tuple[str, str, str]:
    match = re.fullmatch(r"(?P<task>\w+)-(?P<strategy>\w+)-(?P<algo>\w+)", path.stem)
    assert match, f"{path.name} is not named <task>-<strategy>-<algorithm>.yaml"
    return match["task"], match["strategy"], match["algo"]


def test_every_task_has_a_file_per_strategy():
    found = {name_parts(p)[:2] for p in CONFIGS}
    missing = [f"{t}-{s}-ppo.yaml" for t in TASKS for s in STRATEGIES if (t, s) not in found | NO_FILE]
    assert not missing


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_file_matches_its_name_and_says_how_values_were_chosen(path):
    task, strategy, algo = name_parts(path)
    assert strategy in STRATEGIES
    text = path.read_text()
    assert "How the values were chosen" in text
    (exp,) = load_experiments(path)
    assert exp.name == path.stem and exp.config.env == task
    assert exp.config.algo_class.__name__.lower() == algo
    assert exp.seps is not None and exp.seps.strategy == strategy
    assert exp.config.model_config["fcnet_hiddens"] == [64, 64]
    assert exp.stop, "a tuned config needs a stop criterion"


def test_files_of_one_task_differ_only_in_strategy_and_per_module_minibatch():
    """Strategies are compared on the same values. RLlib counts ``minibatch_size`` rows per module,
    so a strategy of several modules may take fewer than the one shared module of ``fups``: each of
    its modules then makes as many updates per iteration (the file's header says why)."""
    import yaml

    def common(spec: dict) -> dict:
        return {**spec, "config": {k: v for k, v in spec["config"].items() if k not in ("seps", "minibatch_size")}}

    specs = {name_parts(path)[:2]: next(iter(yaml.safe_load(path.read_text()).values())) for path in CONFIGS}
    for (task, strategy), spec in specs.items():
        shared = specs[(task, "fups")]
        if strategy not in ("seps", "nops"):
            assert spec["config"]["minibatch_size"] == shared["config"]["minibatch_size"], (task, strategy)
        assert common(spec) == common(shared), f"{task}-{strategy}-ppo.yaml differs from {task}-fups-ppo.yaml beyond seps"


def test_committed_learning_runs_trained_with_their_tuned_file_and_settings():
    """docs/results/learning.csv labels a run by its settings relative to the tuned file: a value
    changed in a file must come with the runs it changes relabelled."""
    learning = load_benchmark("learning")
    learning.check_csv(ROOT / "docs" / "results" / "learning.csv")


def test_learning_benchmark_stops_on_runs_of_a_changed_tuned_file(tmp_path):
    learning = load_benchmark("learning")
    row = dict.fromkeys(learning.COLUMNS, "0") | {"task": "crware_1", "strategy": "seps", "settings": ""}
    path = tmp_path / "learning.csv"
    # Rows of a run that trained with minibatch_size 1000, labelled as a run of the file as it is.
    row["config_hash"] = learning.config_hash("crware_1", "seps", '{"minibatch_size": 1000}')
    learning.append_rows(path, [row], learning.COLUMNS)
    with pytest.raises(ValueError, match=r"crware_1-seps-ppo.yaml with settings \{\}: 1 rows"):
        learning.check_csv(path)
    path.write_text("task,strategy\n")
    with pytest.raises(ValueError, match="an earlier version wrote it"):
        learning.check_csv(path)


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_file_trains_one_iteration(path, ray_session):
    (exp,) = load_experiments(path, config_overrides=TINY)
    config, pretraining = share(exp)
    assert (pretraining is not None) == (exp.seps.strategy in ("seps", "adaps"))
    algo = config.build_algo()
    try:
        result = algo.train()
    finally:
        algo.stop()
    assert result["training_iteration"] == 1
    assert result["env_runners"]["num_env_steps_sampled_lifetime"] >= 200
    # Every module of the plan trains (on fast execution, as a group of the one grouped module).
    assert set(result["learners"]) - {"__all_modules__", DEFAULT_MODULE_ID} == set(plan_mapping(config).module_ids)


@pytest.mark.slow
def test_evaluate_rolls_out_a_checkpoint_of_agents_with_different_spaces(tmp_path, ray_session, capsys):
    # BPS-h(1) groups see different observation sizes: FuPS+id pads and indicates them.
    (exp,) = load_experiments(ROOT / "tuned_configs" / "bps_h_1-fups_id-ppo.yaml", config_overrides=TINY)
    config, _ = share(exp)
    algo = config.build_algo()
    try:
        algo.train()
        checkpoint = algo.save_to_path(str(tmp_path / "checkpoint"))
    finally:
        algo.stop()
    assert main(["evaluate", str(checkpoint), "--episodes", "2", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "2 episodes, greedy actions, seed 1" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows["shared"][1] == "15" and rows["total"][2] == rows["shared"][2]
