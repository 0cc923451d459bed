"""Code that runs inside sd-scripts' own process (accelerate's training script) or beside it, and imports
torch: the launchers (tinysdxl, fastsdxl), the fast profile's step patches (fewsteps), the GPU probe
(gpuprobe), and the one helper every run-time patch goes through (patching). Nothing outside this
package imports these modules at module level; the core package never imports torch."""
