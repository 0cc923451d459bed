"""Run one training command and time it: every output line stamped with seconds since launch, the GPU
sampled by nvidia-smi, and a JSON summary (s/step, peak memory, GPU busy, start-up milestones).

    python timed.py NAME OUTDIR [--tail GLOB] [--images-per-step N] [--stop-at MILESTONE] -- COMMAND...

--stop-at ends the command (SIGTERM to its process group) once that milestone's line appears: start-up
measurements need no training.

With --tail the lines are read from the newest file matching GLOB (bespoke train writes sd-scripts'
output to its own log) instead of the command's stdout; both are polled the same way.
"""

import glob
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

STEP = re.compile(r"steps:\s*\d+%.*?\|\s*(\d+)/(\d+)")
MILESTONES = {  # first line matching each, in order of appearance in sdxl_train_network.py
    "first_output": r".",
    "load_checkpoint": r"load StableDiffusion checkpoint|loading model|building U-Net",
    "cache_latents": r"caching latents",
    "network": r"import network module|create LoRA network",
    "prepare": r"prepare optimizer, data loader",
    "running": r"running training",
    "step1": r"steps:.*\|\s*1/",
}
SAMPLING = re.compile(r"generating sample images")


def gpu_sampler(samples, stop):
    """(t, memory MiB, busy %) per GPU line; only the GPUs in CUDA_VISIBLE_DEVICES when it is set."""
    ids = ["-i", os.environ["CUDA_VISIBLE_DEVICES"]] if os.environ.get("CUDA_VISIBLE_DEVICES") else []
    p = subprocess.Popen(["nvidia-smi", *ids, "--query-gpu=memory.used,utilization.gpu", "--format=csv,noheader,nounits",
                          "-lms", "250"], stdout=subprocess.PIPE, text=True)
    t0 = time.time()
    for line in p.stdout:
        try:
            mem, util = (float(x) for x in line.split(",")[:2])
        except ValueError:
            continue
        samples.append((time.time() - t0, mem, util))
        if stop.is_set():
            break
    p.terminate()


def main():
    args = sys.argv[1:]
    name, outdir = args[0], Path(args[1])
    tail = args[args.index("--tail") + 1] if "--tail" in args else None
    per_step = int(args[args.index("--images-per-step") + 1]) if "--images-per-step" in args else 2
    stop_at = MILESTONES[args[args.index("--stop-at") + 1]] if "--stop-at" in args else None
    cmd = args[args.index("--") + 1:]
    outdir.mkdir(parents=True, exist_ok=True)
    samples, stop = [], threading.Event()
    t0 = time.time()
    threading.Thread(target=gpu_sampler, args=(samples, stop), daemon=True).start()
    own = open(outdir / f"{name}.stdout", "wb")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE if not tail else own, stderr=subprocess.STDOUT,
                            start_new_session=True)
    # the command has its own session (for --stop-at), so a signal to this process group (timeout, ^C) must be
    # passed on, or a killed bench leaves sd-scripts training on the GPU under the next config
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: os.killpg(proc.pid, signum))
    src = None if tail else proc.stdout
    if not tail:
        os.set_blocking(src.fileno(), False)
    lines, buf, fh, launched = [], b"", None, None
    while True:
        done = proc.poll() is not None
        if tail and fh is None:
            hits = [f for f in glob.glob(tail) if os.path.getmtime(f) >= t0 - 1]
            if hits:
                fh = open(max(hits, key=os.path.getmtime), "rb")
                launched = time.time() - t0  # bespoke opens the log as it launches sd-scripts
        chunk = b""
        if src is not None:
            chunk = src.read() or b""
            own.write(chunk)
        elif fh is not None:
            chunk = fh.read()
        now = time.time() - t0
        buf += chunk
        parts = re.split(rb"[\r\n]", buf)
        buf = parts.pop()
        new = [(now, p.decode(errors="replace")) for p in parts if p.strip()]
        lines += new
        if stop_at and not done and any(re.search(stop_at, text) for _, text in new):
            os.killpg(proc.pid, signal.SIGTERM)
            stop_at = None
        if done and not chunk:
            break
        time.sleep(0.02)
    if buf.strip():
        lines.append((time.time() - t0, buf.decode(errors="replace")))
    stop.set()
    total = time.time() - t0
    with open(outdir / f"{name}.log", "w") as f:
        for t, text in lines:
            f.write(f"{t:9.3f} {text}\n")
    steps = {}
    for t, text in lines:
        m = STEP.search(text)
        if m:
            steps.setdefault(int(m.group(1)), t)
    marks = {} if launched is None else {"launched": round(launched, 2)}
    for key, pat in MILESTONES.items():
        for t, text in lines:
            if re.search(pat, text):
                marks[key] = round(t, 2)
                break
    ks = sorted(k for k in steps if k >= 1)
    warm = [k for k in ks if k >= 5]
    # sampling (sd-scripts' "generating sample images", at an epoch's end): from that line to the next step's
    # line, or to the end of the run after the last step; those gaps are left out of the step times
    sampled = [t for t, text in lines if SAMPLING.search(text)]
    sample_s = [round(min([steps[k] for k in ks if steps[k] > t] + [total]) - t, 2) for t in sampled]
    pairs = list(zip(warm, warm[1:], strict=False))
    paused = [(a, b) for a, b in pairs if any(steps[a] <= t < steps[b] for t in sampled)]
    diffs = [steps[b] - steps[a] for a, b in pairs if b == a + 1 and (a, b) not in paused]
    summary = {"name": name, "rc": proc.returncode, "wall_s": round(total, 1), "steps_seen": len(ks),
               "milestones_s": marks}
    if sampled:
        summary["sampling_s"] = sample_s
    if len(warm) >= 2:
        first, last = warm[0], warm[-1]
        slope = ((steps[last] - steps[first] - sum(steps[b] - steps[a] for a, b in paused))
                 / max(last - first - sum(b - a for a, b in paused), 1))
        summary.update(s_per_step_median=round(statistics.median(diffs), 4) if diffs else None,
                       s_per_step_mean=round(slope, 4), images_per_s=round(per_step / slope, 3))
        busy = [u for (t, m, u) in samples if steps[first] <= t <= steps[last]]
        summary["gpu_busy_pct_nvsmi"] = round(statistics.mean(busy), 1) if busy else None
    summary["peak_mem_mib_nvsmi"] = max((m for _, m, _ in samples), default=None)  # the fullest GPU
    (outdir / f"{name}.json").write_text(json.dumps(summary, indent=1))
    print("SUMMARY", json.dumps(summary))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
