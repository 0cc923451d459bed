"""bespoke.publish: the file plan and model card as pure functions, the upload against a loopback fake Hub."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from safetensors.numpy import save_file

from bespoke import publish, recipe, runs
from bespoke.cli import cli
from bespoke.eval import evaluate
from bespoke.workspace import Workspace
from tests.fakes.hub import FakeHub
from tests.test_evaluate import NAME, pixel_art, write_sample, write_training_data

TOKEN = "hf_fakeTOKENfortests0123456789"


def finished_run(ws: Path, epochs: int = 2) -> Path:
    """A trained (DONE.json) and evaluated (report.json, best.safetensors) run, with real files."""
    out = ws / "output"
    write_training_data(ws)
    for e in range(epochs + 1):
        for p in range(2):
            write_sample(ws, e, p, pixel_art(p + e))
    for e in range(1, epochs + 1):
        path = runs.epoch_file(out, NAME, e, epochs)
        save_file({"w": np.full((2, 2), e, dtype=np.float16)}, str(path))
    argv = [f"--pretrained_model_name_or_path={ws}/.cache/huggingface/hub/models--stabilityai--"
            "stable-diffusion-xl-base-1.0/snapshots/abc/sd_xl_base_1.0.safetensors",
            f"--train_data_dir={ws}/training_data", f"--output_name={NAME}", "--network_dim=128",
            "--metadata_trigger_phrase=bespoke punk, bespoke baby",
            "--metadata_usage_hint=start with 'pixel art, 24x24'", "--gradient_checkpointing"]
    runs.finish(Workspace(ws), "key", NAME, epochs, {"recipe": argv, "dataset_hash": "d" * 64, "sd_scripts_commit": "48d368fa"})
    evaluate.evaluate(ws)
    return out


@pytest.fixture
def hub(monkeypatch):
    """The fake Hub, with huggingface_hub pointed at it as HF_ENDPOINT does (read once, at import)."""
    import huggingface_hub.constants

    fake = FakeHub()
    with fake.running():
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", fake.url)
        yield fake


def test_plan_lists_best_every_epoch_the_report_and_the_card(tmp_path):
    finished_run(tmp_path)
    p = publish.plan(Workspace(tmp_path), "me/bespoke-lora")
    assert p.private and p.repo == "me/bespoke-lora"
    assert p.files[:4] == ("best.safetensors", "best.safetensors.sha256",
                           f"{NAME}-000001.safetensors", f"{NAME}-000002.safetensors")
    assert {"report/contact-sheet.png", "report/report.html", "report/report.json", "README.md"} <= set(p.files)
    assert sum(f.startswith("sample/") for f in p.files) == 2  # the recommended epoch's samples, for the widgets
    only = publish.plan(Workspace(tmp_path), "me/bespoke-lora", best_only=True)
    assert not any(f.startswith(NAME) for f in only.files) and "best.safetensors" in only.files


def test_model_card_parses_as_yaml_front_matter_and_markdown(tmp_path):
    out = finished_run(tmp_path)
    card = publish.plan(Workspace(tmp_path), "me/bespoke-lora").card
    assert card.startswith("---\n")
    _, front, body = card.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["base_model"] == "stabilityai/stable-diffusion-xl-base-1.0"
    assert meta["instance_prompt"] == "bespoke punk, bespoke baby"
    assert meta["tags"] == ["text-to-image", "stable-diffusion-xl", "lora", "template:sd-lora"]
    assert [w["text"] for w in meta["widget"]] == list(recipe.TEST_PROMPTS[:2])
    assert all((out / w["output"]["url"]).is_file() for w in meta["widget"])
    assert body.lstrip().startswith(f"# {NAME}")
    assert "| 2 **(recommended)** |" in body and f"`{NAME}-000001.safetensors`" in body
    assert "--network_dim=128" in body and str(tmp_path) not in body  # the recipe, not the pod's paths


def test_plan_refuses_an_unfinished_run_and_a_bad_repo(tmp_path):
    with pytest.raises(publish.PublishError, match="no finished training"):
        publish.plan(Workspace(tmp_path), "me/x")
    with pytest.raises(publish.PublishError, match="OWNER/NAME"):
        publish.plan(Workspace(tmp_path), "no-slash")


def test_base_model_from_a_name_or_a_cache_path():
    assert publish.base_model("stabilityai/stable-diffusion-xl-base-1.0") == "stabilityai/stable-diffusion-xl-base-1.0"
    assert publish.base_model("/ws/.cache/hub/models--a--b/snapshots/x/m.safetensors") == "a/b"
    assert publish.base_model("/models/local.safetensors") is None


def test_upload_creates_a_private_repo_and_uploads_in_one_commit(tmp_path, hub):
    out = finished_run(tmp_path)
    p = publish.plan(Workspace(tmp_path), "me/bespoke-lora")
    url = publish.upload(Workspace(tmp_path), p, TOKEN)
    again = publish.upload(Workspace(tmp_path), p, TOKEN)  # rerunnable: the repo exists already
    assert hub.repos == {"me/bespoke-lora": {"private": True}}
    assert len(hub.commits) == 2 and url.startswith(hub.url) and again != url
    files = hub.commits[0]["files"]
    assert set(files) == set(p.files)
    assert files["best.safetensors"] == (out / "best.safetensors").read_bytes()
    assert files["README.md"].decode() == p.card
    assert hub.auth == {f"Bearer {TOKEN}"}
    assert hub.validated[0]["tags"] == list(publish.TAGS)


def test_cli_publish_takes_the_token_from_the_env_only_and_never_prints_it(tmp_path, hub):
    out = finished_run(tmp_path)
    r = CliRunner().invoke(cli, ["publish", "--workspace", str(tmp_path), "--repo", "me/x", "--best-only"],
                           env={"HF_TOKEN": TOKEN})
    assert r.exit_code == 0, r.output
    assert TOKEN not in r.output and "me/x" in r.output
    assert len(hub.commits) == 1 and "best.safetensors" in hub.commits[0]["files"]
    status = json.loads((out / "status.json").read_text())
    assert status["publish"]["state"] == "uploaded" and TOKEN not in (out / "status.json").read_text()
    assert all(TOKEN not in f.read_text(errors="ignore") for f in out.rglob("*") if f.is_file()
               and f.suffix in (".json", ".md", ".html", ".txt"))


def test_cli_publish_without_a_token_is_one_line(tmp_path):
    finished_run(tmp_path)
    r = CliRunner().invoke(cli, ["publish", "--workspace", str(tmp_path), "--repo", "me/x"], env={"HF_TOKEN": ""})
    assert r.exit_code == 1 and "HF_TOKEN is not set" in str(r.exception)


def test_a_failed_upload_is_recorded_and_can_be_rerun(tmp_path, hub):
    out = finished_run(tmp_path)
    hub.fail_commit = True
    env = {"HF_TOKEN": TOKEN}
    r = CliRunner().invoke(cli, ["publish", "--workspace", str(tmp_path), "--repo", "me/x"], env=env)
    assert r.exit_code == 1 and "upload to me/x failed" in str(r.exception)
    assert TOKEN not in str(r.exception) and TOKEN not in r.output
    status = json.loads((out / "status.json").read_text())
    assert status["publish"]["state"] == "failed" and "bespoke publish" in status["publish"]["fix"]
    hub.fail_commit = False
    r = CliRunner().invoke(cli, ["publish", "--workspace", str(tmp_path), "--repo", "me/x"], env=env)
    assert r.exit_code == 0, r.output
    assert json.loads((out / "status.json").read_text())["publish"]["state"] == "uploaded"
