"""`bespoke smoke-test`: the real prepare -> train -> evaluate path on CPU with a tiny SDXL.

Runs the unmodified sd-scripts through accelerate's CPU mode on the demo data, interrupts the run after
epoch 1, resumes it, runs it once more to prove the no-op, then checks every output.
Needs the sd-scripts environment (torch, sd-scripts' requirements): `make smoke-test` builds it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import signal
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bespoke import demo, kohya, pipeline, recipe, runs, tokens
from bespoke.errors import BespokeError
from bespoke.workspace import Workspace

log = logging.getLogger(__name__)

IMAGES = 4  # x 10 repeats / batch 2 = 20 steps an epoch
RESOLUTION = (64, 64)
EPOCHS = 2
# The only overrides of the recipe (with the tiny model path): bf16 and AdamW8bit stay.
OVERRIDES = ("resolution=64,64", "xformers=false", "sdpa=true", f"max_train_epochs={EPOCHS}")


class _Inbox:
    """A loopback endpoint for BESPOKE_NOTIFY_URL: the smoke run counts the notifications it is sent."""

    def __init__(self):
        self.received: list[dict] = []
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                inbox.received.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0)))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/smoke"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def run(workspace: Path | None = None) -> int:
    ws = Workspace(Path(workspace) if workspace else Path(tempfile.mkdtemp(prefix="bespoke-smoke-")))
    ws.root.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    sd = kohya.locate()

    def timed(name):
        class _T:
            def __enter__(self):
                self.t = time.time()

            def __exit__(self, *exc):
                timings[name] = timings.get(name, 0) + time.time() - self.t
        return _T()

    log.info(f"smoke test in {ws} (sd-scripts {sd.path})")
    with timed("fixtures"):
        data = ws.dataset
        if not data.exists():
            demo.write_demo_data(data, IMAGES, seed=0)
        tokens.ensure(tokens.default_dir(ws))
        ckpt = ws.tiny_model
        if not ckpt.exists():
            from bespoke.launch import tinysdxl

            tinysdxl.build_checkpoint(sd.path, ckpt)
    with timed("prepare"):
        pipeline.prepare(ws, data, pipeline.PrepareOptions(resolution=RESOLUTION, expect=IMAGES))
    options = pipeline.TrainOptions(overrides=(*OVERRIDES, f"pretrained_model_name_or_path={ckpt}"))
    rig = pipeline.Rig(script=Path(__file__).parent / "launch" / "tinysdxl.py", sample_size=RESOLUTION)
    output = ws.output
    resumed = False
    inbox = _Inbox()
    user_url = os.environ.get("BESPOKE_NOTIFY_URL")
    os.environ["BESPOKE_NOTIFY_URL"] = inbox.url  # never the user's webhook: the smoke run's own inbox
    if not ws.done_file.exists():
        def interrupt_after_epoch_1(line: str) -> None:
            if line.strip() == f"epoch 2/{EPOCHS}":  # epoch 1's LoRA and state are saved by now
                os.kill(os.getpid(), signal.SIGTERM)

        with timed("train (until interrupted)"):
            code = pipeline.train(ws, options, rig=rig, on_line=interrupt_after_epoch_1)
        if code != 128 + signal.SIGTERM:
            raise BespokeError(f"the interrupted smoke run exited {code}, expected 143", str(output))
        with timed("train (resume)"):
            code = pipeline.train(ws, options, rig=rig)
        resumed = True
        if code != 0:
            raise BespokeError(f"the resumed smoke run exited {code}", str(output))
    done_before = ws.done_file.read_bytes()
    with timed("train (again: no-op)"):
        pipeline.train(ws, options, rig=rig)
    inbox.close()
    if user_url is None:
        os.environ.pop("BESPOKE_NOTIFY_URL", None)
    else:
        os.environ["BESPOKE_NOTIFY_URL"] = user_url
    checks = verify(ws, sd.path, ckpt)
    events = Counter(r["event"] for r in inbox.received)
    expected = Counter({"photo_alarm": EPOCHS, "interrupted": 1, "done": 1} if resumed else {})
    checks.append(("one notification per event at a loopback webhook", events == expected,
                   ", ".join(f"{k} x{v}" for k, v in sorted(events.items())) or "none"))
    checks.append(("a second run after DONE is a no-op", ws.done_file.read_bytes() == done_before, ""))
    if resumed:
        checks.append(("interrupted after epoch 1, resumed, finished", True, ""))
    with timed("evaluate"):
        checks += _evaluate(ws)
        checks.append(_tensorboard(ws))

    log.info("\nsmoke checks:")
    for name, ok, detail in checks:
        verdict = "skip" if ok is None else "ok  " if ok else "FAIL"
        log.info(f"  {verdict}  {name}{': ' + detail if detail else ''}")
    log.info("\nstage timings:")
    for name, seconds in timings.items():
        log.info(f"  {name:28} {seconds:7.1f} s")
    rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    log.info(f"  {'total':28} {sum(timings.values()):7.1f} s   peak RSS {rss / 1024:.0f} MiB")
    failed = [c for c in checks if c[1] is False]
    if failed:
        raise BespokeError(f"{len(failed)} smoke check(s) failed: {failed[0][0]}", str(ws), "see the checks above")
    log.info(f"smoke test passed; outputs in {output}")
    return 0


# A check: (what, True ok / False failed / None skipped, detail)
Check = tuple[str, "bool | None", str]


def _evaluate(ws: Workspace) -> list[Check]:
    pipeline.evaluate_after_training(ws)
    report = ws.report
    data = json.loads((report / "report.json").read_text())
    judged = [s for e in data.get("epochs", []) for s in e.get("samples", [])]
    noise_ok = bool(judged) and not any(s.get("pixel_art") for s in judged)
    return [
        ("report.html, report.json and contact sheet written",
         all((report / f).is_file() for f in ("report.html", "report.json", "contact-sheet.png")), ""),
        ("the tiny model's noise samples are judged not pixel art", noise_ok, f"{len(judged)} samples"),
    ]


def _tensorboard(ws: Workspace) -> Check:
    """bespoke's TensorBoard run, read with TensorBoard's own reader (sd-scripts' environment has it)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from bespoke import tblog

    acc = EventAccumulator(str(ws.board), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    t = acc.Tags()
    labels = [tblog.prompt_label(i, recipe.TEST_PROMPTS) for i in range(len(recipe.TEST_PROMPTS))]
    steps = {e.step for e in acc.Scalars("score/mean")} if "score/mean" in t["scalars"] else set()
    ok = (all(f"sample/{x}" in t["images"] and f"sprite/{x}" in t["images"] and f"score/{x}" in t["scalars"]
              for x in labels)
          and "report/contact_sheet" in t["images"] and len(steps) == EPOCHS)
    return ("TensorBoard run 'bespoke': each epoch's samples, sprites and scores, the verdict", ok,
            f"{len(t['images'])} image tags, {len(t['scalars'])} scalar tags, score steps {sorted(steps)}")


def verify(ws: Workspace, sd_path: Path, ckpt: Path) -> list[Check]:
    """The smoke run's outputs: files, keys, training signal, metadata, samples, and a strict reload."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    out = ws.output
    name = recipe.OUTPUT_NAME
    files = [runs.epoch_file(out, name, e, EPOCHS) for e in range(1, EPOCHS + 1)]
    checks = [("one LoRA per epoch, named like the notes'",
               all(f.is_file() for f in files) and runs.numbered_file(out, name, EPOCHS).is_file(),
               ", ".join(f.name for f in files))]
    sd = load_file(str(files[-1]))
    groups = {g: [k for k in sd if k.startswith(f"lora_{g}_")] for g in ("unet", "te1", "te2")}
    checks.append(("keys for lora_unet_*, lora_te1_*, lora_te2_*", all(groups.values()),
                   ", ".join(f"{g} {len(v)}" for g, v in groups.items())))
    checks.append(("all weights finite", all(torch.isfinite(t.float()).all() for t in sd.values()), f"{len(sd)} tensors"))
    moved = {g: max((sd[k].float().abs().max().item() for k in v if "lora_up" in k), default=0.0)
             for g, v in groups.items()}
    checks.append(("every group's lora_up moved off zero", all(m > 0 for m in moved.values()),
                   ", ".join(f"{g} {m:.2e}" for g, m in moved.items())))
    with safe_open(str(files[-1]), "pt") as f:
        meta = f.metadata() or {}
    dim, alpha = meta.get("ss_network_dim"), meta.get("ss_network_alpha")
    checks.append(("metadata says dim 128, alpha 64", dim == "128" and float(alpha or 0) == 64.0, f"{dim}/{alpha}"))
    trigger = meta.get("modelspec.trigger_phrase")
    checks.append(("modelspec: title, trigger words, usage hint, provenance",
                   meta.get("modelspec.title") == recipe.OUTPUT_NAME and trigger == "bespoke punk, bespoke baby"
                   and "pixel art, 24x24" in meta.get("modelspec.usage_hint", "")
                   and f"{IMAGES} images" in meta.get("modelspec.description", ""), f"trigger {trigger!r}"))
    losses = [json.loads(line)["loss"] for line in ws.loss.read_text().splitlines()]
    checks.append(("loss logged and finite", bool(losses) and all(math.isfinite(x) for x in losses),
                   f"{len(losses)} points, last {losses[-1]:.4f}" if losses else "none"))
    from bespoke.eval.evaluate import find_samples

    found = find_samples(ws.samples, name)
    samples = {e: [s.path for s in found if s.epoch == e] for e in range(1, EPOCHS + 1)}
    checks.append(("a sample image per epoch", all(samples.values()),
                   ", ".join(f"e{e}: {len(v)}" for e, v in samples.items())))
    checks.append(_strict_reload(sd_path, ckpt, files[-1]))
    checks.append(_diffusers_reload(files[-1]))
    return checks


def _strict_reload(sd_path: Path, ckpt: Path, lora: Path) -> Check:
    from bespoke.launch import tinysdxl

    tinysdxl.patch(sd_path)
    import torch
    from library import sdxl_model_util
    from networks import lora as kohya_lora
    from safetensors.torch import load_file

    te1, te2, vae, unet, _, _ = sdxl_model_util.load_models_from_sdxl_checkpoint(
        sdxl_model_util.MODEL_VERSION_SDXL_BASE_V1_0, str(ckpt), "cpu", torch.float32)
    network, weights = kohya_lora.create_network_from_weights(1.0, str(lora), vae, [te1, te2], unet, for_inference=False)
    network.apply_to([te1, te2], unet, True, True)  # registers the LoRA modules, as training does
    result = network.load_state_dict(load_file(str(lora)), strict=True)
    ok = not result.missing_keys and not result.unexpected_keys
    return ("loads back strictly into sd-scripts' network", ok, f"{len(weights)} tensors")


def _diffusers_reload(lora: Path) -> Check:
    """diffusers' SDXL loader parses kohya's keys (lora_state_dict is load_lora_weights' first half; the
    second half injects into a full-size diffusers UNet, which the tiny model is not)."""
    import importlib.util

    name = "parses with diffusers' StableDiffusionXLPipeline.lora_state_dict"
    if importlib.util.find_spec("peft") is None:
        return (name, None, "peft is not installed")
    from diffusers import StableDiffusionXLPipeline
    from safetensors.torch import load_file

    state, alphas = StableDiffusionXLPipeline.lora_state_dict(load_file(str(lora)))
    prefixes = {k.split(".")[0] for k in state}
    ok = prefixes == {"unet", "text_encoder", "text_encoder_2"} and bool(alphas)
    return (name, ok, ", ".join(f"{p} {sum(k.startswith(p + '.') for k in state)}" for p in sorted(prefixes)))
