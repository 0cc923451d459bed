"""The stages in order: check -> prepare -> train -> evaluate. Each is a function the CLI calls."""

from __future__ import annotations

import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from bespoke import dataset, evaluate, kohya, model, preflight, profiles, progress, recipe, runs, tokens
from bespoke.errors import BespokeError, DataError, PreflightError, TrainingError
from bespoke.fsutil import atomic_write_text
from bespoke.preflight import ERROR, INFO, OK, WARN, Finding

_COLORS = {ERROR: "red", WARN: "yellow", OK: "green", INFO: None}


def echo(msg: str = "", **kw) -> None:
    click.echo(msg, **kw)


@dataclass
class PrepareOptions:
    repeats: int = 10
    concept: str = "bespoke_baby"
    expect: int | None = None
    size: int = 24
    upscale: str = "nearest"
    resolution: tuple[int, int] = (1024, 1024)
    caption_prefix: str = "pixel art, 24x24"
    triggers: tuple[str, ...] = ("bespoke punk", "bespoke baby")

    def rules(self) -> dataset.Rules:
        return dataset.Rules(self.size, self.caption_prefix, self.triggers, self.expect)


@dataclass
class TrainOptions:
    overrides: tuple[str, ...] = ()
    dry_run: bool = False
    force: bool = False
    cpu: bool = False  # the smoke run: train on CPU through accelerate's CPU mode
    script: Path | None = None  # accelerate's training script; default sd-scripts' sdxl_train_network.py
    machines: kohya.Machines = field(default_factory=kohya.Machines)
    grace: float = 60.0
    spawn: object = None  # the process seam, replaced by tests
    on_line: object = None
    sample_size: tuple[int, int] | None = None  # the smoke run samples small
    profile: str | None = None  # bespoke.profiles: exact or fast; None: the default for the GPUs
    probed: dict | None = None  # bespoke.gpuprobe's answer, when the caller has one already


def print_findings(findings: list[Finding]) -> None:
    width = max((len(f.check) for f in findings), default=5)
    echo(f"{'':7} {'check':{width}}  finding / fix")
    for f in findings:
        tag = click.style(f"{f.severity:7}", fg=_COLORS[f.severity])
        echo(f"{tag} {f.check:{width}}  {f.message}")
        if f.fix and f.severity in (ERROR, WARN):
            echo(f"{'':7} {'':{width}}  -> {f.fix}")


# --- check ---------------------------------------------------------------------------------------

def check(ws: Path, data: Path | None, overrides=(), opts: PrepareOptions | None = None,
          free=None, probed: dict | None = None, profile: str | None = None) -> list[Finding]:
    """Every preflight finding; the data is read and checked but nothing is written."""
    opts = opts or PrepareOptions()
    findings = preflight.check_workspace(ws)
    findings += preflight.apply_cache_env(ws) if ws.is_dir() else []
    probed = preflight.probe() if probed is None else probed
    if "error" in probed:
        findings.append(Finding(WARN, "gpu", probed["error"], "run `python -m bespoke.gpuprobe` to see why"))
    found = preflight.gpus(probed)
    findings += preflight.check_gpus(found, probed.get("arch_list", []))
    findings += kohya.check()
    findings += preflight.check_libraries(probed, bool(found))
    try:
        prof, why = _profile(profile, found)
        findings += preflight.check_profile(prof, found, _compiler_problem(prof), why, _cpp_launcher_problem(prof))
        extra = prof.overrides
    except BespokeError as e:
        findings.append(Finding(ERROR, "profile", e.what, e.fix or ""))
        extra = ()
    # Every bad override is a finding; the recipe is built from the good ones, so the data and disk rows
    # below still appear.
    good, errors = recipe.check_overrides((*extra, *overrides))
    findings += [Finding(ERROR, "recipe", e.what, e.fix or "") for e in errors]
    findings += [Finding(ERROR, "prepare", what, fix) for what, fix in
                 dataset.option_problems(opts.repeats, opts.concept, opts.resolution, opts.size)]
    r = recipe.build(ws, [f"{n}={_flat(v)}" for n, v in good], tokenizer_dir=tokens.default_dir(ws))
    n_images = 0
    try:
        src = dataset.find_input(ws, data)
        ds = dataset.load(src, opts.rules())
        n_images = len(ds.items)
        findings.append(Finding(OK, "data", dataset.summary(ds)))
        findings += [Finding(WARN, "data", w) for w in ds.warnings[:5]]
    except DataError as e:
        findings.append(Finding(ERROR, "data", f"{e.what} ({e.where})", e.fix or ""))
        findings += [Finding(ERROR, "data", p) for p in e.problems[:10]]
    if ws.is_dir():
        hub = Path(os.environ.get("HF_HUB_CACHE", ws / ".cache/huggingface/hub"))
        terms = preflight.disk_terms(
            ws=ws, hub_cache=hub, images=n_images, resolution=recipe.resolution(r),
            epochs=int(r.get("max_train_epochs")), save_every=int(r.get("save_every_n_epochs", 1)),
            dim=int(r.get("network_dim")), save_precision=r.get("save_precision"),
            model_cached=model.cached(str(r.get("pretrained_model_name_or_path")), str(hub)) is not None,
        )
        findings += preflight.check_disk(terms, free)
        if r.get("save_precision") not in ("fp16", "bf16"):
            lora = next(t.bytes for t in terms if t.name.startswith("LoRA files"))
            findings.append(Finding(INFO, "disk", f"--set save_precision=bf16 would halve the LoRA files: "
                                    f"{lora / 2 / preflight.GB:.2f} GB instead of {lora / preflight.GB:.2f} GB"))
    return findings


def _flat(value) -> str:
    """A parsed override back as its --set text."""
    if value is True or value is False:
        return str(value).lower()
    return shlex.join(value) if isinstance(value, list) else str(value)


# --- prepare -------------------------------------------------------------------------------------

def prepare(ws: Path, data: Path | None, opts: PrepareOptions) -> tuple[dataset.Dataset, dataset.Layout]:
    ws = Path(ws)
    dataset.check_options(opts.repeats, opts.concept, opts.resolution, opts.size)
    ws.mkdir(parents=True, exist_ok=True)
    src = dataset.find_input(ws, data)
    echo(f"data: {src}")
    ds = dataset.load(src, opts.rules(), tok_dir=tokens.default_dir(ws))
    for w in ds.warnings:
        echo(click.style("warning: ", fg="yellow") + w)
    if opts.upscale == "none":
        echo(click.style("warning: ", fg="yellow") + "--upscale none: kohya will enlarge the images with Lanczos, "
             "blurring every edge (and tell the model they are 24x24)")
    if ds.layout_hint and not ds.layout_hint.endswith(f"{opts.repeats}_{opts.concept}"):
        echo(f"note: input folder {ds.layout_hint} is laid out already; using --repeats {opts.repeats} "
             f"--concept {opts.concept}")
    lay = dataset.lay_out(ds, ws, opts.repeats, opts.concept, opts.resolution, opts.upscale)
    preview = dataset.write_preview(ds, ws / "output" / "dataset-preview.png")
    state = "written" if lay.rebuilt else "up to date, nothing to do"
    echo(f"layout: {lay.folder} ({len(ds.items)} images, {state}); preview: {preview}")
    return ds, lay


# --- train ---------------------------------------------------------------------------------------

def _compiles(profile: profiles.Profile) -> bool:
    return profile.compiles and os.environ.get("BESPOKE_COMPILE") != "off"


def _compiler_problem(profile: profiles.Profile) -> str | None:
    """What the profile's torch.compile lacks here, unless it compiles nothing (BESPOKE_COMPILE=off)."""
    return preflight.compiler_problem() if _compiles(profile) else None


def _cpp_launcher_problem(profile: profiles.Profile) -> str | None:
    """What fast's C++ kernel launcher lacks here (it then launches from Python), unless it is off."""
    if not _compiles(profile) or os.environ.get("BESPOKE_CPP_WRAPPER") == "0":
        return None
    return preflight.cpp_launcher_problem()


def _profile(asked: str | None, found: list | None) -> tuple[profiles.Profile, str | None]:
    """The profile asked for (--profile, BESPOKE_PROFILE), else the default for these GPUs, with why."""
    asked = asked or os.environ.get("BESPOKE_PROFILE")
    if asked:
        return profiles.get(asked), None
    name, why = profiles.default_for(found, _compiler_problem(profiles.PROFILES["fast"]))
    return profiles.get(name), f"default here: {why}"


def _probe_cache(ws: Path) -> Path:
    """Where the GPU probe's answer is kept between runs (preflight.probe: keyed by the GPUs and libraries)."""
    return Path(ws) / ".cache" / "bespoke"


def _gpu_count(probed: dict) -> int:
    if probed.get("torch") is None:
        raise TrainingError("torch is not installed", sys.executable,
                            "use the bespoke image, or `make kohya-env` and run its bespoke")
    if not probed.get("device_count"):
        raise TrainingError("no CUDA GPU is visible", "torch.cuda",
                            "run on a GPU pod with --gpus all; only `bespoke smoke-test` trains on CPU")
    return probed["device_count"]


def train(ws: Path, opts: TrainOptions) -> int:
    """Launch sd-scripts with the recipe and follow it; resume, no-op when done. Returns the exit code."""
    ws = Path(ws)
    t0 = time.time()
    preflight.apply_cache_env(ws)
    tok_dir = tokens.default_dir(ws)
    tokens_ok = tokens.present(tok_dir)
    if not tokens_ok:
        try:
            tokens.build(tok_dir)
            tokens_ok = True
        except BespokeError:
            pass  # sd-scripts downloads them itself when online
    # `run` passes its check's probe; the CPU smoke run needs none (it trains with --sdpa)
    probed = opts.probed or ({} if opts.cpu else preflight.probe(imports_only=True, cache=_probe_cache(ws)))
    profile, why = _profile(opts.profile, None if opts.cpu else preflight.gpus(probed))
    if stop := next((f for f in preflight.check_profile(profile, None, _compiler_problem(profile))
                     if f.severity == preflight.ERROR), None):
        raise BespokeError(stop.message, sys.executable, stop.fix)
    echo(f"profile: {profile.name} ({why or 'asked for'}): {profile.note}")
    r = recipe.build(ws, (*profile.overrides, *opts.overrides), tokenizer_dir=tok_dir,
                     xformers_available=bool((probed.get("xformers") or {}).get("ok")))
    for w in r.warnings:
        echo(click.style("warning: ", fg="yellow") + w)
    manifest = dataset.read_manifest(ws)
    if manifest is None:
        raise BespokeError("no prepared data", str(ws / "training_data"), "run `bespoke prepare` (or `bespoke run`)")
    if tuple(manifest["resolution"]) != recipe.resolution(r):
        echo(click.style("warning: ", fg="yellow") + f"data was prepared at {manifest['resolution']}, the recipe "
             f"trains at {r.get('resolution')}; run `bespoke prepare --resolution` to match")
    sd = kohya.locate()
    gpus = 0 if opts.cpu else _gpu_count(probed)
    math = recipe.training_math(r, manifest["images"], manifest["repeats"], gpus * opts.machines.num_machines)
    output = ws / "output"
    output_name = str(r.get("output_name"))

    # The run's identity uses the model as named, so a finished run is recognised without the download.
    key = runs.run_key(r.argv(), manifest["dataset_hash"])
    plan = runs.plan(output, key, output_name, force=opts.force and not opts.dry_run)
    if plan.action == "done" and not opts.dry_run:
        echo(f"nothing to do: this recipe and data finished already ({output / runs.DONE_FILE}); "
             "change the recipe or data, or --force to train again")
        return 0
    if plan.state is not None:
        r.set("resume", str(plan.state), "continue from the newest saved state")

    hub = os.environ.get("HF_HUB_CACHE")
    ref = str(r.get("pretrained_model_name_or_path"))
    local = model.cached(ref, hub) if opts.dry_run else model.resolve(ref, hub)
    model_note = str(local) if local else f"{ref} (downloaded to {hub} on the first run)"
    if local:
        r.set("pretrained_model_name_or_path", str(local))

    env = dict(os.environ, PYTHONUNBUFFERED="1", **r.env)  # r.env: credentials, kept out of argv
    if local and tokens_ok:
        env["HF_HUB_OFFLINE"] = "1"
    # A wrapper script (the smoke test's tiny model) takes sd-scripts' script as its first argument.
    wrapper = opts.script or profile.launcher_path()
    script, script_args = (wrapper, [str(sd.script)]) if wrapper else (sd.script, [])
    argv = kohya.launch_argv(script, script_args + r.argv(), gpus, mixed_precision=str(r.get("mixed_precision", "no")),
                             machines=opts.machines)

    echo("training math:")
    for line in math.lines():
        echo(f"  {line}")
    echo(f"base model: {model_note}")
    echo(f"profile: {profile.name} ({profile.note})")
    for name, why in r.added.items():
        echo(f"  + --{name}: {why}")
    if plan.note:
        echo(plan.note)
    if opts.dry_run:
        shown_env = {k: env[k] for k in (*preflight.CACHE_VARS, "PYTHONUNBUFFERED", "HF_HUB_OFFLINE") if k in env}
        echo("launch command:")
        echo(f"cd {kohya.shell_line([str(sd.path)])} && {kohya.shell_line(argv, shown_env)}")
        return 0

    output.mkdir(parents=True, exist_ok=True)
    w, h = opts.sample_size or recipe.resolution(r)
    atomic_write_text(Path(str(r.get("sample_prompts"))), recipe.prompt_file_text(width=w, height=h))
    runs.start(output, key, {"argv": argv, "dataset_hash": manifest["dataset_hash"], "sd_scripts_commit": sd.commit})
    log = output / "logs" / f"train-{time.strftime('%Y%m%d-%H%M%S')}.log"
    epochs = int(r.get("max_train_epochs"))
    status = progress.Status(stage="starting", epoch=plan.state_epoch, epochs=epochs, log=str(log),
                             output_name=output_name)
    follower = progress.Follower(output / "status.json", output / "logs" / "loss.jsonl", status,
                                 step_offset=plan.state_epoch * math.steps_per_epoch, total=math.total_steps)
    check_resume = _ResumeCheck(plan.state_epoch, epochs) if plan.action == "resume" else None
    alarm = _EpochAlarm(ws, follower)
    hooks = [h for h in (opts.on_line, check_resume, alarm) if h is not None]

    def on_line(line: str) -> None:
        for hook in hooks:
            hook(line)

    echo(f"log: {log}")
    outcome = kohya.follow(argv, env, log, follower, cwd=str(sd.path), grace=opts.grace, spawn=opts.spawn,
                           on_line=on_line)
    if outcome.interrupted_by is not None:
        follower.set(stage="interrupted", message=f"interrupted at step {follower.status.step}")
        echo(f"interrupted at step {follower.status.step}; run again to resume from the last finished epoch")
        return 128 + outcome.interrupted_by
    if check_resume is not None and check_resume.error:
        follower.set(stage="failed", last_error=check_resume.error)
        raise TrainingError(check_resume.error, str(log), "rerun with --force to start this run over")
    if outcome.exit_code != 0:
        known = kohya.explain(outcome.tail)
        last = kohya.last_error_line(outcome.tail)
        follower.set(stage="failed", last_error=last or f"exit code {outcome.exit_code}")
        what, fix = known or (f"sd-scripts failed (exit {outcome.exit_code}): {last or 'see the log'}",
                              f"read {log}")
        raise TrainingError(what, str(log), fix, exit_code=1)
    done = runs.finish(output, key, output_name, epochs, {
        "recipe": r.argv(), "dataset_hash": manifest["dataset_hash"], "sd_scripts_commit": sd.commit,
        "durations": {"train_seconds": round(outcome.seconds, 1), "total_seconds": round(time.time() - t0, 1)},
        "math": {"steps_per_epoch": math.steps_per_epoch, "total_steps": math.total_steps, "gpus": gpus},
    }, every=int(r.get("save_every_n_epochs", 1)))
    alarm.final(epochs)
    follower.set(stage="done", step=math.total_steps, message=f"{len(done['epochs'])} epoch LoRAs in {output}")
    echo(f"done: {len(done['epochs'])} LoRA files in {output} ({outcome.seconds:.0f} s)")
    return 0


class _ResumeCheck:
    """sd-scripts miscounts steps and epochs after --resume (its issues #1999, #2248). bespoke corrects the
    step count itself (offset) and refuses a run whose first epoch is not the one after the state."""

    def __init__(self, state_epoch: int, epochs: int):
        self.expected, self.epochs, self.seen, self.error = state_epoch + 1, epochs, False, None

    def __call__(self, line: str) -> None:
        ep = progress.parse_epoch(line)
        if ep is None or self.seen:
            return
        self.seen = True
        if ep != (self.expected, self.epochs):
            self.error = (f"sd-scripts resumed at epoch {ep[0]}/{ep[1]}, expected {self.expected}/{self.epochs} "
                          "(its resume miscount)")


class _EpochAlarm:
    """After each epoch's samples, score them and say whether they look like pixel art."""

    def __init__(self, ws: Path, follower: progress.Follower):
        self.ws, self.follower, self.last = ws, follower, 0

    def __call__(self, line: str) -> None:
        ep = progress.parse_epoch(line)
        if ep is not None and ep[0] > 1:
            self.report(ep[0] - 1)

    def final(self, epochs: int) -> None:
        self.report(epochs)

    def report(self, epoch: int) -> None:
        if epoch <= self.last:
            return
        self.last = epoch
        try:
            line, photo_like = evaluate.epoch_alarm(self.ws, epoch, None)
        except BespokeError:
            return
        if photo_like:
            line = f"{line}: {evaluate.PHOTO_ALARM}"
            echo(click.style(line, fg="red", bold=True))
            self.follower.status.alarms.append(line)
            self.follower.write(force=True)
            if os.environ.get("BESPOKE_STOP_ON_PHOTO") == "1":
                raise TrainingError(evaluate.PHOTO_ALARM, f"epoch {epoch}", "BESPOKE_STOP_ON_PHOTO=1 stopped training")
        else:
            echo(line)


def evaluate_after_training(ws: Path) -> None:
    """Score the epochs and write the report; a failing report never fails a finished training."""
    try:
        evaluate.evaluate(Path(ws))
    except BespokeError as e:
        echo(click.style("warning: ", fg="yellow") + f"evaluation failed: {e.line()}")


def run(ws: Path, data: Path | None, popts: PrepareOptions, topts: TrainOptions) -> int:
    """check -> prepare -> train -> evaluate: what the container runs."""
    echo("== check")
    topts.probed = preflight.probe(cache=_probe_cache(ws))
    findings = check(ws, data, topts.overrides, popts, probed=topts.probed, profile=topts.profile)
    print_findings(findings)
    if preflight.has_errors(findings):
        raise PreflightError("preflight found errors", str(ws), "fix the errors in the table above")
    echo("== prepare")
    prepare(ws, data, popts)
    echo("== train")
    code = train(ws, topts)
    if code == 0 and not topts.dry_run:
        echo("== evaluate")
        evaluate_after_training(ws)
    return code
