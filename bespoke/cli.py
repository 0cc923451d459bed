"""The `bespoke` command line. It parses options and calls the stage modules; it does no work itself.

It is also the one place that prints: the stages say what they do through the `bespoke` logger, and
`show_log` turns that into lines on stdout (warnings yellow, alarms red); errors are worded by
errors.print_error. No other module imports click.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

import click

from bespoke import __version__, masking, switches
from bespoke.errors import BespokeError, print_error, user_error
from bespoke.workspace import DEFAULT_ROOT, Workspace

DEFAULT_WORKSPACE = DEFAULT_ROOT


def workspace_option(f):
    return click.option(
        "--workspace",
        "workspace",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="BESPOKE_WORKSPACE",
        default=DEFAULT_WORKSPACE,
        show_default=True,
        help="The pod's volume: data, caches and outputs live here (env BESPOKE_WORKSPACE).",
    )(f)


def data_option(f):
    return click.option(
        "--data",
        "data",
        type=click.Path(exists=True, path_type=Path),
        envvar="BESPOKE_DATA",
        default=None,
        help="Images and captions: a folder (flat, nested or N_name/) or a .zip (env BESPOKE_DATA). "
        "Default: $WS/dataset/, a single *.zip in $WS, then $WS/runpod_package/training_data/.",
    )(f)


def set_option(f):
    return click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="NAME=VALUE",
        help="Override one sd-scripts argument of the recipe, e.g. --set max_train_epochs=12 (repeatable).",
    )(f)


class _Echo(logging.Handler):
    """The `bespoke` logger's records as lines on stdout: info plain, warnings after a yellow
    `warning: `, errors (the photo alarm) red and bold."""

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if record.levelno >= logging.ERROR:
            click.secho(msg, fg="red", bold=True)
        elif record.levelno >= logging.WARNING:
            click.echo(click.style("warning: ", fg="yellow") + msg)
        else:
            click.echo(msg)


def show_log() -> None:
    """Print what the stages say (idempotent)."""
    logger = logging.getLogger("bespoke")
    if not any(isinstance(h, _Echo) for h in logger.handlers):
        logger.addHandler(_Echo())
    logger.setLevel(logging.INFO)
    logger.propagate = False


_COLORS = {"error": "red", "warn": "yellow", "ok": "green", "info": None}


def print_findings(findings) -> None:
    from bespoke.preflight import table

    for line in table(findings, tag=lambda severity, text: click.style(text, fg=_COLORS[severity])):
        click.echo(line)


def main() -> None:
    """Entry point: run the click group and word every user-fixable error as one line."""
    tidy_env(os.environ)
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:  # click quotes the offending word: never a credential
        e.message = re.sub(r"\d{40,}", lambda m: f"{m[0][:8]}...({len(m[0])} digits)",
                           masking.mask_text(e.message, [*masking.argv_secrets(sys.argv[1:]),
                                                         *masking.secret_values(os.environ)]))
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except (BespokeError, OSError) as e:
        worded = user_error(e)  # a full disk or an unwritable folder is one line too; any other OSError is a bug
        if worded is None:
            raise
        sys.exit(print_error(worded, debug=switches.debug()))


def tidy_env(environ) -> None:
    """The BESPOKE_* variables that stand for options (BESPOKE_DATA for --data...) without the spaces around
    them, and unset when blank: a template's " /workspace" is /workspace, not a folder named " " here."""
    names = {p.envvar for c in cli.commands.values() for p in c.params if isinstance(p.envvar, str)}
    for name in names & set(environ):
        if value := environ[name].strip():
            environ[name] = value
        else:
            del environ[name]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bespoke")
def cli():
    """bespoke: a folder of 24x24 pixel-art portraits in, an SDXL LoRA out.

    \b
    Example:
      bespoke run --workspace /workspace
    """
    show_log()


# --- core: check, prepare, train, run, demo-data, smoke-test -------------------------------------

def prepare_options(f):
    """The data rules and layout, shared by prepare and run."""
    opts = [
        click.option("--repeats", default=10, show_default=True, help="Times each image is seen per epoch."),
        click.option("--concept", default="bespoke_baby", show_default=True, help="Folder name: <repeats>_<concept>."),
        click.option("--expect", type=click.IntRange(1, 10**6), envvar="BESPOKE_EXPECT", default=None,
                     help="Refuse unless exactly N images (the user's set has 203; env BESPOKE_EXPECT)."),
        click.option("--size", default=24, show_default=True, help="Required image width and height in pixels."),
        click.option("--upscale", type=click.Choice(["nearest", "none"]), default="nearest", show_default=True,
                     help="Enlarge to the training resolution with nearest neighbour, or leave it to kohya (Lanczos)."),
        click.option("--resolution", default=None, metavar="W,H",
                     help="Training resolution to prepare for (default: the recipe's, 1024,1024)."),
        click.option("--caption-prefix", default="pixel art, 24x24", show_default=True,
                     help="Every caption must start with this."),
        click.option("--trigger", "triggers", multiple=True, default=("bespoke punk", "bespoke baby"),
                     show_default=True, help="Every caption must contain one of these (repeatable)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _prepare_opts(overrides, repeats, concept, expect, size, upscale, resolution, caption_prefix, triggers):
    from bespoke import recipe

    if resolution is None:
        res = recipe.resolution_for(overrides)
    else:
        try:
            w, _, h = resolution.partition(",")
            res = (int(w), int(h or w))
        except ValueError:
            raise click.BadParameter("use W,H such as 1024,1024", param_hint="--resolution") from None
    from bespoke.pipeline import PrepareOptions

    return PrepareOptions(repeats, concept, expect, size, upscale, res, caption_prefix, tuple(triggers))


def price_option(f):
    return click.option("--price-per-hour", "price_per_hour", envvar="BESPOKE_PRICE_PER_HOUR", default=None,
                        metavar="PRICE", help="The pod's price per hour: the time estimate adds the cost "
                        "(env BESPOKE_PRICE_PER_HOUR).")(f)


def train_options(f):
    opts = [
        set_option,
        click.option("--dry-run", is_flag=True, help="Print the training math and the launch command; start nothing."),
        click.option("--profile", default=None, envvar="BESPOKE_PROFILE",
                     help="Speed profile: exact (the notes' command), fast (the same math, 2.3-3.2x faster, compiles "
                     "for 1-6 min at each start) or lean (fast's compiled blocks with gradient checkpointing, within "
                     "22 GB). Default: fast on Hopper GPUs (H100, H200), where it was proven; lean on cards too small "
                     "for fast (24 GB); exact elsewhere. Env BESPOKE_PROFILE; see bench/RESULTS.md."),
        click.option("--force", is_flag=True,
                     help="Move a run with a different recipe or data to $WS/archive/ and start fresh."),
        click.option("--num-machines", default=1, show_default=True, help="accelerate multi-node: machines."),
        click.option("--machine-rank", default=0, show_default=True, help="accelerate multi-node: this rank."),
        click.option("--main-process-ip", default=None, help="accelerate multi-node: rank 0's address."),
        click.option("--main-process-port", type=int, default=None, help="accelerate multi-node: rank 0's port."),
        click.option("--gpus", type=click.IntRange(1, 1024), default=None,
                     help="--dry-run where no GPU is visible (a laptop): plan for N GPUs (default 1)."),
        price_option,
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _train_opts(overrides, dry_run, profile, force, num_machines, machine_rank, main_process_ip, main_process_port,
                gpus=None, price_per_hour=None):
    from bespoke.estimate import parse_price
    from bespoke.kohya import Machines
    from bespoke.pipeline import TrainOptions

    env_sets = switches.split_sets(os.environ.get("BESPOKE_SET", ""))
    return TrainOptions(overrides=(*env_sets, *overrides), dry_run=dry_run, force=force, profile=profile,
                        machines=Machines(num_machines, machine_rank, main_process_ip, main_process_port),
                        gpus=gpus, price_per_hour=parse_price(price_per_hour))


@cli.command()
@workspace_option
@data_option
@set_option
@click.option("--profile", default=None, envvar="BESPOKE_PROFILE", help="The speed profile to check for (exact, fast, lean).")
@price_option
def check(workspace, data, overrides, profile, price_per_hour):
    """Run the preflight and print a table of findings; exit 1 on any error.

    \b
    Example:
      bespoke check --workspace /workspace --data /workspace/dataset
    """
    from bespoke import pipeline
    from bespoke.errors import PreflightError
    from bespoke.estimate import parse_price
    from bespoke.preflight import ERROR, has_errors

    findings = pipeline.check(Workspace(workspace), data, overrides, profile=profile,
                              price_per_hour=parse_price(price_per_hour))
    print_findings(findings)
    if has_errors(findings):
        failed = sorted({f.check for f in findings if f.severity == ERROR})
        sys.exit(print_error(PreflightError(f"{sum(f.severity == ERROR for f in findings)} error(s) in "
                                            f"{', '.join(failed)}", str(workspace),
                                            "fix the rows marked error above and run again"), debug=False))


@cli.command()
@workspace_option
@data_option
@prepare_options
def prepare(workspace, data, **kw):
    """Check every image and caption, then lay them out as $WS/training_data/<repeats>_<concept>/.

    \b
    Example:
      bespoke prepare --data ./portraits.zip --expect 203
    """
    from bespoke import pipeline

    pipeline.prepare(Workspace(workspace), data, _prepare_opts((), **kw))


@cli.command()
@workspace_option
@train_options
def train(workspace, **kw):
    """Train the LoRA with sd-scripts on every GPU; resumes an interrupted run, no-op when done.

    \b
    Example:
      bespoke train --dry-run --set max_train_epochs=12
    """
    from bespoke import pipeline

    sys.exit(pipeline.train(Workspace(workspace), _train_opts(**kw)))


@cli.command()
@workspace_option
@data_option
@prepare_options
@train_options
def run(workspace, data, repeats, concept, expect, size, upscale, resolution, caption_prefix, triggers, **kw):
    """The whole pipeline: check -> prepare -> train -> evaluate. What the container runs.

    \b
    Example:
      bespoke run --workspace /workspace --expect 203
    """
    from bespoke import pipeline

    topts = _train_opts(**kw)
    popts = _prepare_opts(topts.overrides, repeats, concept, expect, size, upscale, resolution, caption_prefix,
                          triggers)
    sys.exit(pipeline.run(Workspace(workspace), data, popts, topts, show_findings=print_findings))


@cli.command("demo-data")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder to write.")
@click.option("--count", default=12, show_default=True, help="Number of portraits.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same portraits.")
def demo_data(out, count, seed):
    """Write deterministic synthetic 24x24 punk portraits with captions in the user's format.

    \b
    Example:
      bespoke demo-data --out /workspace/dataset --count 203
    """
    from bespoke import demo

    paths = demo.write_demo_data(out, count, seed)
    click.echo(f"wrote {len(paths)} portraits with captions to {out}")


@cli.command("smoke-test")
@click.option("--workspace", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep everything here (default: a new temporary folder).")
def smoke_test(workspace):
    """The real pipeline on CPU with a tiny SDXL and the demo data (needs the sd-scripts environment).

    \b
    Example:
      SD_SCRIPTS_DIR=.cache/sd-scripts bespoke smoke-test --workspace /tmp/smoke
    """
    from bespoke import smoke

    sys.exit(smoke.run(workspace))


# --- evaluation: score, pixelate, evaluate ---
def _grid_option(f):
    return click.option("--grid", default=24, show_default=True, type=click.IntRange(2, 512),
                        help="Cells per side of the sprite the image should be.")(f)


def _palette_option(f):
    return click.option("--palette-from", "palette_from", type=click.Path(exists=True, file_okay=False, path_type=Path),
                        default=None, help="Training images (sprites or upscaled renders) whose colours are the palette.")(f)


def _margin_option(f):
    return click.option("--margin", default=0, show_default=True, type=click.IntRange(0),
                        help="Pixels of padding around the grid on every side.")(f)


@cli.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_grid_option
@_palette_option
@_margin_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def score(images, grid, palette_from, margin, as_json):
    """Judge whether each image is pixel art on a GRID x GRID grid, and why.

    \b
    Example:
      bespoke score /workspace/output/sample/*.png --palette-from /workspace/training_data --json
    """
    import json

    from bespoke.eval import pixelart
    from bespoke.safeio import show

    palette = pixelart.load_palette(palette_from, grid) if palette_from else None
    for path in images:
        result, _ = pixelart.score(pixelart.load_rgb(path, grid, margin), grid, palette, margin)
        if as_json:
            click.echo(json.dumps({"path": str(path), **result.as_dict()}))
            continue
        click.echo(f"{show(path)}: pixel_art: {str(result.pixel_art).lower()}  score {result.score:.2f}")
        click.echo(f"  mismatch {result.mismatch:.3f}  purity {result.purity:.3f}  boundary {result.boundary:.3f}  "
                   f"grid period {result.grid_period:.1f} px  colours {result.colours}"
                   + ("" if result.palette_p95 is None else f"  palette p95 {result.palette_p95:.1f}"))
        for reason in result.reasons:
            click.echo(f"  - {reason}")


@cli.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder for the sprites.")
@_grid_option
@_palette_option
@_margin_option
@click.option("--scale", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Enlarge each sprite by this factor, nearest-neighbour.")
def pixelate(images, out, grid, palette_from, margin, scale):
    """Recover the true GRID x GRID sprite of each image as OUT/<stem>.png (median of each cell's centre).

    \b
    Example:
      bespoke pixelate sample.png --out sprites --palette-from /workspace/training_data --scale 8
    """
    import io

    from bespoke.eval import pixelart
    from bespoke.fsutil import atomic_write_bytes, output_paths
    from bespoke.safeio import show

    palette = pixelart.load_palette(palette_from, grid) if palette_from else None
    for path, dest in zip(images, output_paths(images, out, ".png"), strict=True):
        sprite = pixelart.pixelate(pixelart.load_rgb(path, grid, margin), grid, palette, margin)
        buf = io.BytesIO()
        pixelart.enlarge(sprite, scale).save(buf, format="PNG")
        atomic_write_bytes(dest, buf.getvalue())
        click.echo(f"{show(path)} -> {show(dest)}")


@cli.command()
@workspace_option
@_grid_option
@_palette_option
def evaluate(workspace, grid, palette_from):
    """Score every epoch's samples, recommend an epoch, copy it to best.safetensors, write the report.

    Reads $WS/output/sample/ and the epoch LoRAs; writes $WS/output/report/ (report.html,
    contact-sheet.png, report.json, sprites/) and $WS/output/best.safetensors.

    \b
    Example:
      bespoke evaluate --workspace /workspace
    """
    from bespoke.eval import evaluate as evaluation

    result = evaluation.evaluate(Workspace(workspace), grid, palette_from)
    for line in evaluation.summary_lines(result):
        click.echo(line)


# --- results off the pod: publish ---
@cli.command()
@workspace_option
@click.option("--repo", envvar="BESPOKE_HUB_REPO", required=True, metavar="OWNER/NAME",
              help="The Hugging Face model repo to upload to; created if missing (env BESPOKE_HUB_REPO).")
@click.option("--best-only", is_flag=True, help="Upload best.safetensors only, not every epoch's LoRA.")
@click.option("--public", is_flag=True, help="Create the repo public (default: private). An existing repo keeps "
              "its visibility.")
def publish(workspace, repo, best_only, public):
    """Upload best.safetensors, every epoch's LoRA, the report and a model card to the Hub, in one commit.

    The token comes from HF_TOKEN only. A failed upload changes nothing else; run it again.

    \b
    Example:
      HF_TOKEN=hf_... bespoke publish --workspace /workspace --repo you/bespoke-lora
    """
    from bespoke import publish as hub

    plan, url = hub.publish(Workspace(workspace), repo, dict(os.environ), best_only=best_only, private=not public)
    click.echo(f"published {len(plan.files)} files to {repo} ({'private' if plan.private else 'public'}): {url}")
