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

t0 = time.time()
torch.manual_seed(0)
te1 = CLIPTextModel(sdxl_model_util.CLIPTextConfig(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-05, pad_token_id=1, bos_token_id=0,
    eos_token_id=2, model_type="clip_text_model", projection_dim=768))
te2 = CLIPTextModelWithProjection(sdxl_model_util.CLIPTextConfig(
    vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
    max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-05, pad_token_id=1, bos_token_id=0,
    eos_token_id=2, model_type="clip_text_model", projection_dim=1280))
unet = sdxl_original_unet.SdxlUNet2DConditionModel()
vae = AutoencoderKL(**model_util.create_vae_diffusers_config())
t1 = time.time()
out.parent.mkdir(parents=True, exist_ok=True)
sdxl_model_util.save_stable_diffusion_checkpoint(
    str(out), te1, te2, unet, 0, 0, None, vae, torch.tensor(4.6052), {}, save_dtype=torch.float16)
print(f"checkpoint {out}: {out.stat().st_size / 2**30:.2f} GiB, built {t1 - t0:.0f} s, saved {time.time() - t1:.0f} s")
