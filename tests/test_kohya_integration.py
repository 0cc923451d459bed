"""The real sd-scripts: the flag list and the whole smoke pipeline. Marked `kohya`: they need sd-scripts
(SD_SCRIPTS_DIR) and its environment (torch, sd-scripts' requirements).

Enable with:  make kohya-env sd-scripts && SD_SCRIPTS_DIR=.cache/sd-scripts .venv-kohya/bin/pytest -m kohya
"""

import importlib.util
import json
import os
import re
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
    code = ("import json, sys; from bespoke.launch import gpuprobe; out = gpuprobe.probe(imports_only=True); "
            "print(json.dumps([sorted(out), 'bitsandbytes' in sys.modules]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    keys, imported = json.loads(r.stdout.strip().splitlines()[-1])
    assert "device_count" in keys and "xformers" in keys and "bitsandbytes" not in keys and not imported


def test_compiled_blocks_train_like_eager_ones():
    """The fast and lean profiles' launcher: compiled blocks, LoRA traced in, under gradient checkpointing
    (made non-reentrant); sampling under no_grad runs the eager blocks and compiles nothing."""
    r = subprocess.run([sys.executable, str(ROOT / "tests" / "scripts" / "compiled_blocks.py"), SD],
                       capture_output=True, text=True)
    # the JSON line, then the launcher's graph count at exit
    line = next((x for x in reversed(r.stdout.splitlines()) if x.startswith("{")), None)
    assert line is not None, r.stderr[-2000:]
    got = json.loads(line)
    assert got["failed"] == [] and r.returncode == 0, (got, r.stderr[-2000:])
    assert got["compiled_loss"] == pytest.approx(got["eager_loss"], rel=1e-5)


def test_flat_optimizer_and_bucketed_reduce_compute_what_they_replace():
    """The fast profile's fewer launches (bespoke/launch/fewsteps.py): bitsandbytes' AdamW8bit over flat groups
    gives the per-tensor result bit for bit, also after a resume, and one all-reduce the per-tensor mean."""
    r = subprocess.run([sys.executable, str(ROOT / "tests" / "scripts" / "flat_step.py"), SD],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["flat_groups"] == 2 and got["members"] == [4, 2]  # the gradient-less tensor stays outside
    assert got["param_diff"] == 0.0 and got["state_diff"] == 0.0 and got["resume_param_diff"] == 0.0
    assert got["no_grad_untouched"] and got["member_grads_cleared"] and got["state_entries"] == 2
    assert got["one_process_grad_kept"] and got["reduce_diff"] == [0.0, 0.0]


@pytest.mark.slow
def test_flat_step_trains_the_same_lora(tmp_path):
    """sd-scripts' real loop on the tiny SDXL (CPU, AdamW8bit, TE LoRA, one epoch of 20 steps): the flat
    optimizer's LoRA equals the per-tensor one, tensor for tensor, bit for bit."""
    from safetensors.torch import load_file

    from bespoke import demo, pipeline, smoke, tokens
    from bespoke.launch import tinysdxl

    ckpt = tinysdxl.build_checkpoint(Path(SD), tmp_path / "tiny.safetensors")
    demo.write_demo_data(tmp_path / "data", smoke.IMAGES, seed=0)
    overrides = (*smoke.OVERRIDES[:-1], "max_train_epochs=1", f"pretrained_model_name_or_path={ckpt}",
                 "sample_every_n_epochs=100")
    loras = {}
    for name, script in (("per-tensor", ROOT / "bespoke" / "launch" / "tinysdxl.py"),
                         ("flat", ROOT / "tests" / "scripts" / "flat_train.py")):
        ws = tmp_path / name
        tokens.ensure(tokens.default_dir(ws))
        pipeline.prepare(ws, tmp_path / "data", pipeline.PrepareOptions(resolution=smoke.RESOLUTION, expect=smoke.IMAGES))
        lines = []
        code = pipeline.train(ws, pipeline.TrainOptions(overrides=overrides),
                              rig=pipeline.Rig(script=script, sample_size=smoke.RESOLUTION), on_line=lines.append)
        assert code == 0, "\n".join(lines[-30:])
        flat = [line for line in lines if "bespoke: AdamW8bit updates" in line]
        assert (name == "flat") == bool(flat), flat
        if flat:  # every LoRA tensor with a gradient; the TE1 layer SDXL skips has none
            assert re.search(r"updates \d{3,} tensors as 2 flat groups", flat[0]), flat[0]
        loras[name] = load_file(next((ws / "output").glob("*.safetensors")))
    a, b = loras["per-tensor"], loras["flat"]
    assert a.keys() == b.keys() and len(a) > 100
    assert all(a[k].equal(b[k]) for k in a)
    moved = [k for k in a if k.endswith("lora_up.weight") and a[k].abs().sum() > 0]
    assert moved  # the up weights start at zero: the run trained


@pytest.mark.slow
def test_smoke_pipeline(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bespoke", "smoke-test", "--workspace", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "smoke test passed" in r.stdout and "FAIL" not in r.stdout.split("smoke checks:")[1]
    done = json.loads((tmp_path / "output" / "DONE.json").read_text())
    assert [e["epoch"] for e in done["epochs"]] == [1, 2]


def test_compile_artifacts_warm_an_empty_cache(tmp_path):
    """bespoke/launch/compilecache.py: what one process compiled, kept as one file, spares a process with an
    empty TORCHINDUCTOR_CACHE_DIR every inductor and AOTAutograd compile; a damaged file is a cold compile."""
    script = str(ROOT / "tests" / "scripts" / "compile_artifacts.py")
    kept = tmp_path / "kept" / "bespoke-artifacts" / "k.bin"

    def run(what, cache, path):
        r = subprocess.run([sys.executable, script, what, str(path)], capture_output=True, text=True,
                           env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / cache),
                                "PYTHONPATH": str(ROOT)})
        assert r.returncode == 0, r.stderr[-2000:]
        return json.loads(r.stdout.strip().splitlines()[-1])

    cold = run("save", "a", kept)
    assert cold["said"].startswith("compile artifacts saved") and cold.get("inductor.fxgraph_cache_miss", 0) > 0
    assert kept.with_suffix(".sha256").read_text().strip() and kept.stat().st_size > 0
    blob = kept.read_bytes()
    warm = run("reload", "b", kept)
    assert warm["said"].startswith("compile artifacts loaded") and warm["grad"] == cold["grad"]
    # it compiled nothing new: its save keeps the file (a run that fails at step 1 must not shrink it)
    assert warm["saved"].startswith("compile artifacts kept as they were") and kept.read_bytes() == blob
    assert warm.get("inductor.fxgraph_cache_hit", 0) == cold["inductor.fxgraph_cache_miss"]
    assert warm.get("inductor.fxgraph_cache_miss", 0) == 0 and warm.get("aot_autograd.autograd_cache_hit", 0) > 0
    damaged = tmp_path / "damaged.bin"
    damaged.write_bytes(kept.read_bytes()[:-1] + b"\0")
    damaged.with_suffix(".sha256").write_bytes(kept.with_suffix(".sha256").read_bytes())
    from bespoke.launch import compilecache

    assert "do not match their sha256" in compilecache.load(damaged)
    assert compilecache.load(tmp_path / "none.bin").startswith("no compile artifacts yet")
