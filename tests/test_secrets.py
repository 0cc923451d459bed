"""Secrets through a whole (FAKE-child) training run: never printed, never in a file, not in the run's identity.

The child is tests/fakes/fake_kohya.py (a fake at the process boundary) replaying a real kohya log into
which a token has been spliced, as sd-scripts would print it in a traceback or an args dump.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from bespoke import pipeline, proc, recipe, runs
from bespoke.masking import mask_argv

FAKE = Path(__file__).parent / "fakes" / "fake_kohya.py"
RECORDING = Path(__file__).parent / "data" / "kohya_cpu_epoch1.log"
ARG_TOKEN = "hf_" + "ArgTokenQ1" * 4
OTHER_TOKEN = "hf_" + "OtherTokenZ2" * 4
ENV_TOKEN = "hf_" + "EnvTokenW3" * 4
WANDB = "wandbkey" * 5


def everything_written(root: Path) -> bytes:
    out = b""
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            p = Path(dirpath, name)
            if p.is_file() and not p.is_symlink():
                out += p.read_bytes() + os.fsencode(p)
    return out


@pytest.fixture
def ready(workspace, data_dir, tmp_path, monkeypatch):
    sd = tmp_path / "sd-scripts"
    sd.mkdir()
    (sd / "sdxl_train_network.py").write_text("# fake: never run\n")
    (sd / ".bespoke-commit").write_text("0" * 40)
    monkeypatch.setenv("SD_SCRIPTS_DIR", str(sd))
    monkeypatch.setenv("HF_TOKEN", ENV_TOKEN)
    for var in ("HF_HOME", "HF_HUB_CACHE", "TRANSFORMERS_CACHE", "BESPOKE_SET", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    base = tmp_path / "base.safetensors"
    base.write_bytes(b"fake weights")
    pipeline.prepare(workspace, data_dir, pipeline.PrepareOptions(resolution=(64, 64)))
    recording = tmp_path / "recording.log"  # the real log, with the child printing both tokens
    recording.write_bytes(RECORDING.read_bytes() + f"\nargs: token={ARG_TOKEN} env={ENV_TOKEN} w={WANDB}\r\n".encode())
    return workspace, recording, [f"pretrained_model_name_or_path={base}", "max_train_epochs=2", "resolution=64,64"]


def train(ws, recording, overrides, seen_env=None, dry_run=False):
    """pipeline.train on the CPU rig with the FAKE child at bespoke.proc.spawn, the one process seam."""
    real_spawn = proc.spawn

    def spawn(argv, env, cwd=None):
        if seen_env is not None:
            seen_env.append((argv, env))
        i = next(i for i, a in enumerate(argv) if a.endswith("sdxl_train_network.py"))
        return real_spawn([sys.executable, str(FAKE), str(recording), "ok", *argv[i + 1:]], env, cwd)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(proc, "spawn", spawn)
        return pipeline.train(ws, pipeline.TrainOptions(overrides=tuple(overrides), dry_run=dry_run),
                              rig=pipeline.Rig())


def test_tokens_reach_the_child_by_environment_and_nowhere_else(ready, capsys, tmp_path):
    ws, recording, overrides = ready
    seen = []
    secret_sets = [f"huggingface_token={ARG_TOKEN}", f"wandb_api_key={WANDB}"]
    assert train(ws, recording, [*overrides, *secret_sets], seen) == 0
    argv, env = seen[0]
    assert env["HF_TOKEN"] == ARG_TOKEN and env["WANDB_API_KEY"] == WANDB  # sd-scripts reads these itself
    assert not any(ARG_TOKEN in a or WANDB in a for a in argv)
    printed = capsys.readouterr()
    written = everything_written(tmp_path / "ws")
    for secret in (ARG_TOKEN, ENV_TOKEN, WANDB):
        assert secret not in printed.out + printed.err
        assert secret.encode() not in written, f"{secret[:6]}... written to the workspace"
    log = next((ws / "output" / "logs").glob("train-*.log")).read_text()
    assert "args: token=*** env=*** w=***" in log  # the child's own line, kept, with the secrets masked
    assert json.loads((ws / "output" / "DONE.json").read_text())["run_key"]


def test_the_run_identity_does_not_depend_on_the_token(ready, capsys):
    ws, recording, overrides = ready
    assert train(ws, recording, [*overrides, f"huggingface_token={ARG_TOKEN}"]) == 0
    done = (ws / "output" / "DONE.json").read_bytes()
    # another token, same recipe and data: the same run, done already (a new identity would refuse)
    assert train(ws, recording, [*overrides, f"huggingface_token={OTHER_TOKEN}"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert (ws / "output" / "DONE.json").read_bytes() == done
    r1 = recipe.build(ws, [f"huggingface_token={ARG_TOKEN}"], tokenizer_dir=ws)
    r2 = recipe.build(ws, [f"huggingface_token={OTHER_TOKEN}"], tokenizer_dir=ws)
    assert runs.run_key(r1.argv(), "d") == runs.run_key(r2.argv(), "d")


def test_a_dry_run_prints_no_secret(ready, capsys):
    ws, recording, overrides = ready
    assert train(ws, recording, [*overrides, f"huggingface_token={ARG_TOKEN}"], dry_run=True) == 0
    out = capsys.readouterr().out
    assert "launch command:" in out and ARG_TOKEN not in out and ENV_TOKEN not in out
    assert "huggingface_token" in out  # it says where the token went


@pytest.mark.parametrize("text", [f"learning_rate={ARG_TOKEN}", f"huggingface_token={ARG_TOKEN}\x1b",
                                  ARG_TOKEN, f"my_secret={ARG_TOKEN}", f"optimizer_args='{ARG_TOKEN}"])
def test_an_override_error_never_quotes_a_token(text):
    with pytest.raises(recipe.RecipeError) as e:
        recipe.parse_override(text)
    assert ARG_TOKEN not in e.value.line()


def test_the_command_echo_masks_what_it_cannot_move():
    line = mask_argv(["bespoke", "run", "--set", f"huggingface_token={ARG_TOKEN}", "--set", f"note={ENV_TOKEN}"],
                     [ENV_TOKEN])
    assert ARG_TOKEN not in " ".join(line) and ENV_TOKEN not in " ".join(line)
