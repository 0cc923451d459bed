"""One training step of a tiny SDXL with LoRA, eager and then through bespoke/launch/fastsdxl.py's compiled blocks.

    python compiled_blocks.py <sd-scripts>    prints JSON: both losses, the gradients' relative difference,
                                              dynamo's graph counts, what sampling (no_grad) does, and the
                                              checks that failed (exit 1 if any)

It runs twice in CI: in the kohya env (tests/test_kohya_integration.py) and in the image, on the torch the
image ships (tools/image-test.sh), so an API break in either torch shows there.

fp32 and the aot_eager backend: the same graphs fastsdxl traces on a GPU, forward and backward, without
Triton kernels (none on CPU), so the two steps must agree to rounding. Gradient checkpointing is on, as in
the exact recipe and the lean profile (UNet and text encoder): the eager step checkpoints reentrantly, as
sd-scripts and transformers do, the compiled one non-reentrantly, as the launcher makes them. Then one
forward under no_grad, as sd-scripts samples: it must run the eager bodies (the same output as eager, no new
graph), and the next training step must reuse the training graphs.
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
te.gradient_checkpointing_enable()  # transformers' default: reentrant
ids, x = torch.randint(0, 49407, (2, 77)), torch.randn(2, 4, 32, 32)
t, y = torch.tensor([10, 500]), torch.randn(2, unet.adm_in_channels if hasattr(unet, "adm_in_channels") else 1568)


def step():
    network.zero_grad(set_to_none=True)
    h = te(ids, output_hidden_states=True).hidden_states[11]
    loss = unet(x, t, torch.cat([h, h], -1), y).pow(2).mean()
    loss.backward()
    return loss.item(), torch.cat([p.grad.flatten() for p in network.parameters() if p.grad is not None])


def sample():
    with torch.no_grad():
        h = te(ids, output_hidden_states=True).hidden_states[11]
        return unet(x, t, torch.cat([h, h], -1), y)


eager_loss, eager_grad = step()
eager_sample = sample()
reentrant = sdxl_original_unet.USE_REENTRANT
fastsdxl.patch(sd, "default", backend="aot_eager")
te.gradient_checkpointing_enable()  # as sd-scripts calls it, after the launcher's patch
compiled_loss, compiled_grad = step()
stats = torch._dynamo.utils.counters["stats"]
trained_graphs = stats["unique_graphs"]
compiled_sample = sample()
sample_graphs = stats["unique_graphs"]
again_loss, _ = step()
got = {"torch": torch.__version__, "eager_loss": eager_loss, "compiled_loss": compiled_loss,
       "grad_rel_diff": float((eager_grad - compiled_grad).norm() / eager_grad.norm()),
       "grads": eager_grad.numel(), "unique_graphs": trained_graphs,
       "calls_captured": stats["calls_captured"],
       "reentrant_before": reentrant, "reentrant_after": sdxl_original_unet.USE_REENTRANT,
       "te_reentrant": te.text_model.encoder.layers[0]._gradient_checkpointing_func.keywords["use_reentrant"],
       "sample_equal": bool(torch.equal(eager_sample, compiled_sample)),
       "graphs_after_sampling": sample_graphs, "graphs_after_next_step": stats["unique_graphs"],
       "next_loss": again_loss}
checks = {  # what must hold, on any torch the project ships (the kohya env's and the image's)
    "the blocks went through dynamo": got["unique_graphs"] >= 3 and got["calls_captured"] > 0,
    "the compiled loss is the eager one": abs(compiled_loss - eager_loss) <= 1e-5 * abs(eager_loss),
    "the gradients agree": got["grad_rel_diff"] < 1e-5 and got["grads"] > 0,
    "checkpointing made non-reentrant": got["reentrant_before"] and not got["reentrant_after"]
    and not got["te_reentrant"],
    "sampling runs the eager bodies": got["sample_equal"],
    "sampling compiles nothing": got["graphs_after_sampling"] == trained_graphs == got["graphs_after_next_step"],
    "the next step reuses the graphs": again_loss == compiled_loss,
}
got["failed"] = [name for name, ok in checks.items() if not ok]
print(json.dumps(got))
sys.exit(1 if got["failed"] else 0)
