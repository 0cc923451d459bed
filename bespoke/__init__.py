"""bespoke: turn a folder of 24x24 pixel-art portraits into an SDXL LoRA, reliably."""

__version__ = "0.1.0"
