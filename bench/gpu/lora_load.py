"""Does a LoRA trained on 2 GPUs load exactly as a 1-GPU one does?

    python lora_load.py NAME OUTDIR CHECKPOINT ONE_GPU_OUTPUT TWO_GPU_OUTPUT

Same tensor names, shapes and dtypes, the same network metadata, and each loads strictly into
sd-scripts' LoRA network built on the checkpoint (what its own loaders do). Writes OUTDIR/NAME.json.
"""

import json
import os
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

name, outdir, ckpt = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
outputs = [Path(p) for p in sys.argv[4:6]]
sys.path.insert(0, os.environ["SD_SCRIPTS_DIR"])
from compare import newest_lora  # noqa: E402  (beside this script)
from library import sdxl_model_util  # noqa: E402
from networks import lora  # noqa: E402

files = [newest_lora(o) for o in outputs]
sds = [load_file(str(f)) for f in files]
metas = []
for f in files:
    with safe_open(str(f), "pt") as h:
        metas.append(h.metadata() or {})
te1, te2, vae, unet, _, _ = sdxl_model_util.load_models_from_sdxl_checkpoint(
    sdxl_model_util.MODEL_VERSION_SDXL_BASE_V1_0, ckpt, "cpu", torch.float32)
strict = []
for f, sd in zip(files, sds, strict=True):
    network, _ = lora.create_network_from_weights(1.0, str(f), vae, [te1, te2], unet, for_inference=False)
    network.apply_to([te1, te2], unet, True, True)
    res = network.load_state_dict(sd, strict=True)
    strict.append(not res.missing_keys and not res.unexpected_keys)
same = {"names": sorted(sds[0]) == sorted(sds[1]),
        "shapes_dtypes": all(sds[0][k].shape == sds[1][k].shape and sds[0][k].dtype == sds[1][k].dtype for k in sds[0])
        if sorted(sds[0]) == sorted(sds[1]) else False}
keys = ("ss_network_dim", "ss_network_alpha", "ss_network_module", "ss_mixed_precision", "ss_base_model_version")
r = {"name": name, "files": [str(f) for f in files], "tensors": [len(s) for s in sds], **same,
     "metadata": [{k: m.get(k) for k in keys} for m in metas],
     "metadata_same": all(metas[0].get(k) == metas[1].get(k) for k in keys),
     "batch_size_meta": [m.get("ss_total_batch_size") or m.get("ss_batch_size_per_device") for m in metas],
     "strict_load": strict, "all_finite": [all(torch.isfinite(t.float()).all().item() for t in s.values()) for s in sds]}
(outdir / f"{name}.json").write_text(json.dumps(r, indent=1))
print("LORA_LOAD", json.dumps(r))
