"""What `bespoke train` tells the world: notifications, TensorBoard, the LoRA's metadata, the estimate.

sd-scripts is the FAKE child of tests/test_train.py; the webhook is a loopback FAKE (tests/fakes/webhook.py).
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from bespoke import pipeline, proc, tblog
from bespoke.errors import BespokeError
from bespoke.workspace import Workspace
from tests import test_train
from tests.fakes.webhook import FakeWebhook
from tests.test_evaluate import photo, write_sample
from tests.test_tblog import read_events, tags
from tests.test_train import fake_spawn, gpu_probe, opts, train

ready = test_train.ready  # the prepared workspace fixture, shared


@pytest.fixture
def hook(monkeypatch):
    fake = FakeWebhook()
    with fake.running():
        monkeypatch.setenv("BESPOKE_NOTIFY_URL", fake.url)
        monkeypatch.setenv("RUNPOD_POD_ID", "pod-xyz")
        yield fake


def events(hook):
    return [r["event"] for r in hook.received]


def test_done_is_notified_once_and_a_no_op_says_nothing(ready, hook):
    ws, overrides = ready
    assert train(ws, opts(overrides)) == 0
    assert train(ws, opts(overrides)) == 0  # DONE: nothing to do, nothing to say
    assert events(hook) == ["done"]
    (done,) = hook.received
    assert done["pod_id"] == "pod-xyz" and done["step"] == 45 and done["total_steps"] == 45
    assert done["elapsed_s"] >= 0 and "HF_TOKEN" not in json.dumps(done)


def test_failed_and_interrupted_are_notified(ready, hook):
    ws, overrides = ready
    with pytest.raises(BespokeError):
        train(ws, opts(overrides, mode="fail:3"))
    sent = []

    def terminate(line):
        if "caching latents" in line and not sent:
            sent.append(line)
            os.kill(os.getpid(), signal.SIGTERM)

    assert train(ws, opts(overrides, mode="hang", grace=10, on_line=terminate)) == 143
    assert events(hook) == ["failed", "interrupted"]
    assert "sd-scripts failed" in hook.received[0]["message"] or "exit 3" in hook.received[0]["message"]


def test_photo_like_samples_raise_the_alarm_in_the_log_tensorboard_and_a_notification(ready, hook):
    ws, overrides = ready
    for epoch in range(4):  # what sd-scripts' sampler leaves; the fake child writes only LoRAs
        for p in range(4):
            write_sample(ws, epoch, p, photo(10 * epoch + p).resize((64, 64)))
    assert train(ws, opts(overrides)) == 0
    assert events(hook).count("photo_alarm") == 3 and events(hook).count("done") == 1
    t = tags(read_events(Workspace(ws).board))
    label = tblog.prompt_label(0, pipeline.recipe.TEST_PROMPTS)
    assert [s for s, _ in t[f"sample/{label}"]] == [0, 15, 30, 45]  # base model, epochs 1-3 (15 steps each)
    assert [s for s, _ in t[f"sprite/{label}"]] == [0, 15, 30, 45]
    assert [s for s, _ in t["alarm/text_summary"]] == [15, 30, 45]
    status = json.loads((ws / "output" / "status.json").read_text())
    assert len(status["alarms"]) == 3


def test_the_lora_gets_trigger_words_and_provenance_from_the_prepared_data(ready):
    ws, overrides = ready
    seen = []
    assert train(ws, opts(overrides, seen=seen)) == 0
    args = dict(a[2:].split("=", 1) for a in seen[0] if a.startswith("--metadata_"))
    assert args["metadata_title"] == "bespoke_baby_sdxl"
    assert args["metadata_trigger_phrase"] == "bespoke punk, bespoke baby"
    assert "pixel art, 24x24" in args["metadata_usage_hint"]
    assert "3 images" in args["metadata_description"] and "profile exact" in args["metadata_description"]


def test_dry_run_without_torch_sd_scripts_or_a_gpu_prints_math_command_and_estimate(ready, capsys, monkeypatch):
    ws, overrides = ready
    monkeypatch.setenv("SD_SCRIPTS_DIR", str(ws / "no-sd-scripts"))
    o = pipeline.TrainOptions(overrides=tuple(overrides), dry_run=True, gpus=2, price_per_hour=4.0)
    assert pipeline.train(ws, o, probed={"torch": None}) == 0
    out = capsys.readouterr().out
    assert "planning for 2 GPU(s) (--gpus)" in out and "15 x 3 epochs" not in out  # 2 GPUs: 8 steps an epoch
    assert "8 x 3 epochs = 24" in out
    assert "estimate:        24 steps x" in out and "assumed" in out and "cost:" in out
    assert "$SD_SCRIPTS_DIR/sdxl_train_network.py" in out


def test_dry_run_on_an_unknown_card_waits_for_steps(ready, capsys):
    ws, overrides = ready
    o = pipeline.TrainOptions(overrides=tuple(overrides), dry_run=True)
    assert pipeline.train(ws, o, probed=gpu_probe("NVIDIA A40", 44.4, (8, 6))) == 0
    out = capsys.readouterr().out
    assert "no measured s/step for NVIDIA A40 (exact)" in out and "after 20 steps" in out


def test_run_says_done_with_the_recommendation_and_publishes_when_asked(ready, hook, data_dir, monkeypatch,
                                                                        capsys):
    """check -> prepare -> train -> evaluate -> publish; publish has no token here: a warning, not a failure."""
    ws, overrides = ready
    probed = {**gpu_probe("NVIDIA H200", 139.8, (9, 0)), "xformers": {"ok": True, "version": "0.0.35"},
              "bitsandbytes": {"ok": True, "version": "0.50.2"}}
    monkeypatch.setattr("bespoke.preflight.probe", lambda **kw: probed)  # its process seam: torch in a child
    monkeypatch.setattr(proc, "spawn", fake_spawn("ok"))  # sd-scripts: the FAKE child
    monkeypatch.setenv("BESPOKE_PROFILE", "exact")
    monkeypatch.setenv("BESPOKE_HUB_REPO", "me/bespoke-lora")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    for epoch in range(4):
        for p in range(2):
            write_sample(ws, epoch, p, photo(p).resize((64, 64)))
    topts = pipeline.TrainOptions(overrides=tuple(overrides))
    popts = pipeline.PrepareOptions(resolution=(64, 64))
    try:
        code = pipeline.run(ws, data_dir, popts, topts)
    except BespokeError as e:
        pytest.fail(f"run failed: {e.line()}\n{capsys.readouterr().out}")
    assert code == 0
    out = capsys.readouterr().out
    assert "== publish to me/bespoke-lora" in out and "HF_TOKEN is not set" in out
    # said before the training too, in check's table, as a warning: the training goes on
    assert "BESPOKE_HUB_REPO: HF_TOKEN is not set: the upload after training will fail" in out
    status = json.loads((ws / "output" / "status.json").read_text())
    assert status["stage"] == "done" and status["publish"]["state"] == "failed"
    assert events(hook).count("done") == 1 and events(hook).count("photo_alarm") == 3
    done = next(r for r in hook.received if r["event"] == "done")
    assert done["recommended_epoch"] is None and "no trained epoch" in done["message"]
    t = tags(read_events(Workspace(ws).board))
    assert "report/contact_sheet" in t and "report/recommendation/text_summary" in t
