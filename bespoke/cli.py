"""The `bespoke` command line. It parses options and calls the stage modules; it does no work itself."""

from __future__ import annotations

import functools
import os
import sys
import traceback
from pathlib import Path

import click

from bespoke import __version__
from bespoke.errors import BespokeError, DataError

DEFAULT_WORKSPACE = "/workspace"


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


def main() -> None:
    """Entry point: run the click group and word every user-fixable error as one line."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except BespokeError as e:
        if os.environ.get("BESPOKE_DEBUG") == "1":
            traceback.print_exc()
        if isinstance(e, DataError):
            for problem in e.problems:
                click.echo(f"  {problem}", err=True)
        click.secho(f"error: {e.line()}", fg="red", err=True)
        sys.exit(getattr(e, "exit_code", 1))


def _debug_hint(f):
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bespoke")
def cli():
    """bespoke: a folder of 24x24 pixel-art portraits in, an SDXL LoRA out.

    \b
    Example:
      bespoke run --workspace /workspace
    """


# --- core: check, prepare, train, run, demo-data, smoke-test -------------------------------------
# (commands are added below by the stage modules' wiring)
