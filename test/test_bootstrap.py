"""The bootstrap is idempotent: run again with nothing changed, it installs and builds nothing; the
interface packages no wheel provides (vision_msgs, tf2_msgs) import after it."""
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
    script = (f"source {ROOT}/scripts/env.sh && python -c "
              "'from tf2_msgs.msg import TFMessage; from vision_msgs.msg import Detection2DArray'")
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.skipif(not (ROOT / ".venv").exists(), reason="no bootstrapped environment in this checkout")
def test_scrap_tools_is_a_command_after_sourcing_env(tmp_path):
    """As a new user types it: `source scripts/env.sh`, then `scrap-tools` from any folder."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "SCRAP_VENV", "PYTHONPATH", "AMENT_PREFIX_PATH")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    script = f"source {ROOT}/scripts/env.sh && command -v scrap-tools && scrap-tools --help"
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "/.ws/install/" in proc.stdout.splitlines()[0]
    for tool in ("synth", "eval-seg", "eval-cls", "finetune-decoder", "finetune-clip", "bench"):
        assert tool in proc.stdout, tool
