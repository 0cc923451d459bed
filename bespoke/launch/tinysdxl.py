"""A tiny SDXL-shaped model for the CPU smoke test, made by rebinding sd-scripts' constants from outside.

sd-scripts hardcodes SDXL's sizes. Rebinding four module-level constants and two callables (the
transformer block's __init__ and the text encoders' config) before its unmodified training script runs
(through runpy, each through bespoke.launch.patching.rebind) shrinks every part while keeping the architecture, the class names that
networks/lora.py targets, and the single-file checkpoint format. Used only by the smoke path; imports
torch and sd-scripts, so nothing else in bespoke imports it.

As a program it is accelerate's training script:  tinysdxl.py <sd-scripts>/sdxl_train_network.py ARGS...
"""

from __future__ import annotations

import functools
from pathlib import Path

from bespoke.launch.patching import rebind, run_patched, use_sd_scripts

CHANNELS = 32  # UNet base channels: a multiple of 32 for GroupNorm (SDXL: 320)
TIME_EMBED = 128  # SDXL: 1280
TE_HIDDEN = 32
TE_PROJECTION = 32
CONTEXT = 2 * TE_HIDDEN  # the UNet's cross-attention width: TE1 and TE2 hidden states side by side
VAE_CHANNELS = 32  # SDXL: 128
_TE_SIZES = {  # chosen by the original hidden size
    768: dict(hidden_size=TE_HIDDEN, intermediate_size=64, num_attention_heads=2, projection_dim=TE_PROJECTION),
    # TE1 keeps 12 layers (kohya reads hidden_states[11]); TE2 needs 2 (it reads [-2])
    1280: dict(hidden_size=TE_HIDDEN, intermediate_size=64, num_attention_heads=2, projection_dim=TE_PROJECTION,
               num_hidden_layers=2),
}


def patch(sd_scripts: Path) -> None:
    """Rebind sd-scripts' SDXL sizes to the tiny ones. Idempotent."""
    use_sd_scripts(sd_scripts)
    from library import model_util, sdxl_model_util
    from library import sdxl_original_unet as unet

    if getattr(unet, "_bespoke_tiny", False):
        return
    rebind(unet, "MODEL_CHANNELS", CHANNELS)
    rebind(unet, "TIME_EMBED_DIM", TIME_EMBED)  # computed once at import from 320, so set on its own
    rebind(unet, "ADM_IN_CHANNELS", TE_PROJECTION + 1536)  # pooled TE2 projection + six 256-d size embeddings
    rebind(model_util, "VAE_PARAMS_CH", VAE_CHANNELS)

    original_init = unet.Transformer2DModel.__init__

    @functools.wraps(original_init)
    def tiny_init(self, *args, **kwargs):
        # The UNet passes the literals 2048 and 2 or 10: no module constant reaches them.
        kwargs["cross_attention_dim"] = CONTEXT
        kwargs["num_transformer_layers"] = min(kwargs.get("num_transformer_layers", 1), 1)
        original_init(self, *args, **kwargs)

    rebind(unet.Transformer2DModel, "__init__", tiny_init)

    real_config = sdxl_model_util.CLIPTextConfig

    def tiny_config(**kwargs):
        kwargs.update(_TE_SIZES.get(kwargs.get("hidden_size"), {}))
        return real_config(**kwargs)

    rebind(sdxl_model_util, "CLIPTextConfig", tiny_config)
    unet._bespoke_tiny = True


def sdxl_text_configs():
    """SDXL's two text-encoder configs as sd-scripts' loader writes them (inline there, so repeated here),
    through its CLIPTextConfig: the tiny sizes once patch() ran, the real ones otherwise."""
    from library import sdxl_model_util

    common = dict(vocab_size=49408, max_position_embeddings=77, layer_norm_eps=1e-05, pad_token_id=1,
                  bos_token_id=0, eos_token_id=2, model_type="clip_text_model")
    return (sdxl_model_util.CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                           num_attention_heads=12, hidden_act="quick_gelu", projection_dim=768,
                                           **common),
            sdxl_model_util.CLIPTextConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                                           num_attention_heads=20, hidden_act="gelu", projection_dim=1280,
                                           **common))


def build_checkpoint(sd_scripts: Path, path: Path, seed: int = 0) -> Path:
    """Random tiny SDXL with sd-scripts' own builders, saved in the single-file SDXL format (fp16)."""
    patch(sd_scripts)
    import torch
    from diffusers import AutoencoderKL
    from library import model_util, sdxl_model_util, sdxl_original_unet
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    te1_cfg, te2_cfg = sdxl_text_configs()
    te1, te2 = CLIPTextModel(te1_cfg), CLIPTextModelWithProjection(te2_cfg)
    model = sdxl_original_unet.SdxlUNet2DConditionModel()
    vae = AutoencoderKL(**model_util.create_vae_diffusers_config())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.safetensors")  # the saver picks the format by extension
    sdxl_model_util.save_stable_diffusion_checkpoint(
        str(tmp), te1, te2, model, 0, 0, None, vae, torch.tensor(4.6052), {}, save_dtype=torch.float16)
    tmp.replace(path)
    return path


if __name__ == "__main__":
    run_patched(patch)
