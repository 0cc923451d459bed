"""bespoke.notify against a loopback fake webhook: delivery, retries, a hanging and a failing endpoint."""

from __future__ import annotations

import time

import pytest

from bespoke import notify
from tests.fakes.webhook import FakeWebhook


def test_shape_follows_the_service():
    assert notify.shape("https://discord.com/api/webhooks/1/abc") == "discord"
    assert notify.shape("https://hooks.slack.com/services/T/B/x") == "slack"
    assert notify.shape("https://example.org/discord.com/api/webhooks/1") == "json"
    assert notify.shape("http://127.0.0.1:9/hook") == "json"


def test_payload_holds_the_run_facts_and_no_url():
    p = notify.payload("done", stage="done", epoch=10, step=10150, total=10150, message="10 LoRAs",
                       recommended_epoch=7, score=0.91234, elapsed_s=3000.04, pod_id="pod123")
    assert p["event"] == "done" and p["recommended_epoch"] == 7 and p["score"] == 0.9123
    assert p["elapsed_s"] == 3000.0 and p["pod_id"] == "pod123" and p["total_steps"] == 10150
    with pytest.raises(ValueError):
        notify.payload("exploded", stage="x")


def test_discord_and_slack_get_their_message_shape():
    p = notify.payload("photo_alarm", stage="training", epoch=3, step=30, total=100,
                       message="epoch 3: 0/4 pixel art", pod_id="abc")
    d = notify.body("https://discord.com/api/webhooks/1/x", p)
    assert set(d) == {"content", "username"}
    assert "photo alarm" in d["content"] and "pod abc" in d["content"] and "epoch 3" in d["content"]
    s = notify.body("https://hooks.slack.com/services/a/b/c", p)
    assert set(s) == {"text"} and s["text"] == d["content"]


def test_delivers_each_event_once():
    with FakeWebhook().running() as hook:
        n = notify.Notifier(hook.url, pod_id="p1")
        n.send("photo_alarm", stage="training", epoch=2, step=20, message="epoch 2: photo-like")
        n.send("done", stage="done", epoch=10, step=100, recommended_epoch=8, score=0.8)
        n.flush()
    assert sorted(r["event"] for r in hook.received) == ["done", "photo_alarm"]
    assert hook.attempts == 2 and sorted(n.sent) == ["done", "photo_alarm"]
    done = next(r for r in hook.received if r["event"] == "done")
    assert done["recommended_epoch"] == 8 and done["pod_id"] == "p1" and done["elapsed_s"] >= 0


def test_retries_a_500_then_delivers():
    with FakeWebhook(fail_first=2, status=500).running() as hook:
        n = notify.Notifier(hook.url, backoff=0.01)
        n.send("failed", stage="failed", message="sd-scripts failed")
        n.flush()
    assert hook.attempts == 3 and len(hook.received) == 1 and n.sent == ["failed"]


def test_gives_up_after_bounded_retries_and_warns_without_the_url():
    warnings = []
    with FakeWebhook(fail_first=99, status=500).running() as hook:
        n = notify.Notifier(hook.url + "?token=SECRET", backoff=0.01, warn=warnings.append)
        n.send("failed", stage="failed")
        n.flush()
    assert hook.attempts == notify.RETRIES and n.sent == []
    assert len(warnings) == 1 and "HTTP 500" in warnings[0] and "127.0.0.1" in warnings[0]
    assert "SECRET" not in warnings[0] and "/hook" not in warnings[0]


def test_a_client_error_is_not_retried():
    with FakeWebhook(fail_first=99, status=404).running() as hook:
        n = notify.Notifier(hook.url, backoff=0.01)
        n.send("done", stage="done")
        n.flush()
    assert hook.attempts == 1


def test_a_hanging_endpoint_never_blocks_send_and_flush_waits_at_most_the_timeout():
    warnings = []
    with FakeWebhook(hang=5.0).running() as hook:
        n = notify.Notifier(hook.url, timeout=0.6, attempt_timeout=0.3, backoff=0.05, warn=warnings.append)
        t0 = time.monotonic()
        n.send("interrupted", stage="interrupted")
        sent_in = time.monotonic() - t0
        n.flush()
        flushed_in = time.monotonic() - t0
    assert sent_in < 0.2  # send returns at once: the POST is on its own thread
    assert flushed_in < 0.6 + 0.3  # the run waits at most the timeout (plus scheduling slack)
    assert n.sent == [] and warnings and "not delivered" in warnings[0]


def test_nothing_happens_without_a_url():
    n = notify.from_env({})
    assert n.url is None and n.send("done", stage="done") is None
    n.flush()


def test_from_env_reads_url_and_pod():
    n = notify.from_env({"BESPOKE_NOTIFY_URL": " http://127.0.0.1:1/x ", "RUNPOD_POD_ID": "abc"})
    assert n.url == "http://127.0.0.1:1/x" and n.pod_id == "abc"


def test_a_refused_connection_is_a_warning():
    warnings = []
    hook = FakeWebhook()
    url = hook.url
    hook.server.server_close()  # nothing listens on the port now
    n = notify.Notifier(url, backoff=0.01, warn=warnings.append)
    n.send("done", stage="done")
    n.flush()
    assert n.sent == [] and len(warnings) == 1
