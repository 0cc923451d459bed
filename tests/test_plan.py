"""pipeline.plan: the whole launch decided as a value, with nothing written and no process started.

Each case builds a workspace, snapshots every file in it, plans, and checks the Launch and that the
snapshot is unchanged. bespoke.proc's spawn and run (the process seam) raise if anything calls them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bespoke import pipeline, proc, runs
from bespoke.errors import BespokeError
from bespoke.workspace import Workspace

H100 = ("NVIDIA H100 80GB HBM3", 79.2, (9, 0))
A100 = ("NVIDIA A100-SXM4-80GB", 79.2, (8, 0))
L4 = ("NVIDIA L4", 22.0, (8, 9))


def probed(card, count=1, xformers=True):
    """What bespoke.launch.gpuprobe answers on a pod with `count` such GPUs."""
    name, memory, capability = card
    return {"torch": "2.11.0", "device_count": count, "arch_list": ["sm_80", "sm_90"], "xformers": {"ok": xformers},
            "gpus": [{"index": i, "name": name, "memory_gb": memory, "capability": list(capability)}
                     for i in range(count)]}


@pytest.fixture
def ws(workspace, data_dir, tmp_path, monkeypatch) -> Workspace:
    sd = tmp_path / "sd-scripts"
    sd.mkdir()
    (sd / "sdxl_train_network.py").write_text("# never run\n")
    (sd / ".bespoke-commit").write_text("0" * 40)
    monkeypatch.setenv("SD_SCRIPTS_DIR", str(sd))
    for var in ("BESPOKE_SET", "BESPOKE_PROFILE", "BESPOKE_COMPILE", "HF_HOME", "HF_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("bespoke.preflight.compiler_problem", lambda: None)  # FAKE toolchain: cc and Python.h
    pipeline.prepare(workspace, data_dir, pipeline.PrepareOptions(resolution=(64, 64)))
    base = tmp_path / "base.safetensors"
    base.write_bytes(b"fake weights")
    monkeypatch.setenv("BESPOKE_SET", f"pretrained_model_name_or_path={base} resolution=64,64 max_train_epochs=2")

    def no_process(*a, **kw):
        raise AssertionError(f"plan started a process: {a}")

    monkeypatch.setattr(proc, "spawn", no_process)
    monkeypatch.setattr(proc, "run", no_process)
    return Workspace(workspace)


def overrides():
    import os

    return tuple(os.environ["BESPOKE_SET"].split())


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def states(ws: Workspace, complete_epoch: int) -> None:
    """An interrupted run: epoch N's LoRA and its complete state."""
    ws.output.mkdir(exist_ok=True)
    runs.numbered_file(ws.output, "bespoke_baby_sdxl", complete_epoch).write_bytes(b"lora")
    state = ws.output / f"bespoke_baby_sdxl-{complete_epoch:06d}-state"
    state.mkdir()
    for f in (*runs.STATE_FILES, "model.safetensors"):
        (state / f).write_text("{}")


def plan(ws, **kw):
    card = kw.pop("card", H100)
    count = kw.pop("count", 1)
    return pipeline.plan(ws, pipeline.TrainOptions(overrides=(*overrides(), *kw.pop("extra", ())), **kw),
                         probed(card, count))


@pytest.mark.parametrize("card, count, asked, profile, why, in_argv, not_in_argv", [
    (H100, 1, None, "fast", "default here: the same math", ["--sdpa", "fastsdxl.py"], ["--xformers"]),
    (A100, 1, None, "exact", "default here: fast is proven on Hopper", ["--xformers", "--gradient_checkpointing"],
     ["fastsdxl.py"]),
    (L4, 1, None, "exact", "default here: fast is proven on Hopper", ["--xformers"], ["--sdpa"]),
    (H100, 1, "exact", "exact", None, ["--xformers", "--gradient_checkpointing"], ["fastsdxl.py"]),
    (A100, 1, "fast", "fast", None, ["fastsdxl.py", "--vae_batch_size=8"], ["--gradient_checkpointing"]),
    (H100, 2, None, "fast", "default here", ["--multi_gpu", "--num_processes"], []),
])
def test_profile(ws, card, count, asked, profile, why, in_argv, not_in_argv):
    before = snapshot(ws.root)
    launch = plan(ws, card=card, count=count, profile=asked)
    assert launch.profile.name == profile
    assert (launch.profile_why is None) == (why is None) and (why is None or launch.profile_why.startswith(why))
    line = " ".join(launch.argv)
    assert all(a in line for a in in_argv) and not any(a in line for a in not_in_argv), line
    assert launch.gpus == count and launch.math.gpus == count
    assert launch.math.total_steps == 2 * launch.math.steps_per_epoch
    assert snapshot(ws.root) == before


@pytest.mark.parametrize("setup, extra, force, action, resume, note", [
    ("nothing", (), False, "fresh", None, ""),
    ("state 1", (), False, "resume", "bespoke_baby_sdxl-000001-state", "resuming from epoch 1"),
    ("done", (), False, "done", None, "already trained"),
    ("done", ("network_dim=64",), True, "fresh", None, "archiving the previous finished run"),
    ("run", ("network_dim=64",), True, "fresh", None, "archiving the previous unfinished run"),
])
def test_resume(ws, setup, extra, force, action, resume, note):
    key = plan(ws).key
    if setup == "state 1":
        states(ws, 1)
    elif setup in ("done", "run"):
        ws.output.mkdir(exist_ok=True)
        (ws.done_file if setup == "done" else ws.run_file).write_text(f'{{"run_key": "{key}"}}')
    before = snapshot(ws.root)
    launch = plan(ws, extra=extra, force=force)
    assert launch.run.action == action and launch.run.note.startswith(note)
    assert launch.run.archive == force
    resumes = [a for a in launch.recipe_argv if a.startswith("--resume=")]
    assert resumes == ([f"--resume={ws.output / resume}"] if resume else [])
    assert launch.key == key or extra  # the run's identity ignores --resume
    assert snapshot(ws.root) == before  # planned, not done: nothing archived, nothing written


def test_a_different_run_is_refused_without_force(ws):
    ws.output.mkdir(exist_ok=True)
    ws.done_file.write_text('{"run_key": "another"}')
    with pytest.raises(BespokeError, match="finished run with a different recipe"):
        plan(ws)


@pytest.mark.parametrize("dry_run, force", [(True, False), (True, True), (False, False)])
def test_dry_run(ws, dry_run, force):
    before = snapshot(ws.root)
    launch = plan(ws, dry_run=dry_run, force=force)
    lines = launch.lines()
    assert ("launch command:" in lines) == dry_run
    if dry_run:
        cmd = lines[lines.index("launch command:") + 1]
        assert cmd.startswith("cd ") and "HF_HOME=" in cmd and "accelerate.commands.launch" in cmd
    assert "  samples/epoch:   3 x 10 = 30" in lines and f"base model: {launch.model_local}" in lines
    assert launch.dry_run == dry_run and not launch.run.archive  # a dry run never plans to archive
    assert snapshot(ws.root) == before


def test_plan_refuses_what_cannot_start(ws, tmp_path):
    import shutil

    with pytest.raises(BespokeError, match="no CUDA GPU"):
        pipeline.plan(ws, pipeline.TrainOptions(overrides=overrides()), {"torch": "2.11.0", "device_count": 0, "gpus": []})
    shutil.rmtree(ws.training_data)
    with pytest.raises(BespokeError, match="no prepared data"):
        plan(ws)


def test_a_rig_plans_cpu_training_without_a_probe(ws, tmp_path):
    script = tmp_path / "wrapper.py"
    launch = pipeline.plan(ws, pipeline.TrainOptions(overrides=overrides()), {},
                           pipeline.Rig(script=script, sample_size=(32, 32)))
    argv = list(launch.argv)
    assert "--cpu" in argv and launch.gpus == 0 and launch.sample_size == (32, 32)
    assert argv[argv.index(str(script)) + 1].endswith("sdxl_train_network.py")  # the wrapper takes the script
