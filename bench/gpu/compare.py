"""Are two training runs the same math? Compares their per-step loss and their final LoRA.

    python compare.py NAME OUTDIR RUN_A_OUTPUT RUN_B_OUTPUT

Each RUN_*_OUTPUT is a `bespoke train` output folder: sd-scripts' TensorBoard log (loss/current, one
value per step) and the newest LoRA. With the same seed both runs draw the same timesteps and noise,
so their per-step losses should differ only by kernel-level rounding. The yardstick for "within
noise" is the loss curve's own step-to-step spread. For the LoRA, the learned weight change
dW = up @ down * alpha/dim of each module is compared (lora_up starts at zero, so raw lora_down
weights would mostly compare the shared initialisation). Writes OUTDIR/NAME.json.
"""

import glob
import json
import statistics
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file


def losses(output: Path) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for f in glob.glob(str(output / "logs" / "**" / "events.out.tfevents.*"), recursive=True):
        acc = EventAccumulator(f, size_guidance={"scalars": 0})
        acc.Reload()
        if "loss/current" in acc.Tags()["scalars"]:
            out.update({e.step: e.value for e in acc.Scalars("loss/current")})
    return out


def newest_lora(output: Path) -> Path:
    files = sorted(output.glob("*.safetensors"), key=lambda p: p.stat().st_mtime)
    return files[-1]


def deltas(sd: dict) -> dict[str, torch.Tensor]:
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    out = {}
    for key in sd:
        if not key.endswith(".lora_up.weight"):
            continue
        base = key[: -len(".lora_up.weight")]
        up = sd[key].to(dev, torch.float32).flatten(1)
        down = sd[base + ".lora_down.weight"].to(dev, torch.float32).flatten(1)
        alpha = float(sd[base + ".alpha"]) if base + ".alpha" in sd else down.shape[0]
        out[base] = up @ down * (alpha / down.shape[0])
    return out


def main():
    name, outdir, a, b = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    la, lb = losses(a), losses(b)
    steps = sorted(set(la) & set(lb))
    diffs = [abs(la[s] - lb[s]) for s in steps]
    spread = statistics.pstdev([la[s] for s in steps]) if len(steps) > 1 else None
    fa, fb = newest_lora(a), newest_lora(b)
    sa, sb = load_file(fa), load_file(fb)
    da, db = deltas(sa), deltas(sb)
    zero = sorted(k for k in da if not da[k].any() and not db[k].any())  # no gradient reached them in either run
    rel = {k: float((da[k] - db[k]).norm() / da[k].norm().clamp_min(1e-30)) for k in da if k not in zero}
    cos = {k: float(torch.nn.functional.cosine_similarity(da[k].flatten(), db[k].flatten(), dim=0))
           for k in da if k not in zero}
    num = sum(float((da[k] - db[k]).pow(2).sum()) for k in da) ** 0.5
    den = sum(float(da[k].pow(2).sum()) for k in da) ** 0.5
    worst = max(rel, key=rel.get)
    r = {
        "name": name, "a": str(fa), "b": str(fb),
        "same_keys": sorted(sa) == sorted(sb),
        "steps_compared": len(steps),
        "loss_mean_a": statistics.fmean(la[s] for s in steps), "loss_mean_b": statistics.fmean(lb[s] for s in steps),
        "loss_abs_diff_mean": statistics.fmean(diffs), "loss_abs_diff_max": max(diffs),
        "loss_step_spread_std": spread,  # the curve's own noise, the yardstick
        "loss_diff_over_spread": statistics.fmean(diffs) / spread if spread else None,
        "lora_modules": len(da), "lora_modules_zero_in_both": len(zero), "zero_examples": zero[:4],
        "lora_dW_rel_l2_all": num / den,
        "lora_dW_rel_l2_median": statistics.median(rel.values()), "lora_dW_rel_l2_worst": rel[worst],
        "lora_dW_worst_module": worst,
        "lora_dW_cosine_min": min(cos.values()), "lora_dW_cosine_median": statistics.median(cos.values()),
    }
    (outdir / f"{name}.json").write_text(json.dumps(r, indent=1))
    print("COMPARE", json.dumps(r))


if __name__ == "__main__":
    main()
