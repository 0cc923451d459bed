"""The run in TensorBoard: each epoch's samples, their sprites and pixel-art scores, the alarm, the verdict.

sd-scripts logs the loss to its own run in the workspace's logs/ and the sample images only to wandb, so
bespoke writes a run of its own beside it (Workspace.board, logs/bespoke/) with tensorboardX's writer (numpy
and protobuf only: the core never imports torch). Tags, per epoch at its last step:

  sample/<n>_<prompt>   the sample image          sprite/<n>_<prompt>   the recovered 24x24 sprite, 8x
  score/<n>_<prompt>    its pixel-art score       score/mean, score/pixel_art_share
  alarm                 the photo alarm, as text, when it fires (tensorboardX adds /text_summary)
and once, at the end: report/contact_sheet (image), report/recommendation (text).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np
from PIL import Image

RUN = "bespoke"  # the run's name in TensorBoard: Workspace.board's folder
SPRITE_SCALE = 8
MAX_SAMPLE_PX = 1024


def prompt_label(index: int, prompts: tuple[str, ...]) -> str:
    """`0_bespoke_punk_green_solid_background`: the prompt's number and its first words, in the characters
    TensorBoard keeps in a tag (the writer would replace the others with '_')."""
    if index >= len(prompts):
        return str(index)
    words = " ".join(prompts[index].removeprefix("portrait of ").split(", ")[:2])
    return "_".join([str(index), *re.sub(r"[^\w.-]+", " ", words).split()])


def _hwc(path_or_img, max_px: int = MAX_SAMPLE_PX, scale: int = 1) -> np.ndarray:
    img = path_or_img if isinstance(path_or_img, Image.Image) else Image.open(path_or_img)
    img = img.convert("RGB")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    if max(img.size) > max_px:
        img.thumbnail((max_px, max_px), Image.NEAREST)
    return np.asarray(img)


class Board:
    """A lazily opened writer for bespoke's run; every write is flushed, so TensorBoard sees it at once."""

    def __init__(self, run_dir: Path, prompts: tuple[str, ...] = ()):
        self.dir = Path(run_dir)  # Workspace.board
        self.prompts = prompts
        self._writer = None

    @property
    def writer(self):
        if self._writer is None:
            from tensorboardX import SummaryWriter

            self.dir.mkdir(parents=True, exist_ok=True)
            # the file is named by the second and the host only: a second writer in the same second (the
            # verdict's, right after the last epoch's) would truncate the first one's file. The suffix keeps
            # the names distinct and in the order they were opened, which is the order TensorBoard reads.
            self._writer = SummaryWriter(logdir=str(self.dir), flush_secs=5,
                                         filename_suffix=f".{time.time_ns()}.{os.getpid()}")
        return self._writer

    def epoch(self, epoch: int, step: int, samples, alarm: str | None = None) -> None:
        """One epoch's samples (evaluate.Sample, scored; sprite paths where written) at `step`."""
        w = self.writer
        scores = []
        for s in sorted(samples, key=lambda s: s.prompt):
            label = prompt_label(s.prompt, self.prompts)
            w.add_image(f"sample/{label}", _hwc(s.path), step, dataformats="HWC")
            if s.sprite is not None and Path(s.sprite).is_file():
                w.add_image(f"sprite/{label}", _hwc(s.sprite, scale=SPRITE_SCALE), step, dataformats="HWC")
            if s.score is not None:
                w.add_scalar(f"score/{label}", float(s.score.score), step)
                scores.append(s.score)
        if scores:
            w.add_scalar("score/mean", float(np.mean([sc.score for sc in scores])), step)
            w.add_scalar("score/pixel_art_share", sum(sc.pixel_art for sc in scores) / len(scores), step)
        if alarm:
            w.add_text("alarm", f"epoch {epoch}: {alarm}", step)
        w.flush()

    def final(self, result: dict, step: int) -> None:
        """The evaluation's verdict (report.json's dict): the contact sheet and the recommendation."""
        w = self.writer
        sheet = Path(result.get("contact_sheet") or "")
        if sheet.is_file():
            w.add_image("report/contact_sheet", _hwc(sheet, max_px=4096), step, dataformats="HWC")
        rec = result.get("recommended")
        head = (f"**recommended: epoch {rec['epoch']}** (mean score {rec['mean_score']:.2f})" if rec
                else "**no recommendation**")
        rows = ["| epoch | pixel art | mean score |", "|---|---|---|"]
        rows += [f"| {'base' if e['baseline'] else e['epoch']} | {e['pixel_art']}/{e['count']} | "
                 f"{e['mean_score']:.2f} |" for e in result.get("epochs", [])]
        w.add_text("report/recommendation", "\n\n".join([head, result.get("reason", ""), "\n".join(rows)]), step)
        w.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
