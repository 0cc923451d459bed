"""CLIP tokenizers: where sd-scripts finds them offline, how to build them, and caption token counts.

sd-scripts loads `openai/clip-vit-large-patch14` and `laion/CLIP-ViT-bigG-14-laion2B-39B-b160k` with
transformers' CLIPTokenizer, from `--tokenizer_cache_dir/<id with / as _>/` when that folder exists.
Both use the same CLIP BPE vocabulary, which open-clip-torch's wheel ships as
`bpe_simple_vocab_16e6.txt.gz`; from it we can build both folders without the Hub.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import tempfile
import warnings
from pathlib import Path

from bespoke.errors import BespokeError
from bespoke.workspace import Workspace

TOKENIZER_IDS = ("openai/clip-vit-large-patch14", "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k")
# The Hub's bigG tokenizer pads with "!" (id 0); CLIP-L pads with <|endoftext|>.
_PAD = {TOKENIZER_IDS[0]: "<|endoftext|>", TOKENIZER_IDS[1]: "!"}
MAX_TOKENS = 75  # kohya's default max_token_length: 77 minus BOS and EOS
_N_MERGES = 49152 - 256 - 2  # as in CLIP's SimpleTokenizer and transformers' CLIPTokenizer


def cache_name(model_id: str) -> str:
    return model_id.replace("/", "_")


def default_dir(workspace: Workspace | Path) -> Path:
    """The image bakes tokenizers and says where with BESPOKE_TOKENIZER_DIR; else the workspace cache."""
    env = os.environ.get("BESPOKE_TOKENIZER_DIR")
    return Path(env) if env else Workspace.of(workspace).tokenizers


def present(tok_dir: Path) -> bool:
    return all((Path(tok_dir) / cache_name(m) / "vocab.json").is_file() for m in TOKENIZER_IDS)


def _bpe_gz() -> Path:
    # find_spec does not execute open_clip (which would import torch); we only want its data file.
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise BespokeError(
            "the CLIP vocabulary is not installed",
            "package open-clip-torch",
            "pip install --no-deps -r requirements/tokenizer-data.txt",
        )
    return Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"


def _quiet_transformers():
    # transformers without torch prints an advisory at import, and a length warning per long caption.
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    # bespoke sets TRANSFORMERS_CACHE on purpose (older libraries in the image read only that name)
    warnings.filterwarnings("ignore", message="Using `TRANSFORMERS_CACHE` is deprecated", category=FutureWarning)
    from transformers.utils import logging

    logging.set_verbosity_error()


def build(tok_dir: Path) -> Path:
    """Write both tokenizers in --tokenizer_cache_dir layout from the CLIP BPE file; returns tok_dir."""
    _quiet_transformers()
    from transformers import CLIPTokenizer
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    lines = gzip.open(_bpe_gz()).read().decode("utf-8").split("\n")[1 : _N_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]

    tok_dir = Path(tok_dir)
    tok_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tok_dir) as tmp:
        vocab_file, merges_file = Path(tmp, "vocab.json"), Path(tmp, "merges.txt")
        vocab_file.write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
        merges_file.write_text("#version: 0.2\n" + "\n".join(lines) + "\n", encoding="utf-8")
        for model_id in TOKENIZER_IDS:
            final = tok_dir / cache_name(model_id)
            if (final / "vocab.json").is_file():
                continue
            tok = CLIPTokenizer(str(vocab_file), str(merges_file), pad_token=_PAD[model_id], model_max_length=77)
            staging = Path(tmp, cache_name(model_id))
            tok.save_pretrained(str(staging))
            os.replace(staging, final)
    return tok_dir


def ensure(tok_dir: Path) -> Path:
    return tok_dir if present(tok_dir) else build(tok_dir)


def load(tok_dir: Path):
    _quiet_transformers()
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(Path(tok_dir) / cache_name(TOKENIZER_IDS[0])))


def count(captions: list[str], tok_dir: Path) -> list[int]:
    """CLIP tokens per caption, without BOS/EOS: what kohya compares with max_token_length."""
    tok = load(tok_dir)
    return [len(ids) - 2 for ids in tok(captions, truncation=False)["input_ids"]]
