"""`bespoke train` end to end with a FAKE sd-scripts child (tests/fakes/fake_kohya.py) replaying real output."""

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from bespoke import pipeline, proc, runs
from bespoke.errors import BespokeError, TrainingError
from bespoke.workspace import Workspace

FAKE = Path(__file__).parent / "fakes" / "fake_kohya.py"
REAL_SPAWN = proc.spawn
RECORDING = Path(__file__).parent / "data" / "kohya_cpu_epoch1.log"
RESUMED = Path(__file__).parent / "data" / "kohya_cpu_resume.log"


def fake_spawn(mode, seen=None, recording=None):
    """The process seam, replaced: run the fake child with the recipe's arguments."""

    def spawn(argv, env, cwd=None):
        i = next(i for i, a in enumerate(argv) if a.endswith("sdxl_train_network.py"))
        if seen is not None:
            seen.append(argv)
        return REAL_SPAWN([sys.executable, str(FAKE), str(recording or RECORDING), mode, *argv[i + 1:]], env, cwd)

    return spawn


@pytest.fixture
def ready(workspace, data_dir, tmp_path, monkeypatch):
    """A prepared workspace, a fake sd-scripts folder and a local base model file."""
    sd = tmp_path / "sd-scripts"
    sd.mkdir()
    (sd / "sdxl_train_network.py").write_text("# fake: never run, the seam runs tests/fakes/fake_kohya.py\n")
    (sd / ".bespoke-commit").write_text("0" * 40)
    monkeypatch.setenv("SD_SCRIPTS_DIR", str(sd))
    for var in ("HF_HOME", "HF_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_DATASETS_CACHE", "TORCH_HOME",
                "XDG_CACHE_HOME", "TRITON_CACHE_DIR", "BESPOKE_SET"):
        monkeypatch.delenv(var, raising=False)
    base = tmp_path / "base.safetensors"
    base.write_bytes(b"fake weights")
    pipeline.prepare(workspace, data_dir, pipeline.PrepareOptions(resolution=(64, 64)))
    return workspace, [f"pretrained_model_name_or_path={base}", "max_train_epochs=3", "resolution=64,64"]


def train(ws, spec):
    """pipeline.train on the CPU rig (no GPU probe), with the FAKE child at bespoke.proc.spawn, the one
    process seam."""
    options, mode, seen, recording, hooks = spec
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(proc, "spawn", fake_spawn(mode, seen, recording))
        return pipeline.train(ws, options, rig=pipeline.Rig(), **hooks)


def opts(overrides, mode="ok", **kw):
    seen, recording = kw.pop("seen", None), kw.pop("recording", None)
    hooks = {k: kw.pop(k) for k in ("on_line", "grace") if k in kw}
    return pipeline.TrainOptions(overrides=tuple(overrides), **kw), mode, seen, recording, hooks


def test_fresh_run_writes_loras_done_and_status(ready):
    ws, overrides = ready
    seen = []
    assert train(ws, opts(overrides, seen=seen)) == 0
    out = ws / "output"
    done = json.loads((out / "DONE.json").read_text())
    assert [e["file"] for e in done["epochs"]] == [
        "bespoke_baby_sdxl-000001.safetensors", "bespoke_baby_sdxl-000002.safetensors", "bespoke_baby_sdxl.safetensors"]
    assert all(len(e["sha256"]) == 64 for e in done["epochs"])
    assert (out / "bespoke_baby_sdxl-000003.safetensors").read_bytes() == b"fake lora epoch 3"  # the notes' name
    status = json.loads((out / "status.json").read_text())
    assert status["stage"] == "done" and status["total"] == 3 * 15  # 3 images x 10 / 2 = 15 steps an epoch
    argv = seen[0]
    assert "--cpu" in argv and "--mixed_precision" in argv and "--save_state" in argv
    assert "--sample_prompts=" + str(out / "sample-prompts.txt") in argv
    assert len((out / "sample-prompts.txt").read_text().splitlines()) == 4
    log = Path(status["log"])
    assert log.parent == out / "logs" and b"caching latents" in log.read_bytes()


def test_save_every_n_epochs_expects_only_the_saved_epochs(ready):
    ws, overrides = ready
    assert runs.saved_epochs(10, 4) == [4, 8, 10] and runs.saved_epochs(3, 1) == [1, 2, 3]
    assert train(ws, opts([*overrides, "save_every_n_epochs=2"])) == 0
    done = json.loads((ws / "output" / "DONE.json").read_text())
    assert [e["epoch"] for e in done["epochs"]] == [2, 3]


def test_fast_profile_without_a_compiler_stops_with_the_fix(ready, monkeypatch, tmp_path):
    ws, overrides = ready
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no cc, no gcc
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("BESPOKE_COMPILE", raising=False)
    with pytest.raises(BespokeError, match="fast compiles GPU kernels with Triton, which needs a C compiler") as e:
        train(ws, opts(overrides, profile="fast"))
    assert "BESPOKE_COMPILE=off" in str(e.value.fix) and "--profile exact" in str(e.value.fix)
    assert not Workspace(ws).run_file.exists()  # stopped before anything started


def test_second_run_after_done_is_a_no_op(ready, capsys):
    ws, overrides = ready
    train(ws, opts(overrides))
    before = (ws / "output" / "DONE.json").read_bytes()
    assert train(ws, opts(overrides, mode="fail:3")) == 0  # the child is never started
    assert (ws / "output" / "DONE.json").read_bytes() == before
    assert "nothing to do" in capsys.readouterr().out


def test_different_recipe_never_overwrites_a_finished_run(ready):
    ws, overrides = ready
    train(ws, opts(overrides))
    with pytest.raises(BespokeError, match="finished run with a different recipe"):
        train(ws, opts([*overrides, "network_dim=64"]))
    assert train(ws, opts([*overrides, "network_dim=64"], force=True)) == 0
    (archived,) = (ws / "archive").iterdir()
    assert (archived / "DONE.json").exists() and (archived / "bespoke_baby_sdxl.safetensors").exists()
    assert (ws / "output" / "dataset-preview.png").exists()  # the data's preview stays with the data


def _states(out, complete_epoch, partial_epoch):
    """What an interrupted run leaves: its finished epochs' LoRAs, their state, and a half-written state."""
    for e in range(1, complete_epoch + 1):
        (out / f"bespoke_baby_sdxl-{e:06d}.safetensors").write_bytes(b"earlier epoch")
    for e, files in ((complete_epoch, runs.STATE_FILES + ("model.safetensors",)), (partial_epoch, ("train_state.json",))):
        state = out / f"bespoke_baby_sdxl-{e:06d}-state"
        state.mkdir(parents=True)
        for f in files:
            (state / f).write_text("{}")


def test_resume_from_the_newest_complete_state(ready):
    ws, overrides = ready
    overrides = [o for o in overrides if not o.startswith("max_train_epochs")] + ["max_train_epochs=2"]
    out = ws / "output"
    with pytest.raises(TrainingError):
        train(ws, opts(overrides, mode="fail:1"))
    _states(out, 1, 2)  # epoch 1 finished; epoch 2's state was cut off mid-write
    seen = []
    assert train(ws, opts(overrides, seen=seen, recording=RESUMED)) == 0
    assert f"--resume={out / 'bespoke_baby_sdxl-000001-state'}" in seen[0]
    status = json.loads((out / "status.json").read_text())
    assert status["step"] == status["total"] == 30  # kohya's bar restarts at 0/20; bespoke counts the whole run


def test_resume_that_restarts_at_epoch_1_is_refused(ready):
    ws, overrides = ready
    overrides = [o for o in overrides if not o.startswith("max_train_epochs")] + ["max_train_epochs=2"]
    with pytest.raises(TrainingError):
        train(ws, opts(overrides, mode="fail:1"))
    _states(ws / "output", 1, 2)
    with pytest.raises(TrainingError, match="resumed at epoch 1/2, expected 2/2"):
        train(ws, opts(overrides, recording=RECORDING))  # replays a run that starts at epoch 1


def test_failure_maps_to_a_known_fix(ready, tmp_path, monkeypatch):
    ws, overrides = ready
    oom = tmp_path / "oom.log"
    oom.write_bytes(RECORDING.read_bytes() + b"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB\n")
    monkeypatch.setattr(sys.modules[__name__], "RECORDING", oom)
    with pytest.raises(TrainingError) as e:
        train(ws, opts(overrides, mode="fail:1"))
    assert "out of memory" in e.value.what and "train_batch_size=1" in e.value.fix and "train-" in e.value.where
    status = json.loads((ws / "output" / "status.json").read_text())
    assert status["stage"] == "failed" and "OutOfMemoryError" in status["last_error"]


def test_sigterm_is_forwarded_and_recorded(ready):
    ws, overrides = ready
    sent = []

    def terminate_once_running(line):  # as `docker stop` would, once sd-scripts is under way
        if "caching latents" in line and not sent:
            sent.append(line)
            os.kill(os.getpid(), signal.SIGTERM)

    code = train(ws, opts(overrides, mode="hang", grace=10, on_line=terminate_once_running))
    assert sent and code == 143
    assert (ws / "output" / "fake-got-sigterm").read_text() == str(int(signal.SIGTERM))
    status = json.loads((ws / "output" / "status.json").read_text())
    assert status["stage"] == "interrupted" and "interrupted at step" in status["message"]


def gpu_probe(name, memory_gb, capability):
    """What bespoke.launch.gpuprobe answers on a one-GPU pod (its own process: the seam, replaced by this answer)."""
    return {"torch": "2.11.0", "device_count": 1, "arch_list": ["sm_90"], "xformers": {"ok": True},
            "gpus": [{"index": 0, "name": name, "memory_gb": memory_gb, "capability": list(capability)}]}


@pytest.mark.parametrize("card, asked, expect", [
    (("NVIDIA H100 80GB HBM3", 79.2, (9, 0)), None, "fast"),
    (("NVIDIA A100-SXM4-80GB", 79.2, (8, 0)), None, "exact"),
    (("NVIDIA H100 80GB HBM3", 79.2, (9, 0)), "exact", "exact"),
])
def test_the_default_profile_follows_the_gpu(ready, capsys, monkeypatch, card, asked, expect):
    ws, overrides = ready
    monkeypatch.delenv("BESPOKE_PROFILE", raising=False)
    monkeypatch.setattr("bespoke.preflight.compiler_problem", lambda: None)  # FAKE toolchain: cc and Python.h
    monkeypatch.setattr(proc, "spawn", fake_spawn("fail:9"))
    o = pipeline.TrainOptions(overrides=tuple(overrides), dry_run=True, profile=asked)
    assert pipeline.train(ws, o, probed=gpu_probe(*card)) == 0
    out = capsys.readouterr().out
    (cmd,) = [line for line in out.splitlines() if "accelerate.commands.launch" in line]
    assert f"profile: {expect} (" in out
    assert ("fastsdxl.py" in cmd and "--sdpa" in cmd) == (expect == "fast")
    assert ("--gradient_checkpointing" in cmd and "--xformers" in cmd) == (expect == "exact")
    if asked is None:
        assert "default here: " in out


def test_dry_run_prints_math_and_one_command_and_starts_nothing(ready, capsys):
    ws, overrides = ready
    assert train(ws, opts(overrides, mode="fail:9", dry_run=True)) == 0
    out = capsys.readouterr().out
    assert "3 x 10 = 30" in out and "15 x 3 epochs = 45" in out
    (cmd,) = [line for line in out.splitlines() if "accelerate.commands.launch" in line]
    assert cmd.startswith("cd ") and "HF_HOME=" in cmd and "--network_dim=128" in cmd
    assert not (ws / "output" / "run.json").exists()
