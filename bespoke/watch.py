"""What bespoke watches in sd-scripts' output while it trains (pipeline.execute's line hooks): that a resumed
run starts at the right epoch, and each epoch's samples (the photo alarm, TensorBoard, the notifier)."""

from __future__ import annotations

import logging

from bespoke import notify, progress, switches, tblog
from bespoke.errors import BespokeError, TrainingError
from bespoke.eval import evaluate, pixelart
from bespoke.workspace import Workspace

log = logging.getLogger(__name__)


def passed_over(what: str, e: Exception) -> None:
    """A failure bespoke goes on without (it has a fallback): silent, except under BESPOKE_DEBUG=1."""
    if switches.debug():
        log.warning(f"{what}: {e}")


class ResumeCheck:
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


class EpochAlarm:
    """After each epoch's samples, score them, say whether they look like pixel art, and put the samples,
    their sprites and scores in TensorBoard (bespoke.tblog). The base model's samples (epoch 0, with
    sd-scripts' --sample_at_first) go to TensorBoard only: they are not expected to be pixel art."""

    def __init__(self, ws: Workspace, follower: progress.Follower, *, board: tblog.Board | None = None,
                 steps_per_epoch: int = 0, first: int = 0, notifier: notify.Notifier | None = None):
        self.ws, self.follower, self.last = ws, follower, first
        self.board, self.steps_per_epoch, self.notifier = board, steps_per_epoch, notifier
        self.baseline_done = first > 0

    def __call__(self, line: str) -> None:
        ep = progress.parse_epoch(line)
        if ep is not None and ep[0] == 1 and not self.baseline_done:
            self.baseline_done = True
            self._board(0, None)
        if ep is not None and ep[0] > 1:
            self.report(ep[0] - 1)

    def final(self, epochs: int) -> None:
        self.report(epochs)

    def _board(self, epoch: int, alarm: str | None, samples=None) -> None:
        if self.board is None:
            return
        try:
            if samples is None:
                _, _, samples = evaluate.epoch_verdict(self.ws, epoch, None, self.ws.report / "sprites")
            if samples:
                self.board.epoch(epoch, epoch * self.steps_per_epoch, samples, alarm)
        except (BespokeError, OSError, ImportError) as e:  # TensorBoard is a view: it never stops training
            log.warning(f"TensorBoard: epoch {epoch} not written ({e})")

    def report(self, epoch: int) -> None:
        if epoch <= self.last:
            return
        self.last = epoch
        try:
            line, photo_like, samples = evaluate.epoch_verdict(self.ws, epoch, None, self.ws.report / "sprites")
        except BespokeError as e:
            passed_over(f"epoch {epoch}'s samples not scored", e)
            return
        if photo_like:
            line = f"{line}: {pixelart.PHOTO_ALARM}"
        self._board(epoch, line if photo_like else None, samples)
        if photo_like:
            log.error(line)
            self.follower.status.alarms.append(line)
            self.follower.write(force=True)
            if self.notifier is not None:
                st = self.follower.status
                self.notifier.send("photo_alarm", stage=st.stage, epoch=epoch, step=st.step, total=st.total,
                                   message=line)
            if switches.switch("BESPOKE_STOP_ON_PHOTO"):
                raise TrainingError(pixelart.PHOTO_ALARM, f"epoch {epoch}", "BESPOKE_STOP_ON_PHOTO=1 stopped training")
        else:
            log.info(line)
