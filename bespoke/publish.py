"""Results off the pod: the LoRAs, the report and a model card to a Hugging Face repo, in one commit.

`plan` and `model_card` are pure: what a finished, evaluated run in $WS/output would upload, and the
README.md the Hub shows for it. `upload` does the HTTP through huggingface_hub (create_repo, then one
upload_folder with allow patterns). The token is HF_TOKEN's and only HF_TOKEN's; it is never written,
printed or put in an error. A failed upload is recorded in status.json and can simply be rerun.
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bespoke.errors import BespokeError
from bespoke.fsutil import atomic_write_json, atomic_write_text, read_json_object
from bespoke.workspace import Workspace

TAGS = ("text-to-image", "stable-diffusion-xl", "lora", "template:sd-lora")
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


class PublishError(BespokeError):
    """The upload cannot start or failed; training's results are untouched."""


@dataclass(frozen=True)
class Plan:
    repo: str
    files: tuple[str, ...]  # paths relative to $WS/output, uploaded under the same names
    card: str  # README.md's text
    private: bool = True


def check_repo(repo: str) -> str:
    if not REPO_ID.match(repo or ""):
        raise PublishError(f"'{repo}' is not a Hub repo id", "--repo", "write it as OWNER/NAME, e.g. you/bespoke-lora")
    return repo


def recipe_args(argv: list[str]) -> dict[str, object]:
    """DONE.json's sd-scripts argv as {name: value}; bare flags are True."""
    out: dict[str, object] = {}
    for a in argv:
        if a.startswith("--"):
            name, sep, value = a[2:].partition("=")
            out[name] = value if sep else True
    return out


def base_model(value: str | None) -> str | None:
    """The Hub id of the base model: as named, or recovered from a Hub cache path (models--A--B)."""
    if not value:
        return None
    if m := re.search(r"models--([^/]+?)--([^/]+)", value):
        return f"{m[1]}/{m[2]}"
    return value if REPO_ID.match(value) else None


def _rel(path: str | None, output: Path) -> str | None:
    if not path:
        return None
    p = Path(path)
    try:
        return p.relative_to(output).as_posix() if p.is_absolute() else p.as_posix()
    except ValueError:
        return None


def plan(ws: Workspace, repo: str, *, best_only: bool = False, private: bool = True) -> Plan:
    """What a finished, evaluated run uploads: best.safetensors, each epoch's LoRA, the report, the card."""
    from bespoke import runs

    ws = Workspace.of(ws)
    output = ws.output
    check_repo(repo)
    report_json = ws.report / "report.json"
    done, report = read_json_object(ws.done_file), read_json_object(report_json)
    if done is None:
        raise PublishError("no finished training to publish", str(ws.done_file),
                           "run `bespoke train` (or `bespoke run`) to the end first")
    if report is None:
        raise PublishError("the run is not evaluated", str(report_json), "run `bespoke evaluate` first")
    try:  # both are bespoke's; one edited or cut short by hand is refused in one line, not a traceback
        name = report.get("output_name") or "bespoke"
        paths = []
        if report.get("best"):
            paths += [ws.best, ws.best.with_name(ws.best.name + ".sha256")]
        if not best_only:
            paths += [runs.numbered_file(output, name, int(e["epoch"])) for e in done.get("epochs", [])]
        paths += [ws.report / "contact-sheet.png", ws.report / "report.html", report_json]
        widgets = _widget_samples(report, output)
        card = model_card(done, report, widgets, repo)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise PublishError(f"DONE.json or report.json is not as bespoke writes it ({type(e).__name__})",
                           str(output), "run `bespoke evaluate` again (it rewrites report.json); DONE.json comes "
                           "from `bespoke train`") from None
    files = [p.relative_to(output).as_posix() for p in paths] + [w["path"] for w in widgets]
    files = [f for f in dict.fromkeys(files) if (output / f).is_file()]
    if not any(f.endswith(".safetensors") for f in files):
        raise PublishError("no LoRA file to publish", str(output),
                           "run `bespoke evaluate` (it writes best.safetensors), or drop --best-only")
    return Plan(repo, (*files, ws.model_card.name), card, private)


def _widget_samples(report: dict, output: Path) -> list[dict]:
    """The recommended epoch's samples (else the last epoch's), with the prompt each was drawn from."""
    from bespoke.recipe import TEST_PROMPTS

    epochs = report.get("epochs") or []
    rec = report.get("recommended") or {}
    chosen = next((e for e in epochs if e["epoch"] == rec.get("epoch")), epochs[-1] if epochs else None)
    out = []
    for s in (chosen or {}).get("samples", []):
        rel = _rel(s.get("path"), output)
        if rel and (output / rel).is_file():
            i = s.get("prompt", 0)
            out.append({"path": rel, "text": TEST_PROMPTS[i] if i < len(TEST_PROMPTS) else ""})
    return out


def _yaml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a valid YAML scalar


def model_card(done: dict, report: dict, widgets: list[dict], repo: str) -> str:
    """The Hub's README.md: YAML front matter (base model, tags, widgets, trigger) and the run's facts."""
    args = recipe_args(done.get("recipe") or [])
    base = base_model(str(args.get("pretrained_model_name_or_path") or ""))
    trigger = str(args.get("metadata_trigger_phrase") or "")
    title = str(args.get("metadata_title") or args.get("output_name") or repo.split("/")[-1])
    front = ["---"]
    if base:
        front.append(f"base_model: {_yaml_str(base)}")
    if trigger:
        front.append(f"instance_prompt: {_yaml_str(trigger)}")
    front.append("tags:")
    front += [f"- {_yaml_str(t)}" for t in TAGS]
    if widgets:
        front.append("widget:")
        for w in widgets:
            front += [f"- text: {_yaml_str(w['text'])}", "  output:", f"    url: {_yaml_str(w['path'])}"]
    front.append("---")

    rec = report.get("recommended")
    body = [f"# {title}", "",
            "An SDXL LoRA for 24x24 pixel-art portraits, trained by bespoke with kohya-ss sd-scripts.", ""]
    body += [f"- **Base model:** {base or args.get('pretrained_model_name_or_path', '?')}",
             f"- **Trigger:** {trigger or '(none recorded)'}"]
    if usage := args.get("metadata_usage_hint"):
        body.append(f"- **Usage:** {usage}")
    if rec:
        body.append(f"- **Recommended:** epoch {rec['epoch']} (`best.safetensors`): {report.get('reason', '')}")
    else:
        body.append(f"- **No recommendation:** {report.get('reason', '')}")
    body += ["", "## Epochs", "", "| epoch | file | pixel art | on palette | mean score | loss |",
             "|---|---|---|---|---|---|"]
    name = report.get("output_name") or "bespoke"
    for e in report.get("epochs", []):
        label = "base" if e.get("baseline") else str(e["epoch"])
        lora = "" if e.get("baseline") else f"`{name}-{e['epoch']:06d}.safetensors`"
        pal = "-" if e.get("palette_ok") is None else f"{e['palette_ok']}/{e['count']}"
        loss = "-" if e.get("loss") is None else f"{e['loss']:.4f}"
        mark = " **(recommended)**" if rec and e["epoch"] == rec["epoch"] else ""
        body.append(f"| {label}{mark} | {lora} | {e['pixel_art']}/{e['count']} | {pal} | "
                    f"{e['mean_score']:.2f} | {loss} |")
    body += ["", "The contact sheet (`report/contact-sheet.png`) shows every epoch's samples beside their "
             "recovered sprites; `report/report.html` explains each score.", "", "## Recipe", "",
             f"Dataset sha256 `{done.get('dataset_hash', '?')}`, sd-scripts `{done.get('sd_scripts_commit', '?')}`.",
             "", "```", *_public_argv(done.get("recipe") or []), "```", ""]
    return "\n".join(front + body)


def _public_argv(argv: list[str]) -> list[str]:
    """The recipe without the pod's paths (they say nothing off the pod)."""
    hidden = {"train_data_dir", "output_dir", "logging_dir", "sample_prompts", "tokenizer_cache_dir", "resume",
              "pretrained_model_name_or_path"}
    return [a for a in argv if a[2:].partition("=")[0] not in hidden]


def token_from_env(environ: dict[str, str]) -> str:
    token = (environ.get("HF_TOKEN") or "").strip()
    if not token:
        raise PublishError("HF_TOKEN is not set", "environment",
                           "set HF_TOKEN to a Hugging Face token with write access (never pass it as an argument)")
    return token


def upload(ws: Workspace, p: Plan, token: str) -> str:
    """Create the repo (private unless asked otherwise; an existing one is kept) and upload in one commit.
    huggingface_hub reads HF_ENDPOINT itself (a mirror, or a test's fake Hub). Returns the commit's URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import HfHubHTTPError, disable_progress_bars

    if not sys.stderr.isatty():
        disable_progress_bars()  # a pod's log keeps lines, not bars
    ws = Workspace.of(ws)
    atomic_write_text(ws.model_card, p.card)
    api = HfApi(token=token)
    try:
        api.create_repo(p.repo, private=p.private, exist_ok=True, repo_type="model")
        info = api.upload_folder(repo_id=p.repo, repo_type="model", folder_path=str(ws.output),
                                 allow_patterns=list(p.files),
                                 commit_message=f"bespoke: {len(p.files) - 1} files from a finished run")
    except (HfHubHTTPError, OSError, ValueError, RuntimeError) as e:
        raise PublishError(f"upload to {p.repo} failed: {_scrub(str(e), token)}", p.repo,
                           "check HF_TOKEN's write access and the network, then rerun `bespoke publish`") from None
    return str(getattr(info, "commit_url", info))


def _scrub(text: str, token: str) -> str:
    text = text.replace(token, "***") if token else text
    return text.splitlines()[0] if text else "no detail"


def record(ws: Workspace, state: dict) -> None:
    """Put the upload's outcome in status.json beside the run's own fields."""
    status = read_json_object(ws.status) or {}
    status["publish"] = {**state, "at": time.time()}
    atomic_write_json(ws.status, status)


def publish(ws: Workspace, repo: str, environ: dict[str, str], *, best_only: bool = False,
            private: bool = True) -> tuple[Plan, str]:
    """Plan, upload, and record the outcome in status.json (a failure too, then raised). Returns the plan
    and the commit's URL."""
    ws = Workspace.of(ws)
    try:
        p = plan(ws, repo, best_only=best_only, private=private)
        url = upload(ws, p, token_from_env(environ))
    except PublishError as e:
        if ws.output.is_dir():
            record(ws, {"state": "failed", "repo": repo, "error": e.what, "fix": e.fix})
        raise
    record(ws, {"state": "uploaded", "repo": repo, "url": url, "files": len(p.files)})
    return p, url
