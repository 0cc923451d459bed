"""One small compiled block, its forward and backward, with bespoke/launch/compilecache.py around it.

    python compile_artifacts.py save|load|reload <artifacts.bin>    prints JSON: what compilecache said, and
                                                                    dynamo's and inductor's cache counters

TORCHINDUCTOR_CACHE_DIR is the caller's: `save` compiles cold and keeps the artifacts; `load` starts from an
empty cache directory and must find every graph in the artifacts (`reload` then saves too: nothing new, so
the file must stay as it was) (inductor's CPU backend: C++ kernels;
BESPOKE_TEST_DEVICE=cuda: Triton kernels, on the GPU machine). "seconds" is the compile and first step.
"""

import json
import os
import sys
import time
from pathlib import Path

import torch
import torch._dynamo.utils

from bespoke.launch import compilecache

what, path = sys.argv[1], Path(sys.argv[2])
said = compilecache.load(path) if what in ("load", "reload") else ""
device = os.environ.get("BESPOKE_TEST_DEVICE", "cpu")
torch.manual_seed(0)
block = torch.nn.Sequential(torch.nn.LayerNorm(64), torch.nn.Linear(64, 64), torch.nn.GELU()).to(device)
x = torch.randn(8, 64, requires_grad=True, device=device)
started = time.perf_counter()
torch.compile(block)(x).sum().backward()
seconds = time.perf_counter() - started
saved = compilecache.save(path) if what in ("save", "reload") else ""
said = said if what == "reload" else saved or said
counters = torch._dynamo.utils.counters
print(json.dumps({"said": said, "saved": saved, "grad": float(x.grad.sum()), "seconds": round(seconds, 2), "device": device,
                  **{f"{k}.{n}": v for k in ("inductor", "aot_autograd") for n, v in counters[k].items()}}))
