"""The README's Python examples run verbatim, in order, on the tiny budget they read from
``SEPS_README_TEST``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
# Runs every block in one namespace, as a reader who runs them top to bottom; a small local Ray.
RUNNER = """
import re, sys
import ray
text = open(sys.argv[1]).read()
ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
namespace = {"__name__": "__main__"}
for i, block in enumerate(re.findall(r"^```python\\n(.*?)^```", text, re.S | re.M)):
    print(f"--- README block {i}", flush=True)
    exec(compile(block, f"README.md, python block {i}", "exec"), namespace)
ray.shutdown()
"""


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)


def test_readme_has_the_examples_a_user_starts_from():
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 4
    assert any("SePSCallback" in block for block in blocks) and any("with_sharing" in block for block in blocks)
    assert any("ParallelPettingZooEnv" in block for block in blocks)  # a PettingZoo env, RLlib's wrapper
    assert any("list(range(" in block and "MultiAgentEnv" in block for block in blocks)  # integer ids


@pytest.mark.slow
def test_readme_python_blocks_run_verbatim(tmp_path):
    env = {**os.environ, "SEPS_README_TEST": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(README)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    out = proc.stdout
    assert out.count("--- README block") == len(python_blocks(README.read_text()))
    assert out.count("SePS report written: ") == 1  # the callback writes into the trial's directory
    assert out.count("SePS: 15 agents -> ") == 2 and "SePS: 6 agents -> " in out  # bps_1 twice, Pickers
