"""The command line through click's CliRunner, and the one-line error contract."""

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from bespoke import cli as cli_module
from bespoke.cli import cli


def run(*args, env=None):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_every_command_has_help_with_an_example():
    assert cli.commands
    for name in cli.commands:
        result = run(name, "--help")
        assert result.exit_code == 0, name
        assert "Example" in result.output and "bespoke" in result.output, name


def test_import_and_help_need_no_torch():
    code = "import sys, bespoke.cli; bespoke.cli.cli(['--help'], standalone_mode=False); assert 'torch' not in sys.modules"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_demo_data_then_prepare(tmp_path):
    data, ws = tmp_path / "data", tmp_path / "ws"
    assert run("demo-data", "--out", str(data), "--count", "5").exit_code == 0
    r = run("prepare", "--workspace", str(ws), "--data", str(data), "--expect", "5", "--resolution", "64,64")
    assert r.exit_code == 0, r.output
    assert "5 images, written" in r.output
    assert len(list((ws / "training_data" / "10_bespoke_baby").glob("*.png"))) == 5
    r = run("prepare", "--workspace", str(ws), "--data", str(data), "--expect", "5", "--resolution", "64,64")
    assert "up to date, nothing to do" in r.output


def main(*args, env=None):
    """The installed entry point, as a user runs it: a subprocess, stderr and exit code."""
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "bespoke", *args], capture_output=True, text=True, env=e)


def test_user_errors_are_one_line_without_traceback(tmp_path):
    r = main("prepare", "--workspace", str(tmp_path))
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: no training data found")
    assert "Traceback" not in r.stderr and "fix:" in r.stderr


def test_debug_shows_the_traceback(tmp_path):
    r = main("prepare", "--workspace", str(tmp_path), env={"BESPOKE_DEBUG": "1"})
    assert r.returncode == 1 and "Traceback" in r.stderr


def test_data_errors_list_each_file_then_one_summary(tmp_path):
    data = tmp_path / "data"
    subprocess.run([sys.executable, "-m", "bespoke", "demo-data", "--out", str(data), "--count", "2"], check=True)
    (data / "demo_000.txt").unlink()
    (data / "stray.txt").write_text("pixel art, 24x24, bespoke punk")
    r = main("prepare", "--workspace", str(tmp_path / "ws"), "--data", str(data))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 3
    assert any("demo_000.png" in x for x in lines) and any("stray.txt" in x for x in lines)
    assert lines[-1].startswith("error: 2 problem(s)")


def test_check_prints_a_table_and_exits_1_on_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("SD_SCRIPTS_DIR", str(tmp_path / "missing"))
    r = run("check", "--workspace", str(tmp_path))
    assert r.exit_code == 1
    assert "sd-scripts" in r.output and "make sd-scripts" in r.output and "disk" in r.output


def test_bad_override_is_one_line(tmp_path):
    r = main("train", "--workspace", str(tmp_path), "--dry-run", "--set", "network_dimm=4")
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert "unknown sd-scripts flag 'network_dimm'" in r.stderr and "network_dim" in r.stderr.split("fix:")[1]


def test_env_set_overrides_reach_the_recipe(monkeypatch):
    monkeypatch.setenv("BESPOKE_SET", "max_train_epochs=12 network_dim=64")
    opts = cli_module._train_opts(("seed=7",), False, None, False, 1, 0, None, None)
    assert opts.overrides == ("max_train_epochs=12", "network_dim=64", "seed=7")


@pytest.mark.parametrize("cmd", ["check", "prepare", "train", "run"])
def test_workspace_defaults_from_env(cmd):
    command = cli.commands[cmd]
    ws = next(p for p in command.params if p.name == "workspace")
    assert ws.envvar == "BESPOKE_WORKSPACE" and ws.default == "/workspace"


def test_check_shows_the_save_precision_saving(tmp_path):
    r = run("check", "--workspace", str(tmp_path))
    assert "save_precision=bf16 would halve the LoRA files: 9.10 GB instead of 18.20 GB" in r.output
    r = run("check", "--workspace", str(tmp_path), "--set", "save_precision=bf16")
    assert "LoRA files (10 x 0.91 GB)" in r.output and "would halve" not in r.output


def test_check_reports_the_profile(tmp_path):
    r = run("check", "--workspace", str(tmp_path), "--profile", "fast", env={"BESPOKE_CPP_WRAPPER": "0"})
    assert "fast: same math" in r.output
    r = run("check", "--workspace", str(tmp_path), "--profile", "fast",
            env={"BESPOKE_CPP_WRAPPER": None, "CUDA_HOME": str(tmp_path / "no-cuda")})
    assert "fast will launch its kernels from Python" in r.output and "cuda.h" in r.output
    r = run("check", "--workspace", str(tmp_path), "--profile", "turbo")
    assert "unknown profile 'turbo'" in r.output and r.exit_code == 1
