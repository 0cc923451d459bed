"""The training recipe: the user's exact sdxl_train_network.py arguments, overrides, and the math.

Pure functions: a recipe in, `list[str]` out. Nothing here starts a process or touches the disk
beyond reading the flag list that ships with the package.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from bespoke import safeio
from bespoke.errors import RecipeError
from bespoke.masking import ENV_FOR_FLAG, MASK, is_secret_name, looks_secret, mask_argv
from bespoke.workspace import Workspace

SCRIPT = "sdxl_train_network.py"
DEFAULT_MODEL = "stabilityai/stable-diffusion-xl-base-1.0"
OUTPUT_NAME = "bespoke_baby_sdxl"  # the notes' name: every LoRA file and sample starts with it

# The notes' command, in the notes' order. train_data_dir and output_dir come from the workspace.
NOTES: tuple[tuple[str, object], ...] = (
    ("pretrained_model_name_or_path", DEFAULT_MODEL),
    ("train_data_dir", None),
    ("resolution", "1024,1024"),
    ("output_dir", None),
    ("output_name", OUTPUT_NAME),
    ("save_model_as", "safetensors"),
    ("max_train_epochs", "10"),
    ("learning_rate", "0.0001"),
    ("unet_lr", "0.0001"),
    ("text_encoder_lr", "0.00005"),
    ("network_module", "networks.lora"),
    ("network_dim", "128"),
    ("network_alpha", "64"),
    ("save_every_n_epochs", "1"),
    ("mixed_precision", "bf16"),
    ("cache_latents", True),
    ("cache_latents_to_disk", True),
    ("optimizer_type", "AdamW8bit"),
    ("caption_extension", ".txt"),
    ("lr_scheduler", "cosine_with_restarts"),
    ("lr_scheduler_num_cycles", "3"),
    ("min_snr_gamma", "5"),
    ("noise_offset", "0.1"),
    ("train_batch_size", "2"),
    ("gradient_checkpointing", True),
    ("xformers", True),
    ("seed", "42"),
)

SAMPLER = "euler"  # SDXL base ships EulerDiscreteScheduler; non-ancestral, so epochs differ by the LoRA only
SAMPLE_SEED = 1234
TEST_PROMPTS = (
    "portrait of bespoke punk, green solid background, black hair, blue eyes, light skin",
    "portrait of bespoke baby, pink solid background, brown hair, brown eyes, medium skin",
    "portrait of bespoke punk lad, blue solid background, blonde hair, green eyes, tan skin",
    "portrait of bespoke punk lady, purple solid background, red hair, hazel eyes, pale skin",
)

# Set from the workspace or by bespoke itself; overriding them would break the layout or resume.
OWNED = {"train_data_dir", "output_dir", "logging_dir", "resume", "sample_prompts", "tokenizer_cache_dir"}
# Refused with (why, the fix). The paths sd-scripts would write to outside the workspace are among them.
REFUSED = {
    "config_file": ("TOML configs parsed resolution as an int in the notes", "give each setting as --set NAME=VALUE"),
    "dataset_config": ("bespoke lays out the data itself", "use bespoke prepare's options (--repeats, --concept, "
                       "--resolution)"),
    "console_log_file": ("sd-scripts would write it outside the workspace",
                         "read the training log bespoke keeps in output/logs/train-*.log"),
    "offload_optimizer_nvme_path": ("DeepSpeed's offload is not part of this recipe", "leave it out"),
    "offload_param_nvme_path": ("DeepSpeed's offload is not part of this recipe", "leave it out"),
}


@cache
def flags() -> dict[str, dict]:
    """The flags sdxl_train_network.py accepts at the pinned commit (tools/dump_flags.py writes it)."""
    text = resources.files("bespoke").joinpath("data/sdxl_train_network_flags.json").read_text()
    return json.loads(text)["flags"]


@dataclass
class Recipe:
    """Ordered sd-scripts arguments: True is a bare flag; strings are values; lists are nargs values."""

    args: dict[str, object]
    added: dict[str, str] = field(default_factory=dict)  # name -> why bespoke added or changed it
    overridden: dict[str, object] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # Credentials given as flags (huggingface_token, wandb_api_key), for the child's environment: never in
    # argv, so never in the echo, the log, run.json, DONE.json or the run's identity.
    env: dict[str, str] = field(default_factory=dict, repr=False)

    def get(self, name: str, default=None):
        return self.args.get(name, default)

    def set(self, name: str, value, why: str | None = None) -> None:
        if value is None or value is False:
            self.args.pop(name, None)
        else:
            self.args[name] = value
        if why:
            self.added[name] = why

    def argv(self) -> list[str]:
        out = []
        for name, value in self.args.items():
            if value is True:
                out.append(f"--{name}")
            elif isinstance(value, list):
                out += [f"--{name}", *map(str, value)]
            else:
                out.append(f"--{name}={value}")
        return out


# Ranges the recipe's math and sd-scripts need, beyond the flag table's types: a 0 batch divides by zero,
# a negative epoch count trains nothing. Every other number must be finite and not negative.
AT_LEAST_1 = frozenset({
    "train_batch_size", "gradient_accumulation_steps", "max_train_epochs", "max_train_steps", "save_every_n_epochs",
    "save_every_n_steps", "sample_every_n_epochs", "sample_every_n_steps", "network_dim", "lr_scheduler_num_cycles",
    "vae_batch_size", "save_last_n_epochs", "save_last_n_epochs_state", "save_last_n_steps",
    "save_last_n_steps_state", "bucket_reso_steps", "validate_every_n_epochs", "validate_every_n_steps",
    "max_validation_steps", "dataset_repeats", "min_bucket_reso", "max_bucket_reso",
})
FRACTION = frozenset({"caption_dropout_rate", "caption_tag_dropout_rate", "network_dropout", "validation_split",
                      "lr_scheduler_min_lr_ratio"})
# Values sd-scripts joins into a path under output_dir or logging_dir: a plain name, or it escapes the workspace.
NAME_VALUES = frozenset({"output_name", "log_prefix", "log_tracker_name", "wandb_run_name"})
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9 ._+-]{0,127}$")


def _shown(name: str, value: str) -> str:
    """A value as an error message may quote it: escaped, and *** when it is a credential."""
    if is_secret_name(name) or looks_secret(value):
        return MASK
    return safeio.show(value) if len(value) <= 40 else f"{safeio.show(value[:20])}... ({len(value)} characters)"


def _number(name: str, kind: str, value: str) -> str:
    """`value` checked as the flag's int or float, finite, and in the range the recipe needs."""
    example = "12" if kind == "int" else "0.0001"
    try:
        number = int(value) if kind == "int" else float(value)
        math.isfinite(number)  # an int past float's range raises OverflowError here
    except OverflowError:
        raise RecipeError(f"--set {name}={_shown(name, value)}: not a finite number", "--set",
                          f"e.g. --set {name}={example}") from None
    except ValueError:
        raise RecipeError(f"--set {name}={_shown(name, value)}: expected {'an integer' if kind == 'int' else 'a number'}",
                          "--set", f"e.g. --set {name}={example}") from None
    if not math.isfinite(number):
        raise RecipeError(f"--set {name}={_shown(name, value)}: not a finite number", "--set", f"e.g. --set {name}={example}")
    low = 1 if name in AT_LEAST_1 else 0
    if number < low:
        raise RecipeError(f"--set {name}={_shown(name, value)}: must be at least {low}", "--set", f"e.g. --set {name}={example}")
    if name in FRACTION and number > 1:
        raise RecipeError(f"--set {name}={_shown(name, value)}: must be from 0 to 1", "--set", f"e.g. --set {name}=0.1")
    return value


def parse_override(text: str) -> tuple[str, object]:
    """`NAME=VALUE` checked against sdxl_train_network.py's flags (type and range); returns the recipe value."""
    name, sep, value = text.partition("=")
    name = name.strip().lstrip("-").replace("-", "_")
    shown = mask_argv([text])[0]
    if not sep or not name:
        raise RecipeError(f"override {safeio.show(shown)!r} is not NAME=VALUE", "--set",
                          "write it as --set max_train_epochs=12")
    if name in REFUSED:
        why, fix = REFUSED[name]
        raise RecipeError(f"--set {name} is not supported: {why}", "--set", fix)
    if name in OWNED:
        raise RecipeError(f"--set {name}: bespoke sets this from the workspace", "--set",
                          "use --workspace, or bespoke prepare's options")
    spec = flags().get(name)
    if spec is None:
        close = [f for f in flags() if name in f or f in name][:3]
        hint = f"did you mean {', '.join(close)}?" if close else f"see python {SCRIPT} --help"
        raise RecipeError(f"unknown sd-scripts flag {safeio.show(name)!r}", "--set", hint)
    value = value.strip()
    if safeio.text_problem(value) is not None or "\n" in value:
        raise RecipeError(f"--set {name}: the value {safeio.text_problem(value) or 'has a line break'}", "--set",
                          "write the value on one line without control characters")
    kind = spec["type"]
    if kind == "bool":
        low = value.lower()
        if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise RecipeError(f"--set {name}={_shown(name, value)}: {name} is a switch", "--set",
                              f"use {name}=true or {name}=false")
        return name, low in ("true", "1", "yes", "on")
    if "nargs" in spec:
        try:
            words = shlex.split(value)
        except ValueError as e:
            raise RecipeError(f"--set {name}: cannot split the value into words ({e})", "--set",
                              f"balance the quotes, e.g. --set \"{name}=a=1 b='x y'\"") from None
        if kind in ("int", "float"):
            words = [_number(name, kind, w) for w in words]
        return name, words
    if kind in ("int", "float"):
        value = _number(name, kind, value)
    if name == "lr_warmup_steps":  # sd-scripts takes steps or a ratio of them, as a string
        value = _number(name, "float", value)
    if "choices" in spec and value not in spec["choices"]:
        raise RecipeError(f"--set {name}={_shown(name, value)}: not one of {', '.join(spec['choices'])}", "--set",
                          f"e.g. --set {name}={spec['choices'][0]}")
    if name in NAME_VALUES and (not _PLAIN_NAME.match(value) or ".." in value):
        raise RecipeError(f"--set {name}={_shown(name, value)}: not a plain file name (sd-scripts makes a path "
                          "of it, which must stay in the workspace)", "--set",
                          f"use letters, digits, '.', '_', '+' or '-', no '/' (e.g. --set {name}=my_lora)")
    if name == "resolution":
        _pair(value)
    return name, value


def check_overrides(overrides) -> tuple[list[tuple[str, object]], list[RecipeError]]:
    """Every override parsed: the good ones in order, and an error for each bad one (none hides another)."""
    good, errors = [], []
    for text in overrides:
        try:
            good.append(parse_override(text))
        except RecipeError as e:
            errors.append(e)
    return good, errors


def _raise_all(errors: list[RecipeError]) -> None:
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise RecipeError(f"{len(errors)} overrides are wrong", "--set", "fix the overrides listed above",
                          problems=[e.line() for e in errors])


def build(
    workspace: Workspace | Path,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    tokenizer_dir: Path,
    xformers_available: bool = True,
) -> Recipe:
    """The notes' recipe for this workspace, with bespoke's additions and the user's overrides."""
    ws = Workspace.of(workspace)
    r = Recipe({name: value for name, value in NOTES})
    r.args["train_data_dir"] = str(ws.training_data)
    r.args["output_dir"] = str(ws.output)
    r.set("tokenizer_cache_dir", str(tokenizer_dir), "offline tokenizers: no Hub download at train time")
    r.set("logging_dir", str(ws.logs), "TensorBoard logs on the volume")
    r.set("log_with", "tensorboard", "TensorBoard logs on the volume")
    r.set("save_state", True, "resume after an interruption")
    r.set("save_last_n_epochs_state", "1", "keep only the newest state, to spare the disk")
    r.set("sample_prompts", str(ws.sample_prompts), "the notes' four test prompts each epoch")
    r.set("sample_every_n_epochs", "1", "the notes' four test prompts each epoch")
    r.set("sample_sampler", SAMPLER, "SDXL base's own scheduler (Euler), deterministic per seed")
    good, errors = check_overrides(overrides)
    _raise_all(errors)
    for name, value in good:
        if name in ENV_FOR_FLAG:
            r.env[ENV_FOR_FLAG[name]] = str(value)
            r.added[name] = f"passed to sd-scripts as ${ENV_FOR_FLAG[name]}, kept out of the command and files"
            continue
        r.overridden[name] = value
        r.set(name, value)
    # sd-scripts joins these names to output_dir and logging_dir; parse_override keeps them plain names, and
    # the workspace's own containment check holds the line should that rule ever change.
    for flag, folder in (("output_name", ws.output), ("log_prefix", ws.logs), ("log_tracker_name", ws.logs),
                         ("wandb_run_name", ws.logs)):
        if flag in r.args and not ws.contains(folder.absolute() / f"{r.args[flag]}-000001.safetensors"):
            raise RecipeError(f"--set {flag}={safeio.show(r.args[flag])} would write outside the workspace",
                              str(ws), f"use a plain name, e.g. --set {flag}=my_lora")
    if not xformers_available and r.get("xformers") and "xformers" not in r.overridden:
        r.set("xformers", None)
        r.set("sdpa", True, "xformers is not importable here; PyTorch's SDPA attention instead")
        r.warnings.append("xformers is not importable: using --sdpa (PyTorch scaled-dot-product attention) instead")
    return r


def prompt_file_text(prompts=TEST_PROMPTS, width: int = 1024, height: int = 1024, steps: int = 30,
                     scale: float = 7.5, seed: int = SAMPLE_SEED) -> str:
    return "".join(f"{p} --w {width} --h {height} --s {steps} --l {scale} --d {seed}\n" for p in prompts)


@dataclass(frozen=True)
class TrainingMath:
    images: int
    repeats: int
    batch: int
    gpus: int
    epochs: int
    grad_accum: int = 1

    @property
    def samples_per_epoch(self) -> int:
        return self.images * self.repeats

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.samples_per_epoch / (self.batch * self.gpus * self.grad_accum))

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def lines(self) -> list[str]:
        per_step = self.batch * self.gpus * self.grad_accum
        gpu = f" x {self.gpus} GPUs" if self.gpus > 1 else ""
        acc = f" x {self.grad_accum} accumulation" if self.grad_accum > 1 else ""
        return [
            f"images:          {self.images}",
            f"repeats:         {self.repeats}",
            f"samples/epoch:   {self.images} x {self.repeats} = {self.samples_per_epoch}",
            f"steps/epoch:     {self.samples_per_epoch} / (batch {self.batch}{gpu}{acc} = {per_step}) "
            f"= {self.steps_per_epoch}",
            f"total steps:     {self.steps_per_epoch} x {self.epochs} epochs = {self.total_steps}",
        ]


def training_math(recipe: Recipe, images: int, repeats: int, gpus: int) -> TrainingMath:
    return TrainingMath(images, repeats, int(recipe.get("train_batch_size", 1)), max(gpus, 1),
                        int(recipe.get("max_train_epochs", 1)), int(recipe.get("gradient_accumulation_steps", 1)))


def _pair(value) -> tuple[int, int]:
    try:
        parts = [int(p) for p in str(value).split(",")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or not all(MIN_SIDE <= p <= MAX_SIDE for p in parts):
        raise RecipeError(f"resolution {safeio.show(value)!r} is not W,H from {MIN_SIDE} to {MAX_SIDE}",
                          "--set resolution", "e.g. --set resolution=1024,1024")
    return (parts[0], parts[-1])


MIN_SIDE, MAX_SIDE = 64, 8192


def resolution_for(overrides=()) -> tuple[int, int]:
    """The training resolution the recipe will use with these overrides (bad overrides are left to check)."""
    return _pair(dict(check_overrides(overrides)[0]).get("resolution", dict(NOTES)["resolution"]))


def resolution(r: Recipe) -> tuple[int, int]:
    return _pair(r.get("resolution", dict(NOTES)["resolution"]))
