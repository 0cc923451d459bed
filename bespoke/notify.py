"""A notification when the run ends or raises its photo alarm: one JSON POST to BESPOKE_NOTIFY_URL.

Discord and Slack webhook URLs get their own message shape; any other URL gets bespoke's JSON. Each
notification goes out on its own thread with a short, bounded budget of retries, so a slow or broken
endpoint never blocks or fails the training: `flush` waits for what is in flight at most `timeout`
seconds. The payload holds no secret, and the URL (a webhook URL is a credential) is never printed.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bespoke import __version__, masking

EVENTS = ("done", "failed", "interrupted", "photo_alarm")
ATTEMPT_TIMEOUT = 5.0  # seconds for one POST
TOTAL_TIMEOUT = 10.0  # seconds for all the attempts of one notification, and the most `flush` waits
RETRIES = 3
BACKOFF = 0.5  # seconds before the second attempt, doubling


def shape(url: str) -> str:
    """'discord', 'slack' or 'json': which message shape the URL's service takes."""
    parts = urlsplit(url)
    host, path = (parts.hostname or "").lower(), parts.path
    if host in ("discord.com", "discordapp.com", "ptb.discord.com", "canary.discord.com") \
            and path.startswith("/api/webhooks/"):
        return "discord"
    if host == "hooks.slack.com":
        return "slack"
    return "json"


def payload(event: str, *, stage: str, epoch: int | None = None, step: int | None = None,
            total: int | None = None, message: str = "", recommended_epoch: int | None = None,
            score: float | None = None, elapsed_s: float | None = None, pod_id: str | None = None) -> dict:
    """bespoke's JSON body: what happened, where the run stands, and the recommendation if any."""
    if event not in EVENTS:
        raise ValueError(f"unknown notification event {event!r}")
    return {
        "source": "bespoke", "version": __version__, "event": event, "stage": stage, "epoch": epoch,
        "step": step, "total_steps": total, "message": message, "recommended_epoch": recommended_epoch,
        "score": None if score is None else round(score, 4),
        "elapsed_s": None if elapsed_s is None else round(elapsed_s, 1), "pod_id": pod_id,
    }


def text(p: dict) -> str:
    """One or two lines for a chat message."""
    where = f" on pod {p['pod_id']}" if p["pod_id"] else ""
    head = {"done": "finished", "failed": "failed", "interrupted": "was interrupted",
            "photo_alarm": "raised the photo alarm"}[p["event"]]
    facts = []
    if p["epoch"] is not None:
        facts.append(f"epoch {p['epoch']}")
    if p["step"] is not None:
        facts.append(f"step {p['step']}" + (f"/{p['total_steps']}" if p["total_steps"] else ""))
    if p["recommended_epoch"] is not None:
        facts.append(f"recommended epoch {p['recommended_epoch']}"
                     + ("" if p["score"] is None else f" (score {p['score']:.2f})"))
    if p["elapsed_s"] is not None:
        facts.append(f"{p['elapsed_s'] / 60:.1f} min")
    line = f"bespoke {head}{where}" + (f": {', '.join(facts)}" if facts else "")
    return f"{line}\n{p['message']}" if p["message"] else line


def body(url: str, p: dict) -> dict:
    kind = shape(url)
    if kind == "discord":
        return {"content": text(p)[:2000], "username": "bespoke"}
    if kind == "slack":
        return {"text": text(p)}
    return p


def post(url: str, data: dict, timeout: float) -> int:
    """One POST; returns the HTTP status (the seam tests replace by pointing the URL at a loopback server)."""
    req = urllib.request.Request(url, data=json.dumps(data).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "User-Agent": f"bespoke/{__version__}"})
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError("not an http(s) URL")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


@dataclass
class Notifier:
    """Sends notifications on background threads. With no URL it does nothing."""

    url: str | None
    pod_id: str | None = None
    timeout: float = TOTAL_TIMEOUT
    attempt_timeout: float = ATTEMPT_TIMEOUT
    retries: int = RETRIES
    backoff: float = BACKOFF
    warn: object = None  # called with one line when a notification could not be delivered
    started: float = field(default_factory=time.monotonic)
    events: list[str] = field(default_factory=list)  # events queued, in order
    sent: list[str] = field(default_factory=list)  # events delivered (2xx), in order of delivery
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, event: str, **fields) -> threading.Thread | None:
        """Queue one notification and return at once; elapsed time and pod id are filled in."""
        if not self.url:
            return None
        self.events.append(event)
        fields.setdefault("elapsed_s", time.monotonic() - self.started)
        p = payload(event, pod_id=self.pod_id, **fields)
        t = threading.Thread(target=self._deliver, args=(event, body(self.url, p)), daemon=True,
                             name=f"bespoke-notify-{event}")
        self._threads.append(t)
        t.start()
        return t

    def _deliver(self, event: str, data: dict) -> None:
        deadline = time.monotonic() + self.timeout
        problem = "no attempt"
        for attempt in range(self.retries):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                status = post(self.url, data, min(self.attempt_timeout, left))
            except (OSError, ValueError) as e:  # refused, timed out, DNS, a malformed URL
                problem = type(e).__name__ if not str(e) else str(getattr(e, "reason", e))
                problem = masking.mask_text(problem, [p for p in (urlsplit(self.url).password,) if p])
            except Exception as e:  # noqa: BLE001  (http.client's InvalidURL and kin: a thread never raises;
                problem = type(e).__name__  # their text may quote the URL, with its password)
            else:
                if 200 <= status < 300:
                    with self._lock:
                        self.sent.append(event)
                    return
                problem = f"HTTP {status}"
                if 400 <= status < 500 and status != 429:
                    break  # the endpoint refuses this message: retrying will not help
            pause = self.backoff * 2 ** attempt
            if attempt + 1 < self.retries and time.monotonic() + pause < deadline:
                time.sleep(pause)
        if self.warn:
            host = urlsplit(self.url).hostname or "?"
            self.warn(f"notification '{event}' to {host} not delivered ({problem}); the run goes on")

    def flush(self) -> None:
        """Wait for notifications in flight, at most `timeout` seconds in all."""
        deadline = time.monotonic() + self.timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads = [t for t in self._threads if t.is_alive()]


def from_env(environ: dict[str, str], warn=None) -> Notifier:
    """BESPOKE_NOTIFY_URL and RunPod's pod id."""
    url = (environ.get("BESPOKE_NOTIFY_URL") or "").strip() or None
    return Notifier(url, pod_id=environ.get("RUNPOD_POD_ID") or None, warn=warn)
