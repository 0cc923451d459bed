"""The tiny SDXL of the smoke test with the fast profile's flat AdamW8bit and all-reduce patches.

    flat_train.py <sd-scripts>/sdxl_train_network.py ARGS...   (accelerate's training script, as tinysdxl.py)

test_kohya_integration trains one epoch with it and one with tinysdxl.py alone, and compares the LoRAs.
"""

from bespoke.launch import fewsteps, tinysdxl
from bespoke.launch.patching import run_patched


def patch(sd_scripts):
    tinysdxl.patch(sd_scripts)
    fewsteps.flatten_8bit_groups()
    fewsteps.bucketed_all_reduce()
    print("flat_train: flat AdamW8bit groups, bucketed all-reduce", flush=True)


if __name__ == "__main__":
    run_patched(patch)
