"""The real sd-scripts: the flag list and the whole smoke pipeline. Marked `kohya`: they need sd-scripts
(SD_SCRIPTS_DIR) and its environment (torch, sd-scripts' requirements).

Enable with:  make kohya-env sd-scripts && SD_SCRIPTS_DIR=.cache/sd-scripts .venv-kohya/bin/pytest -m kohya
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SD = os.environ.get("SD_SCRIPTS_DIR")
needs_kohya = pytest.mark.skipif(
    not (SD and Path(SD, "sdxl_train_network.py").is_file() and importlib.util.find_spec("torch")),
    reason="needs sd-scripts and its environment: make kohya-env sd-scripts, then "
    "SD_SCRIPTS_DIR=.cache/sd-scripts .venv-kohya/bin/pytest -m kohya",
)
pytestmark = [pytest.mark.kohya, needs_kohya]


def test_flag_list_is_what_sd_scripts_accepts(tmp_path):
    out = tmp_path / "flags.json"
    subprocess.run([sys.executable, str(ROOT / "tools" / "dump_flags.py"), str(out)], check=True,
                   capture_output=True)
    committed = json.loads((ROOT / "bespoke" / "data" / "sdxl_train_network_flags.json").read_text())
    assert json.loads(out.read_text())["flags"] == committed["flags"]


def test_train_probe_skips_the_slow_bitsandbytes_import():
    """`train`'s probe (--imports-only) asks torch for the GPU count and tries xformers, nothing more:
    importing bitsandbytes alone takes seconds of every start (3.3 vs 9.0 s for the probe on the dev box)."""
    code = ("import json, sys; from bespoke import gpuprobe; out = gpuprobe.probe(imports_only=True); "
            "print(json.dumps([sorted(out), 'bitsandbytes' in sys.modules]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    keys, imported = json.loads(r.stdout.strip().splitlines()[-1])
    assert "device_count" in keys and "xformers" in keys and "bitsandbytes" not in keys and not imported


def test_compiled_blocks_train_like_eager_ones():
    """The fast profile's launcher: compiled blocks, LoRA traced in, under gradient checkpointing."""
    r = subprocess.run([sys.executable, str(ROOT / "tests" / "scripts" / "compiled_blocks.py"), SD],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["unique_graphs"] >= 3 and got["calls_captured"] > 0  # the blocks really went through dynamo
    assert got["compiled_loss"] == pytest.approx(got["eager_loss"], rel=1e-5)
    assert got["grad_rel_diff"] < 1e-5 and got["grads"] > 0


@pytest.mark.slow
def test_smoke_pipeline(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bespoke", "smoke-test", "--workspace", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "smoke test passed" in r.stdout and "FAIL" not in r.stdout.split("smoke checks:")[1]
    done = json.loads((tmp_path / "output" / "DONE.json").read_text())
    assert [e["epoch"] for e in done["epochs"]] == [1, 2]
