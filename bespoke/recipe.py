"""The training recipe: the user's exact sdxl_train_network.py arguments, overrides, and the math.

Pure functions: a recipe in, `list[str]` out. Nothing here starts a process or touches the disk
beyond reading the flag list that ships with the package.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from bespoke.errors import RecipeError
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
REFUSED = {"config_file": "TOML configs parsed resolution as an int in the notes; use --set",
           "dataset_config": "bespoke lays out the data itself; use bespoke prepare's options"}


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


def parse_override(text: str) -> tuple[str, object]:
    """`NAME=VALUE` checked against sdxl_train_network.py's flags; returns the recipe value."""
    name, sep, value = text.partition("=")
    name = name.strip().lstrip("-").replace("-", "_")
    if not sep or not name:
        raise RecipeError(f"override '{text}' is not NAME=VALUE", "--set", "write it as --set max_train_epochs=12")
    if name in REFUSED:
        raise RecipeError(f"--set {name} is not supported: {REFUSED[name]}", "--set")
    if name in OWNED:
        raise RecipeError(f"--set {name}: bespoke sets this from the workspace", "--set",
                          "use --workspace, or bespoke prepare's options")
    spec = flags().get(name)
    if spec is None:
        close = [f for f in flags() if name in f or f in name][:3]
        hint = f"did you mean {', '.join(close)}?" if close else f"see python {SCRIPT} --help"
        raise RecipeError(f"unknown sd-scripts flag '{name}'", "--set", hint)
    value = value.strip()
    kind = spec["type"]
    if kind == "bool":
        low = value.lower()
        if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise RecipeError(f"--set {name}={value}: {name} is a switch", "--set", f"use {name}=true or {name}=false")
        return name, low in ("true", "1", "yes", "on")
    if "nargs" in spec:
        return name, shlex.split(value)
    if kind in ("int", "float"):
        try:
            (int if kind == "int" else float)(value)
        except ValueError:
            raise RecipeError(f"--set {name}={value}: expected {'an integer' if kind == 'int' else 'a number'}",
                              "--set", f"e.g. --set {name}={'12' if kind == 'int' else '0.0001'}") from None
    if "choices" in spec and value not in spec["choices"]:
        raise RecipeError(f"--set {name}={value}: not one of {', '.join(spec['choices'])}", "--set")
    return name, value


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
    for text in overrides:
        name, value = parse_override(text)
        r.overridden[name] = value
        r.set(name, value)
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
        raise RecipeError(f"resolution '{value}' is not W,H", "--set resolution", "e.g. --set resolution=1024,1024") from None
    return (parts[0], parts[-1])


def resolution_for(overrides=()) -> tuple[int, int]:
    """The training resolution the recipe will use with these overrides."""
    return _pair(dict(parse_override(o) for o in overrides).get("resolution", dict(NOTES)["resolution"]))


def resolution(r: Recipe) -> tuple[int, int]:
    return _pair(r.get("resolution", dict(NOTES)["resolution"]))
