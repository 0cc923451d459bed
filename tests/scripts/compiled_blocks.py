"""One training step of a tiny SDXL with LoRA, eager and then through bespoke/launch/fastsdxl.py's compiled blocks.

    python compiled_blocks.py <sd-scripts>    prints JSON: both losses, the gradients' relative difference,
                                              and dynamo's graph counts
fp32 and the aot_eager backend: the same graphs fastsdxl traces on a GPU, forward and backward, without
Triton kernels (none on CPU), so the two steps must agree to rounding. Gradient checkpointing is on, as in
the exact recipe, so the compiled bodies also run inside sd-scripts' checkpoint wrappers.
"""

import json
import sys
from pathlib import Path

from bespoke.launch import fastsdxl, tinysdxl

sd = Path(sys.argv[1])
tinysdxl.patch(sd)
import torch  # noqa: E402
import torch._dynamo.utils  # noqa: E402
from library import sdxl_original_unet  # noqa: E402
from networks import lora  # noqa: E402
from transformers import CLIPTextModel  # noqa: E402

torch.manual_seed(0)
unet = sdxl_original_unet.SdxlUNet2DConditionModel()
te = CLIPTextModel(tinysdxl.sdxl_text_configs()[0])
network = lora.create_network(1.0, 8, 4, None, [te], unet)
network.apply_to([te], unet, True, True)
for p in network.parameters():
    torch.nn.init.normal_(p, std=0.02)  # lora_up starts at zero: give every LoRA path a gradient
unet.train()
te.train()
unet.enable_gradient_checkpointing()
ids, x = torch.randint(0, 49407, (2, 77)), torch.randn(2, 4, 32, 32)
t, y = torch.tensor([10, 500]), torch.randn(2, unet.adm_in_channels if hasattr(unet, "adm_in_channels") else 1568)


def step():
    network.zero_grad(set_to_none=True)
    h = te(ids, output_hidden_states=True).hidden_states[11]
    loss = unet(x, t, torch.cat([h, h], -1), y).pow(2).mean()
    loss.backward()
    return loss.item(), torch.cat([p.grad.flatten() for p in network.parameters() if p.grad is not None])


eager_loss, eager_grad = step()
fastsdxl.patch(sd, "default", backend="aot_eager")
compiled_loss, compiled_grad = step()
stats = torch._dynamo.utils.counters["stats"]
print(json.dumps({"eager_loss": eager_loss, "compiled_loss": compiled_loss,
                  "grad_rel_diff": float((eager_grad - compiled_grad).norm() / eager_grad.norm()),
                  "grads": eager_grad.numel(), "unique_graphs": stats["unique_graphs"],
                  "calls_captured": stats["calls_captured"]}))
