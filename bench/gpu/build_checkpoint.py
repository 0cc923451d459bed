"""A random-weight, full-size SDXL checkpoint: sd-scripts' own builders, its single-file saver, fp16.

Speed numbers do not depend on the weights, only on the shapes, so this stands in for the user's
base model on a machine with no network.   python build_checkpoint.py <sd-scripts> <out.safetensors>
"""

import sys
import time
from pathlib import Path

sd = Path(sys.argv[1]).resolve()
out = Path(sys.argv[2])
sys.path.insert(0, str(sd))

import torch  # noqa: E402
from diffusers import AutoencoderKL  # noqa: E402
from library import model_util, sdxl_model_util, sdxl_original_unet  # noqa: E402
from transformers import CLIPTextModel, CLIPTextModelWithProjection  # noqa: E402

from bespoke.launch.tinysdxl import sdxl_text_configs  # noqa: E402

t0 = time.time()
torch.manual_seed(0)
te1_cfg, te2_cfg = sdxl_text_configs()  # real sizes: nothing is patched here
te1, te2 = CLIPTextModel(te1_cfg), CLIPTextModelWithProjection(te2_cfg)
unet = sdxl_original_unet.SdxlUNet2DConditionModel()
vae = AutoencoderKL(**model_util.create_vae_diffusers_config())
t1 = time.time()
out.parent.mkdir(parents=True, exist_ok=True)
sdxl_model_util.save_stable_diffusion_checkpoint(
    str(out), te1, te2, unet, 0, 0, None, vae, torch.tensor(4.6052), {}, save_dtype=torch.float16)
print(f"checkpoint {out}: {out.stat().st_size / 2**30:.2f} GiB, built {t1 - t0:.0f} s, saved {time.time() - t1:.0f} s")
