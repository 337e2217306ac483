"""A real two-node Ray cluster: ``ray start`` head and worker, ``rllib train --address`` on it.

The nodes are separate ``ray start --block`` processes with their own temp dirs, ports and auth
token (Ray 2.60's token authentication), stopped by their own PIDs: the test never touches
another Ray instance on the machine, and cleans up even when it fails.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, closing
from pathlib import Path

import pytest

from rllib_seps.options import SePSOptions
from rllib_seps.pretraining.rollouts import STREAMS, rollout_plan
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STARTED = "Ray runtime started"


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports that are free now."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(closing(socket.socket())) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def node_ports() -> list[str]:
    """``ray start`` port options, each a free port (Ray's defaults are fixed numbers that
    another Ray instance on this machine may hold)."""
    names = ["--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port"]
    return [item for name, port in zip(names, free_ports(len(names))) for item in (name, str(port))]


def start_node(args: list[str], log: Path, env: dict) -> subprocess.Popen:
    """``ray start --block ...`` in its own session; returns once the node is up."""
    with open(log, "w") as out:
        # The venv's own Python, whatever the ``ray`` script's first line says.
        process = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--block", *args], env=env,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while STARTED not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            stop_node(process)
            pytest.fail(f"ray start {' '.join(args)} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    return process


def stop_node(process: subprocess.Popen) -> None:
    """Stops a node by its ``ray start`` PID (which stops the node's processes), then ends
    whatever is left of its process group."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def logs_mention(temp_dir: Path, marker: str) -> bool:
    """Whether a worker log of the node whose temp dir is ``temp_dir`` contains ``marker``
    (Ray writes ``:actor_name:<class>`` and ``:task_name:<function>`` into them)."""
    return any(marker in path.read_text(errors="replace")
               for path in temp_dir.glob("session_*/logs/worker-*.out"))


def test_rollout_tasks_option():
    assert SePSOptions().rollout_tasks == "auto" and SePSOptions(rollout_tasks=3).rollout_tasks == 3
    for bad, error in (("many", ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(error, match="rollout_tasks"):
            SePSOptions(rollout_tasks=bad)
    assert rollout_plan("auto", 100.0) == (STREAMS, False)  # no Ray here: in-process


@pytest.mark.slow
def test_rllib_train_on_a_two_node_cluster(tmp_path):
    """EnvRunners and SePS rollout tasks land on both nodes: each node offers one "runner slot"
    that every EnvRunner needs, so the two EnvRunners run one per node; pretraining makes one
    rollout streams as Ray tasks on a cluster of several nodes by default, and spreads them."""
    # Unix socket paths are limited to about 107 characters: a short temp dir, removed after.
    temp = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
               RAY_USAGE_STATS_ENABLED="0", PYTHONWARNINGS="ignore")
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "2", "--num-gpus", "0",
              "--resources", json.dumps({"runner_slot": 1}),
              "--object-store-memory", str(100 * 1024**2), "--disable-usage-stats"]
    port = free_ports(1)[0]
    address = f"127.0.0.1:{port}"
    nodes = []
    try:
        nodes.append(start_node(["--head", "--port", str(port), "--include-dashboard", "false",
                                 "--temp-dir", str(temp / "h"), *common, *node_ports()],
                                tmp_path / "head.log", env))
        nodes.append(start_node(["--address", address, "--temp-dir", str(temp / "w"), *common,
                                 *node_ports()], tmp_path / "worker.log", env))
        config = {**TINY, "num_env_runners": 2, "custom_resources_per_env_runner": {"runner_slot": 1}}
        train = subprocess.run(
            [str(BIN / "rllib"), "train", "file", str(ROOT / "tuned_configs" / "bps_1-seps-ppo.yaml"),
             "--address", address, "--stop", json.dumps({"training_iteration": 2}),
             "--config", json.dumps(config), "--storage-path", str(tmp_path / "results")],
            capture_output=True, text=True, timeout=400, cwd=tmp_path, env=env)
        assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
        assert "SePS: 15 agents ->" in train.stdout
        assert "[bps_1-seps-ppo] iter    2" in train.stdout
        checkpoint = Path(re.search(r"^Checkpoint: (.+)$", train.stdout, re.M).group(1))
        assert (checkpoint / "algorithm_state.pkl").is_file()
        for node in ("h", "w"):
            assert logs_mention(temp / node, ":actor_name:FastEnvRunner"), node  # the default execution
            assert logs_mention(temp / node, ":task_name:_collect_per_agent"), node
    finally:
        for node in reversed(nodes):
            stop_node(node)
        shutil.rmtree(temp, ignore_errors=True)
