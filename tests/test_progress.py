"""The progress parser on real captured sd-scripts output (tests/data/kohya_cpu_*.log, CPU smoke run)."""

import io
import json
import re
from pathlib import Path

from bespoke import progress

DATA = Path(__file__).parent / "data"


def lines(name):
    return [s.decode() for s in re.split(rb"[\r\n]", (DATA / name).read_bytes()) if s.strip()]


def test_parse_real_tqdm_lines():
    ticks = [t for t in map(progress.parse_tqdm, lines("kohya_cpu_epoch1.log")) if t]
    assert ticks[0].step == 0 and ticks[0].total == 40 and ticks[0].seconds_per_step is None
    last = ticks[-1]
    assert last.step == 20 and last.total == 40 and last.loss is not None
    assert any(t.loss == 0.926 and t.seconds_per_step == 7.76 for t in ticks)


def test_parse_users_line_and_it_per_second():
    t = progress.parse_tqdm("steps:  10%|█         | 1015/10150 [25:14<3:47:20,  1.49s/it, avr_loss=0.0812]")
    assert (t.step, t.total, t.seconds_per_step, t.eta, t.loss) == (1015, 10150, 1.49, "3:47:20", 0.0812)
    t = progress.parse_tqdm("steps:  50%|█████     | 10/20 [00:10<00:10,  2.00it/s, avr_loss=nan]")
    assert t.seconds_per_step == 0.5 and t.loss != t.loss  # nan


def test_sampler_bars_are_not_training_progress():
    assert progress.parse_tqdm(" 40%|████      | 12/30 [00:01<00:01, 10.17it/s]") is None


def test_epoch_and_stage_lines():
    assert progress.parse_epoch("epoch 1/2") == (1, 2)
    assert progress.parse_epoch("epoch is incremented.") is None
    staged = [progress.parse_stage(x) for x in lines("kohya_cpu_epoch1.log")]
    assert "caching latents" in staged and "sampling" in staged and "saving" in staged


def follow(name, tmp_path, **kw):
    out = io.StringIO()
    f = progress.Follower(tmp_path / "status.json", tmp_path / "loss.jsonl", progress.Status(), tty=False,
                          out=out, plain_every=0, **kw)
    for line in lines(name):
        f.feed(line)
    f.flush()
    return f, out.getvalue()


def test_follower_writes_status_and_loss_history(tmp_path):
    f, shown = follow("kohya_cpu_epoch1.log", tmp_path)
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["step"] == 20 and status["total"] == 40 and status["epoch"] == 2
    assert status["stage"] in ("training", "sampling", "saving")
    history = [json.loads(x) for x in (tmp_path / "loss.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == list(range(1, 21))
    assert history[0]["loss"] == 0.926 and history[1]["loss"] == 0.736  # each step's own loss, not the stale one
    assert "step 20/40 (50%)" in shown
    assert "10.17it/s" not in shown  # the sampler's bars stay in the log


def test_follower_after_resume_counts_the_whole_run(tmp_path):
    # kohya's bar restarts at 0/40 after --resume (its miscount); bespoke offsets by the finished epoch.
    f, shown = follow("kohya_cpu_resume.log", tmp_path, step_offset=20, total=40)
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["step"] == 40 and status["total"] == 40
    assert "step 21/40" in shown or "step 22/40" in shown
    assert "step 60/" not in shown


def test_rate_and_eta_come_from_the_recent_steps_not_tqdms_run_average(tmp_path):
    """The fast profile compiles for minutes inside step 1; sd-scripts' tqdm (smoothing=0) then reports the
    whole run's average, 10x the real step time, and an ETA hours too long."""
    now = [0.0]
    f = progress.Follower(tmp_path / "s.json", None, progress.Status(), tty=False, out=io.StringIO(),
                          clock=lambda: now[0])
    for step in range(1, 31):  # step 1 after 200 s of compiling, then 0.4 s a step
        now[0] = 200.0 + 0.4 * step
        tqdm_rate = now[0] / step
        f.feed(f"steps:   0%|          | {step}/10150 [00:00<9:59:59, {tqdm_rate:.2f}s/it, avr_loss=0.5]")
        f.feed(f"steps:   0%|          | {step}/10150 [00:00<9:59:59, {tqdm_rate:.2f}s/it, avr_loss=0.4]")
    s = f.status
    assert abs(s.seconds_per_step - 0.4) < 1e-9
    assert s.eta.startswith("1:07:")  # 0.4 s x 10,120 steps, where tqdm's 7.07 s/it says ~20 h
    said = [line for line in f.out.getvalue().splitlines() if line.startswith("measured over")]
    assert said == ["measured over 20 steps: 0.400 s/step; 10129 steps to go, about 1:07:31"]


def test_compiling_before_the_first_step_shows_elapsed_seconds_not_an_eta(tmp_path):
    """An H200's first ETA of a 40-step run read 2:32:02 (tqdm's 233.9 s/step, step 1 compiling)."""
    now = [0.0]
    out = io.StringIO()
    f = progress.Follower(tmp_path / "s.json", None, progress.Status(), tty=False, out=out, plain_every=0,
                          clock=lambda: now[0], first_stage="compiling")
    f.feed("steps:   0%|          | 0/40 [00:00<?, ?it/s]")
    now[0] = 120.0
    f.idle()  # no output for a while: sd-scripts is compiling inside step 1
    status = json.loads((tmp_path / "s.json").read_text())
    assert status["stage"] == "compiling" and status["eta"] is None and status["elapsed_s"] == 120.0
    assert "compiling (torch.compile, inside step 1): 120 s elapsed, no ETA" in out.getvalue()
    now[0] = 233.9
    f.feed("steps:   2%|▎         | 1/40 [03:53<2:32:02, 233.90s/it, avr_loss=0.5]")
    assert f.status.stage == "training" and f.status.eta is None  # step 1 timed nothing yet
    assert "ETA after the next step" in f.line() and "2:32:02" not in f.line()
    now[0] = 234.2
    f.feed("steps:   5%|▌         | 2/40 [03:54<1:14:00, 117.10s/it, avr_loss=0.5]")
    assert abs(f.status.seconds_per_step - 0.3) < 1e-6 and f.status.eta == "0:00:11"  # 38 steps x 0.3 s


def test_an_idle_follower_in_training_writes_nothing_new(tmp_path):
    f = progress.Follower(tmp_path / "s.json", None, progress.Status(stage="training"), tty=False,
                          out=io.StringIO(), plain_every=0)
    before = (tmp_path / "s.json").read_text()
    f.idle()
    assert (tmp_path / "s.json").read_text() == before


def test_tty_keeps_one_line(tmp_path):
    out = io.StringIO()
    now = [4.0]
    f = progress.Follower(tmp_path / "s.json", None, progress.Status(), tty=True, out=out, clock=lambda: now[0])
    f.feed("steps:  10%|█         | 4/40 [00:04<00:36,  1.00s/it, avr_loss=0.5]")
    now[0] = 5.0
    f.feed("steps:  12%|█▎        | 5/40 [00:05<00:35,  1.00s/it, avr_loss=0.4]")
    f.feed("INFO something")
    text = out.getvalue()
    assert text.count("\r\033[K") >= 2 and "\n" not in text.split("INFO")[0]
    assert "ETA 0:00:35" in text
