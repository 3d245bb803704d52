"""The bootstrap is idempotent: run again with nothing changed, it installs and builds nothing."""
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not (ROOT / ".venv").exists(), reason="no bootstrapped environment in this checkout")
def test_second_bootstrap_run_does_nothing():
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "SCRAP_VENV")}
    for run in range(2):
        proc = subprocess.run(["bash", str(ROOT / "scripts" / "bootstrap.sh")], capture_output=True,
                              text=True, timeout=900, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
    steps = [line for line in proc.stderr.splitlines() if line.startswith("[bootstrap]")]
    assert steps == ["[bootstrap] ready: source scripts/env.sh"], proc.stderr[-3000:]
