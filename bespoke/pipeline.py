"""The stages in order: check -> prepare -> train -> evaluate. Each is a function the CLI calls.

Training is two steps: `plan(ws, opts, probed)` decides everything and returns a frozen `Launch` (it
writes nothing and starts no process), and `execute(launch)` carries it out and returns an `Outcome`.
`--dry-run` shows a Launch and stops. The stages say what they do through the `bespoke` logger (the CLI
prints it; a library user can route it anywhere); they return values and raise typed errors.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from bespoke import (
    dataset,
    estimate,
    kernelcache,
    kohya,
    lorameta,
    masking,
    model,
    notify,
    preflight,
    profiles,
    progress,
    recipe,
    runs,
    switches,
    tblog,
    tokens,
    watch,
)
from bespoke.errors import BespokeError, DataError, PreflightError, TrainingError
from bespoke.eval import evaluate
from bespoke.fsutil import atomic_write_text
from bespoke.preflight import ERROR, INFO, OK, WARN, Finding
from bespoke.workspace import CACHE_VARS, Workspace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class TrainOptions:
    """What the user asks of `train` (and `run`)."""

    overrides: tuple[str, ...] = ()
    dry_run: bool = False
    force: bool = False
    machines: kohya.Machines = field(default_factory=kohya.Machines)
    profile: str | None = None  # bespoke.profiles: exact or fast; None: the default for the GPUs
    gpus: int | None = None  # --gpus: the count a dry run plans for where no GPU is visible
    price_per_hour: float | None = None  # the pod's price: the estimate adds the cost


@dataclass(frozen=True)
class Rig:
    """Training without a GPU, as the smoke test does: accelerate's CPU mode, an optional launcher script
    in place of sd-scripts' own (it takes sd-scripts' script as its first argument), small samples."""

    script: Path | None = None
    sample_size: tuple[int, int] | None = None


# --- check ---------------------------------------------------------------------------------------

def check(ws: Workspace | Path, data: Path | None, overrides=(), opts: PrepareOptions | None = None,
          free=None, probed: dict | None = None, profile: str | None = None,
          price_per_hour: float | None = None) -> list[Finding]:
    """Every preflight finding; the data is read and checked but nothing is written."""
    ws = Workspace.of(ws)
    opts = opts or PrepareOptions()
    findings = preflight.check_workspace(ws)
    findings += preflight.apply_cache_env(ws) if ws.root.is_dir() else []
    probed = preflight.probe() if probed is None else probed
    if "error" in probed:
        findings.append(Finding(WARN, "gpu", probed["error"], "run `python -m bespoke.launch.gpuprobe` to see why"))
    found = preflight.gpus(probed)
    findings += preflight.check_gpus(found, probed.get("arch_list", []))
    findings += kohya.check()
    findings += preflight.check_libraries(probed, bool(found))
    if repo := os.environ.get("BESPOKE_HUB_REPO", "").strip():  # found now, not after hours of training
        from bespoke import publish

        try:
            publish.check_repo(repo)
            publish.token_from_env(dict(os.environ))
            findings.append(Finding(OK, "publish", f"after the evaluation, the results go to {repo} (HF_TOKEN set)"))
        except BespokeError as e:
            # a warning, as the upload's own failure is: the training is worth having without it
            findings.append(Finding(WARN, "publish", f"BESPOKE_HUB_REPO: {e.what}: the upload after training "
                                    "will fail", e.fix or ""))
    findings += [Finding(ERROR, "setting", e.what, e.fix or "") for e in switches.problems()]
    try:
        prof, why = _profile(profile, found)
        findings += preflight.check_profile(prof, found, _compiler_problem(prof), why, _cpp_launcher_problem(prof))
        extra = prof.overrides
    except BespokeError as e:
        findings.append(Finding(ERROR, "profile", e.what, e.fix or ""))
        prof, extra = None, ()  # no estimate below: the profile's speed is unknown
    # Every bad override is a finding; the recipe is built from the good ones, so the data and disk rows
    # below still appear.
    good, errors = recipe.check_overrides((*extra, *overrides))
    findings += [Finding(ERROR, "recipe", e.what, e.fix or "") for e in errors]
    findings += [Finding(ERROR, "prepare", what, fix) for what, fix in
                 dataset.option_problems(opts.repeats, opts.concept, opts.resolution, opts.size)]
    r = recipe.build(ws, [f"{n}={_flat(v)}" for n, v in good], tokenizer_dir=tokens.default_dir(ws))
    if problem := _output_in_the_way(ws):
        findings.append(Finding(ERROR, "workspace", f"{problem[0]} ({problem[1]})", problem[2]))
    try:
        manifest = dataset.check_layout(ws)
        if manifest is not None:
            findings.append(Finding(OK, "layout", f"{ws.training_data}: {manifest['repeats']}_{manifest['concept']}/, "
                                    f"{manifest['images']} images prepared"))
    except DataError as e:
        findings.append(Finding(ERROR, "layout", f"{e.what} ({e.where})", e.fix or ""))
    n_images = 0
    try:
        src = dataset.find_input(ws, data)
        ds = dataset.load(src, opts.rules())
        n_images = len(ds.items)
        findings.append(Finding(OK, "data", dataset.summary(ds)))
        findings += [Finding(WARN, "data", w) for w in ds.warnings[:5]]
        gpus = len(found or []) or 1
        math = recipe.training_math(r, n_images, opts.repeats, gpus)
        if prof is not None:
            est = _estimate(ws, math.total_steps, prof, probed, gpus, not found, price_per_hour)
            findings += [Finding(INFO, "time", " ".join(line.split())) for line in est.lines()]
    except DataError as e:
        findings.append(Finding(ERROR, "data", f"{e.what} ({e.where})", e.fix or ""))
        findings += [Finding(ERROR, "data", p) for p in e.problems[:10]]
    if ws.root.is_dir():
        hub = ws.hub_cache
        base = model.cached(str(r.get("pretrained_model_name_or_path")), str(hub))
        terms = preflight.disk_terms(
            ws=ws, hub_cache=hub, images=n_images, resolution=recipe.resolution(r),
            epochs=int(r.get("max_train_epochs")), save_every=int(r.get("save_every_n_epochs", 1)),
            dim=int(r.get("network_dim")), save_precision=r.get("save_precision"),
            model_cached=base is not None, model_params=preflight.model_params(base) if base else None,
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

def prepare(ws: Workspace | Path, data: Path | None, opts: PrepareOptions) -> tuple[dataset.Dataset, dataset.Layout]:
    ws = Workspace.of(ws)
    dataset.check_options(opts.repeats, opts.concept, opts.resolution, opts.size)
    if data is not None:
        dataset.refuse_overlap(ws, data)
    ws.root.mkdir(parents=True, exist_ok=True)
    with ws.lock("prepare"):
        return _prepare(ws, data, opts)


def _output_in_the_way(ws: Workspace) -> tuple[str, str, str] | None:
    """(what, where, fix) when the workspace's output folder is a file or a broken link: every step writes there."""
    if os.path.lexists(ws.output) and not ws.output.is_dir():
        return ("the output folder is a file or a broken link", str(ws.output),
                "move it away or remove it: bespoke writes the previews, LoRAs and reports there")
    return None


def _prepare(ws: Workspace, data: Path | None, opts: PrepareOptions) -> tuple[dataset.Dataset, dataset.Layout]:
    if problem := _output_in_the_way(ws):
        raise DataError(*problem)
    dataset.check_layout(ws, prepared=False)  # what is there is bespoke's own; prepare replaces it whole
    src = dataset.find_input(ws, data)
    log.info(f"data: {src}")
    ds = dataset.load(src, opts.rules(), tok_dir=tokens.default_dir(ws))
    for w in ds.warnings:
        log.warning(w)
    if opts.upscale == "none":
        log.warning("--upscale none: kohya will enlarge the images with Lanczos, blurring every edge (and tell "
                    "the model they are 24x24)")
    if ds.layout_hint and not ds.layout_hint.endswith(f"{opts.repeats}_{opts.concept}"):
        log.info(f"note: input folder {ds.layout_hint} is laid out already; using --repeats {opts.repeats} "
                 f"--concept {opts.concept}")
    lay = dataset.lay_out(ds, ws, opts.repeats, opts.concept, opts.resolution, opts.upscale, opts.rules())
    preview = dataset.write_preview(ds, ws.preview)
    state = "written" if lay.rebuilt else "up to date, nothing to do"
    log.info(f"layout: {lay.folder} ({len(ds.items)} images, {state}); preview: {preview}")
    return ds, lay


# --- train: plan ---------------------------------------------------------------------------------

def _compiles(profile: profiles.Profile) -> bool:
    return profile.compiles and switches.compile_mode() != "off"


def _compiler_problem(profile: profiles.Profile) -> str | None:
    """What the profile's torch.compile lacks here, unless it compiles nothing (BESPOKE_COMPILE=off)."""
    return preflight.compiler_problem() if _compiles(profile) else None


def _cpp_launcher_problem(profile: profiles.Profile) -> str | None:
    """What fast's C++ kernel launcher lacks here (it then launches from Python), unless it is off."""
    if not _compiles(profile) or not switches.switch("BESPOKE_CPP_WRAPPER"):
        return None
    return preflight.cpp_launcher_problem()


def _profile(asked: str | None, found: list | None) -> tuple[profiles.Profile, str | None]:
    """The profile asked for (--profile, BESPOKE_PROFILE), else the default for these GPUs, with why."""
    asked = asked or os.environ.get("BESPOKE_PROFILE")
    if asked:
        return profiles.get(asked), None
    name, why = profiles.default_for(found, _compiler_problem(profiles.PROFILES["fast"]))
    return profiles.get(name), f"default here: {why}"


def _gpu_count(probed: dict) -> int:
    if probed.get("torch") is None:
        raise TrainingError("torch is not installed", sys.executable,
                            "use the bespoke image, or `make kohya-env` and run its bespoke")
    if not probed.get("device_count"):
        raise TrainingError("no CUDA GPU is visible", "torch.cuda",
                            "run on a GPU pod with --gpus all; only `bespoke smoke-test` trains on CPU")
    return probed["device_count"]


def _gpus_for_dry_run(probed: dict, asked: int | None) -> tuple[int, bool]:
    """The GPU count a dry run plans for: the visible ones, else --gpus N, else 1 (assumed)."""
    if probed.get("torch") is not None and probed.get("device_count"):
        return probed["device_count"], False
    return max(asked or 1, 1), True


def _estimate(ws: Workspace, steps: int, profile: profiles.Profile, probed: dict, gpus: int, assumed: bool,
              price: float | None) -> estimate.Estimate:
    """The run's expected duration and cost from the measured figures (bespoke.estimate)."""
    found = preflight.gpus(probed) or []
    card = found[0].name if found else None
    cache = Path(ws.cache_env(os.environ).get("TORCHINDUCTOR_CACHE_DIR") or ws.cache)
    cached = cache.is_dir() and any(cache.iterdir())
    return estimate.estimate(steps, profile.name, card, gpus, gpus_assumed=assumed, price_per_hour=price,
                             compile_cached=cached, assume_card=None if card else estimate.ASSUMED_CARD)


MODEL_FLAG = "pretrained_model_name_or_path"


@dataclass(frozen=True)
class Launch:
    """Everything one training run will do, decided: what `--dry-run` shows and `execute` carries out."""

    ws: Workspace
    profile: profiles.Profile
    profile_why: str | None  # None: asked for by name
    warnings: tuple[str, ...]
    math: recipe.TrainingMath
    gpus: int  # GPUs on this machine; 0 trains on the CPU (a Rig)
    run: runs.Plan  # fresh, resume or done; and whether a different run is archived first
    key: str  # the run's identity: the recipe as asked (before resume and model path) and the data
    recipe_argv: tuple[str, ...]  # sd-scripts' arguments, resume and the local model included
    added: tuple[tuple[str, str], ...]  # (flag, why bespoke set it)
    argv: tuple[str, ...]  # the whole accelerate launch command
    env: tuple[tuple[str, str], ...] = field(repr=False)  # the child's environment (may hold HF_TOKEN: not in repr)
    cwd: Path  # sd-scripts' folder
    sd_commit: str | None
    dataset_hash: str
    output_name: str
    epochs: int
    save_every: int
    model_ref: str  # the recipe's model, as named
    model_local: Path | None  # its local file when there is one already (else execute downloads it)
    tokenizers: Path
    tokenizers_present: bool
    sample_size: tuple[int, int]
    dry_run: bool = False
    estimate: estimate.Estimate | None = None  # None on the CPU (a Rig)
    notes: tuple[str, ...] = ()  # what a dry run assumed (no GPU, no sd-scripts here)

    @property
    def environ(self) -> dict[str, str]:
        return dict(self.env)

    def model_note(self) -> str:
        return str(self.model_local) if self.model_local else f"{self.model_ref} (downloaded to " \
            f"{self.environ.get('HF_HUB_CACHE')} on the first run)"

    def shell_line(self) -> str:
        """The launch as one shell line: cd to sd-scripts, the cache environment, accelerate's command."""
        env = self.environ
        shown = {k: env[k] for k in (*CACHE_VARS, "PYTHONUNBUFFERED", "HF_HUB_OFFLINE") if k in env}
        argv = masking.mask_argv(self.argv, masking.secret_values(env))  # credentials are in env; mask the rest
        return f"cd {kohya.shell_line([str(self.cwd)])} && {kohya.shell_line(argv, shown)}"

    def lines(self) -> list[str]:
        """What train says before it starts (and all a dry run says): the math, the model, the profile,
        what bespoke added to the recipe, the run plan, and in a dry run the command."""
        out = [*(f"note: {n}" for n in self.notes), "training math:", *(f"  {line}" for line in self.math.lines()),
               *(f"  {line}" for line in (self.estimate.lines() if self.estimate else [])),
               f"base model: {self.model_note()}", f"profile: {self.profile.name} ({self.profile.note})"]
        out += [f"  + --{name}: {why}" for name, why in self.added]
        out += [self.run.note] if self.run.note else []
        if self.dry_run:
            out += ["launch command:", self.shell_line()]
        return out

    def with_model(self, path: str) -> Launch:
        """The same launch with the model at `path` (execute, once it is downloaded)."""
        def swap(argv):
            return tuple(f"--{MODEL_FLAG}={path}" if a.startswith(f"--{MODEL_FLAG}=") else a for a in argv)

        return replace(self, argv=swap(self.argv), recipe_argv=swap(self.recipe_argv), model_local=Path(path))


def plan(ws: Workspace | Path, opts: TrainOptions, probed: dict, rig: Rig | None = None) -> Launch:
    """Decide the run: profile, recipe, data, math, resume, the launch command and its environment.
    Reads the workspace and `probed` (preflight.probe's answer; {} for a Rig); writes nothing, starts
    nothing. Raises when the run cannot start (no prepared data, a profile that cannot run here...)."""
    ws = Workspace.of(ws)
    tok_dir = tokens.default_dir(ws)
    profile, why = _profile(opts.profile, None if rig else preflight.gpus(probed))
    if stop := next((f for f in preflight.check_profile(profile, None, _compiler_problem(profile))
                     if f.severity == preflight.ERROR), None):
        raise BespokeError(stop.message, sys.executable, stop.fix)
    r = recipe.build(ws, (*profile.overrides, *opts.overrides), tokenizer_dir=tok_dir,
                     xformers_available=bool((probed.get("xformers") or {}).get("ok")))
    warnings = list(r.warnings)
    manifest = dataset.read_manifest(ws)
    if manifest is None:
        raise BespokeError("no prepared data", str(ws.training_data), "run `bespoke prepare` (or `bespoke run`)")
    if tuple(manifest["resolution"]) != recipe.resolution(r):
        warnings.append(f"data was prepared at {manifest['resolution']}, the recipe trains at "
                        f"{r.get('resolution')}; run `bespoke prepare --resolution` to match")
    defaults = PrepareOptions()
    for name, value in lorameta.modelspec_flags(
            title=str(r.get("output_name")), triggers=tuple(manifest.get("triggers") or defaults.triggers),
            caption_prefix=manifest.get("caption_prefix") or defaults.caption_prefix,
            sample_prompt=recipe.TEST_PROMPTS[0], dataset_hash=manifest["dataset_hash"],
            images=manifest["images"], profile=profile.name).items():
        if name not in r.overridden:
            r.set(name, value, "trigger words and provenance in the LoRA's header" if name == "metadata_title"
                  else None)
    notes = []
    try:
        sd = kohya.locate()
    except BespokeError as e:
        if not opts.dry_run:
            raise
        sd = None  # a dry run on a laptop shows the math and the command all the same
        notes.append(f"{e.what}; the command shows $SD_SCRIPTS_DIR")
    gpus_assumed = False
    if rig:
        gpus = 0
    elif opts.dry_run:
        gpus, gpus_assumed = _gpus_for_dry_run(probed, opts.gpus)
        if gpus_assumed:
            notes.append(f"no GPU visible here; planning for {gpus} GPU(s) "
                         f"({'--gpus' if opts.gpus else 'assumed; --gpus N to change'})")
    else:
        gpus = _gpu_count(probed)
    math = recipe.training_math(r, manifest["images"], manifest["repeats"], gpus * opts.machines.num_machines)
    output_name = str(r.get("output_name"))

    # The run's identity uses the model as named, so a finished run is recognised without the download.
    key = runs.run_key(r.argv(), manifest["dataset_hash"])
    run = runs.plan(ws, key, output_name, force=opts.force and not opts.dry_run)
    if run.state is not None:
        r.set("resume", str(run.state), "continue from the newest saved state")
    ref = str(r.get(MODEL_FLAG))
    env = {**os.environ, **ws.cache_env(os.environ), "PYTHONUNBUFFERED": "1"}
    local = model.cached(ref, env["HF_HUB_CACHE"])
    if local:
        r.set(MODEL_FLAG, str(local))
    env.update(r.env)  # credentials (huggingface_token, wandb_api_key): the child's environment, never its argv
    tokens_present = tokens.present(tok_dir)
    if local and tokens_present:
        env["HF_HUB_OFFLINE"] = "1"
    wrapper = (rig.script if rig else None) or profile.launcher_path()
    sd_path = sd.path if sd else Path("$SD_SCRIPTS_DIR")
    sd_script = sd.script if sd else sd_path / recipe.SCRIPT
    script, script_args = (wrapper, [str(sd_script)]) if wrapper else (sd_script, [])
    left = math.total_steps - run.state_epoch * math.steps_per_epoch
    est = None if rig else _estimate(ws, left, profile, probed, gpus, gpus_assumed, opts.price_per_hour)
    argv = kohya.launch_argv(script, script_args + r.argv(), gpus, mixed_precision=str(r.get("mixed_precision", "no")),
                             machines=opts.machines)
    return Launch(
        ws=ws, profile=profile, profile_why=why, warnings=tuple(warnings), math=math, gpus=gpus, run=run, key=key,
        recipe_argv=tuple(r.argv()), added=tuple(r.added.items()), argv=tuple(argv), env=tuple(env.items()),
        cwd=sd_path, sd_commit=sd.commit if sd else None, dataset_hash=manifest["dataset_hash"], output_name=output_name,
        epochs=int(r.get("max_train_epochs")), save_every=int(r.get("save_every_n_epochs", 1)), model_ref=ref,
        model_local=local, tokenizers=tok_dir, tokenizers_present=tokens_present,
        sample_size=(rig.sample_size if rig and rig.sample_size else recipe.resolution(r)), dry_run=opts.dry_run,
        estimate=est, notes=tuple(notes),
    )


# --- train: execute ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    code: int  # the exit code: 0 done, 128+N interrupted by signal N
    message: str
    done: dict | None = None  # DONE.json, when the run finished


def execute(launch: Launch, *, on_line=None, grace: float = 60.0, notifier: notify.Notifier | None = None,
            follower_box: list | None = None) -> Outcome:
    """Carry out a planned launch: archive a run --force replaces, make the tokenizers and fetch the model
    if needed, run sd-scripts (through kohya.follow and bespoke.proc.spawn, the one process seam) and
    follow it into status.json, then check its LoRAs and write DONE.json. `on_line` sees each output line.
    Each epoch's samples go to TensorBoard (bespoke.tblog); the photo alarm goes to `notifier` too.
    `follower_box` receives the Follower, so a caller can tell where a failed run stood."""
    t0 = time.time()
    ws = launch.ws
    if launch.run.archive:
        runs.archive(ws)
    env = launch.environ
    tokens_ok = launch.tokenizers_present
    if not tokens_ok:
        try:
            tokens.build(launch.tokenizers)
            tokens_ok = True
        except BespokeError as e:
            watch.passed_over("tokenizers not built, sd-scripts downloads them itself when online", e)
    if launch.model_local is None:
        launch = launch.with_model(model.resolve(launch.model_ref, env.get("HF_HUB_CACHE")))
    if tokens_ok:
        env["HF_HUB_OFFLINE"] = "1"
    argv = list(launch.argv)

    ws.output.mkdir(parents=True, exist_ok=True)
    w, h = launch.sample_size
    atomic_write_text(ws.sample_prompts, recipe.prompt_file_text(width=w, height=h))
    runs.start(ws, launch.key, {"argv": argv, "dataset_hash": launch.dataset_hash, "sd_scripts_commit": launch.sd_commit})
    log_file = ws.train_log(time.strftime("%Y%m%d-%H%M%S"))
    run, math = launch.run, launch.math
    status = progress.Status(stage="starting", epoch=run.state_epoch, epochs=launch.epochs, log=str(log_file),
                             output_name=launch.output_name)
    first_stage = "compiling" if _compiles(launch.profile) and launch.gpus else "starting"
    follower = progress.Follower(ws.status, ws.loss, status, step_offset=run.state_epoch * math.steps_per_epoch,
                                 total=math.total_steps, first_stage=first_stage)
    if follower_box is not None:
        follower_box.append(follower)
    check_resume = watch.ResumeCheck(run.state_epoch, launch.epochs) if run.action == "resume" else None
    alarm = watch.EpochAlarm(ws, follower, board=tblog.Board(ws.board, recipe.TEST_PROMPTS),
                        steps_per_epoch=math.steps_per_epoch, first=run.state_epoch, notifier=notifier)
    hooks = [h for h in (on_line, check_resume, alarm) if h is not None]

    def each_line(line: str) -> None:
        for hook in hooks:
            hook(line)

    caches = [env.get("TORCHINDUCTOR_CACHE_DIR"), env.get("TRITON_CACHE_DIR")]
    if _compiles(launch.profile) and launch.gpus and all(c and ws.contains(c) for c in caches):
        # bespoke's own caches only: one the user pointed elsewhere may serve other work, and is left alone
        if emptied := kernelcache.prepare(*caches):
            log.warning(emptied)
    log.info(f"log: {log_file}")
    try:
        outcome = kohya.follow(argv, env, log_file, follower, cwd=str(launch.cwd), grace=grace, on_line=each_line)
    finally:
        alarm.board.close()
    if outcome.interrupted_by is not None:
        follower.set(stage="interrupted", message=f"interrupted at step {follower.status.step}")
        return Outcome(128 + outcome.interrupted_by, f"interrupted at step {follower.status.step}; run again to "
                       "resume from the last finished epoch")
    if check_resume is not None and check_resume.error:
        follower.set(stage="failed", last_error=check_resume.error)
        raise TrainingError(check_resume.error, str(log_file), "rerun with --force to start this run over")
    if outcome.exit_code != 0:
        known = kohya.explain(outcome.tail)
        last = kohya.last_error_line(outcome.tail)
        follower.set(stage="failed", last_error=last or f"exit code {outcome.exit_code}")
        what, fix = known or (f"sd-scripts failed (exit {outcome.exit_code}): {last or 'see the log'}",
                              f"read {log_file}")
        raise TrainingError(what, str(log_file), fix, exit_code=1)
    done = runs.finish(ws, launch.key, launch.output_name, launch.epochs, {
        "recipe": list(launch.recipe_argv), "dataset_hash": launch.dataset_hash, "sd_scripts_commit": launch.sd_commit,
        "durations": {"train_seconds": round(outcome.seconds, 1), "total_seconds": round(time.time() - t0, 1)},
        "math": {"steps_per_epoch": math.steps_per_epoch, "total_steps": math.total_steps, "gpus": launch.gpus},
    }, every=launch.save_every)
    alarm.final(launch.epochs)
    alarm.board.close()
    follower.set(stage="done", step=math.total_steps, message=f"{len(done['epochs'])} epoch LoRAs in {ws.output}")
    return Outcome(0, f"done: {len(done['epochs'])} LoRA files in {ws.output} ({outcome.seconds:.0f} s)", done)


def notifier_from_env() -> notify.Notifier:
    """BESPOKE_NOTIFY_URL's notifier; an undelivered notification is a warning in the log."""
    return notify.from_env(os.environ, warn=log.warning)


def train(ws: Workspace | Path, opts: TrainOptions, *, probed: dict | None = None, rig: Rig | None = None,
          on_line=None, grace: float = 60.0, notifier: notify.Notifier | None = None) -> int:
    """The train stage: plan, say what it will do, execute (resume; no-op when done). Returns the exit code.
    BESPOKE_NOTIFY_URL hears of the end: done, failed or interrupted (bespoke.notify). Holds the workspace
    lock, except for a dry run (it writes nothing)."""
    return train_outcome(ws, opts, probed=probed, rig=rig, on_line=on_line, grace=grace, notifier=notifier).code


def train_outcome(ws: Workspace | Path, opts: TrainOptions, *, probed: dict | None = None, rig: Rig | None = None,
                  on_line=None, grace: float = 60.0, notifier: notify.Notifier | None = None,
                  notify_done: bool = True) -> Outcome:
    """`train`, returning the Outcome: `done` is set only when this call trained to the end."""
    note = notifier or notifier_from_env()
    box: list = []
    try:
        outcome = _locked_train(ws, opts, probed, rig, on_line, grace, note, box)
    except BespokeError as e:
        st = box[0].status if box else None
        note.send("failed", stage="failed", epoch=st and st.epoch, step=st and st.step, total=st and st.total,
                  message=e.line())
        note.flush()
        raise
    st = box[0].status if box else None
    if st is not None and outcome.code >= 128:
        note.send("interrupted", stage="interrupted", epoch=st.epoch, step=st.step, total=st.total,
                  message=outcome.message)
    elif st is not None and outcome.done is not None and notify_done:
        note.send("done", stage="done", epoch=st.epoch, step=st.step, total=st.total, message=outcome.message)
    note.flush()
    return outcome


def _locked_train(ws, opts: TrainOptions, probed, rig, on_line, grace, note, box) -> Outcome:
    ws = Workspace.of(ws)
    with contextlib.nullcontext() if opts.dry_run else ws.lock("train"):
        return _train(ws, opts, probed, rig, on_line, grace, note, box)


def _train(ws: Workspace, opts: TrainOptions, probed: dict | None, rig: Rig | None, on_line, grace: float,
           note: notify.Notifier, box: list) -> Outcome:
    ws.apply_cache_env()
    if probed is None:  # `run` passes its check's probe; a Rig needs none (it trains with --sdpa on the CPU)
        probed = {} if rig else preflight.probe(imports_only=True, cache=ws.probe_cache)
    launch = plan(ws, opts, probed, rig)
    log.info(f"profile: {launch.profile.name} ({launch.profile_why or 'asked for'}): {launch.profile.note}")
    for w in launch.warnings:
        log.warning(w)
    if launch.run.action == "done" and not opts.dry_run:
        log.info(f"nothing to do: this recipe and data finished already ({ws.done_file}); "
                 "change the recipe or data, or --force to train again")
        return Outcome(0, "nothing to do")
    for line in launch.lines():
        log.info(line)
    if opts.dry_run:
        return Outcome(0, "dry run")
    outcome = execute(launch, on_line=on_line, grace=grace, notifier=note, follower_box=box)
    log.info(outcome.message)
    return outcome


def evaluate_after_training(ws: Workspace | Path) -> dict | None:
    """Score the epochs, write the report and put the verdict in TensorBoard; a failing report never fails a
    finished training. Returns report.json's dict, or None."""
    ws = Workspace.of(ws)
    try:
        result = evaluate.evaluate(ws)
    except BespokeError as e:
        log.warning(f"evaluation failed: {e.line()}")
        return None
    done = runs.read_done(ws)
    board = tblog.Board(ws.board, recipe.TEST_PROMPTS)
    try:
        board.final(result, int(((done or {}).get("math") or {}).get("total_steps", 0)))
    except (OSError, ImportError) as e:
        log.warning(f"TensorBoard: the verdict was not written ({e})")
    finally:
        board.close()
    return result


def publish_after_evaluation(ws: Workspace, repo: str) -> None:
    """BESPOKE_HUB_REPO: upload the results; a failed upload is a warning (status.json records it)."""
    from bespoke import publish

    log.info(f"== publish to {repo}")
    try:
        p, url = publish.publish(ws, repo, dict(os.environ))
    except BespokeError as e:
        log.warning(f"publish failed, training's results are safe: {e.line()}")
        return
    log.info(f"published {len(p.files)} files to {repo}: {url}")


def run(ws: Workspace | Path, data: Path | None, popts: PrepareOptions, topts: TrainOptions,
        show_findings=None) -> int:
    """check -> prepare -> train -> evaluate (-> publish, with BESPOKE_HUB_REPO): what the container runs.
    Returns the exit code. `show_findings(findings)` shows check's table (the CLI prints it; by default it
    is logged). BESPOKE_NOTIFY_URL hears of the end; done comes after the evaluation, with its verdict.
    Holds the workspace lock throughout (a run refused for a held lock notifies nobody)."""
    ws = Workspace.of(ws)
    if data is not None:
        dataset.refuse_overlap(ws, data)
    with ws.lock("run"):
        note = notifier_from_env()
        try:
            return _run(ws, data, popts, topts, show_findings, note)
        except BespokeError as e:
            if "failed" not in note.events:  # train says so itself, with the step
                note.send("failed", stage="failed", message=e.line())
            raise
        finally:
            note.flush()


def _run(ws: Workspace, data, popts: PrepareOptions, topts: TrainOptions, show_findings, note) -> int:
    log.info("== check")
    probed = preflight.probe(cache=ws.probe_cache)
    findings = check(ws, data, topts.overrides, popts, probed=probed, profile=topts.profile,
                     price_per_hour=topts.price_per_hour)
    if show_findings is not None:
        show_findings(findings)
    else:
        for line in preflight.table(findings):
            log.info(line)
    if preflight.has_errors(findings):
        raise PreflightError("preflight found errors", str(ws), "fix the errors in the table above")
    log.info("== prepare")
    prepare(ws, data, popts)
    log.info("== train")
    outcome = train_outcome(ws, topts, probed=probed, notifier=note, notify_done=False)
    if outcome.code == 0 and not topts.dry_run:
        log.info("== evaluate")
        result = evaluate_after_training(ws) or {}
        if outcome.done is not None:
            rec = result.get("recommended") or {}
            math = outcome.done.get("math") or {}
            note.send("done", stage="done", epoch=len(outcome.done.get("epochs", [])) and
                      max(e["epoch"] for e in outcome.done["epochs"]), step=math.get("total_steps"),
                      total=math.get("total_steps"), message=result.get("reason") or outcome.message,
                      recommended_epoch=rec.get("epoch"), score=rec.get("mean_score"))
        if repo := os.environ.get("BESPOKE_HUB_REPO", "").strip():
            publish_after_evaluation(ws, repo)
    return outcome.code
