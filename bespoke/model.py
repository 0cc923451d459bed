"""The base model: resolve it to a local file on the workspace before sd-scripts starts.

The notes' `stabilityai/stable-diffusion-xl-base-1.0` makes kohya fetch the diffusers folder (twice
the disk of the same weights in bf16). We download the single-file checkpoint instead, with
huggingface_hub, into HF_HUB_CACHE on the workspace: it shows progress and resumes a broken download.
"""

from __future__ import annotations

import os
from pathlib import Path

from bespoke.errors import BespokeError

DEFAULT_REPO = "stabilityai/stable-diffusion-xl-base-1.0"
DEFAULT_FILE = "sd_xl_base_1.0.safetensors"
WEIGHT_EXTS = (".safetensors", ".ckpt")


def hub_reference(ref: str) -> tuple[str, str] | None:
    """(repo_id, filename) for the default repo or `owner/name/file.safetensors`; None to pass as is."""
    if Path(ref).exists():
        return None
    if ref == DEFAULT_REPO:
        return DEFAULT_REPO, DEFAULT_FILE
    parts = ref.split("/")
    if len(parts) >= 3 and ref.endswith(WEIGHT_EXTS):
        return "/".join(parts[:2]), "/".join(parts[2:])
    return None


def cached(ref: str, cache_dir: str | None = None) -> Path | None:
    """The local file for `ref` if it is already there, without touching the network."""
    if Path(ref).exists():
        return Path(ref)
    hub = hub_reference(ref)
    if hub is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(hub[0], hub[1], cache_dir=cache_dir)
    return Path(hit) if isinstance(hit, str) else None


def resolve(ref: str, cache_dir: str | None = None, endpoint: str | None = None) -> str:
    """A local path for the recipe's pretrained_model_name_or_path; downloads hub files once.

    A local path, or a repo id that is not a single file, is returned unchanged (kohya loads it).
    """
    hub = hub_reference(ref)
    if hub is None:
        return ref
    hit = cached(ref, cache_dir)
    if hit is not None:
        return str(hit)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo_id, filename = hub
    try:
        return hf_hub_download(repo_id, filename, cache_dir=cache_dir, endpoint=endpoint,
                               token=os.environ.get("HF_TOKEN") or None)
    except LocalEntryNotFoundError:
        raise BespokeError(f"cannot download {repo_id}/{filename}: no network or HF_HUB_OFFLINE=1",
                           cache_dir, "connect the pod to the internet, or put the file on the volume and "
                           "--set pretrained_model_name_or_path=/workspace/PATH.safetensors") from None
    except HfHubHTTPError as e:
        raise BespokeError(f"cannot download {repo_id}/{filename}: {e}".splitlines()[0], cache_dir,
                           "check the repo and file name, or set HF_TOKEN for a gated repo") from None
