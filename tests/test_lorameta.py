"""bespoke.lorameta: metadata merged into a real .safetensors header, read back with `safetensors`."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import save_file

from bespoke import lorameta
from bespoke.errors import BespokeError


@pytest.fixture
def lora(tmp_path):
    path = tmp_path / "lora.safetensors"
    tensors = {"lora_unet_a.lora_down.weight": np.arange(24, dtype=np.float32).reshape(4, 6),
               "lora_unet_a.alpha": np.array(64.0, dtype=np.float16),
               "lora_te1_b.lora_up.weight": np.ones((3, 5), dtype=np.float16)}
    save_file(tensors, str(path), metadata={"ss_network_dim": "128", "modelspec.title": "old"})
    return path, tensors


def _sample(tmp_path):
    img = Image.new("RGB", (1024, 1024), (99, 139, 111))
    path = tmp_path / "sample.png"
    img.save(path)
    return path


def test_merge_adds_keys_and_keeps_every_tensor(lora, tmp_path):
    path, tensors = lora
    keys = lorameta.best_keys(7, 0.8765, "4/4", "epoch 7: 4/4 samples pixel art", _sample(tmp_path))
    lorameta.merge_metadata(path, {lorameta.TITLE: "bespoke baby", **keys})
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata()
        assert meta["ss_network_dim"] == "128"  # sd-scripts' own keys stay
        assert meta["modelspec.title"] == "bespoke baby"
        assert meta["bespoke.recommended_epoch"] == "7" and meta["bespoke.mean_score"] == "0.8765"
        assert meta["bespoke.pixel_art"] == "4/4" and meta["bespoke.reason"].startswith("epoch 7")
        assert meta["modelspec.thumbnail"].startswith("data:image/jpeg;base64,")
        assert set(f.keys()) == set(tensors)
        for name, t in tensors.items():
            got = f.get_tensor(name)
            assert got.dtype == t.dtype and np.array_equal(got, t)
    header, start = lorameta.read_header(path)
    assert start % 8 == 0  # the tensors stay aligned


def test_thumbnail_is_small(tmp_path):
    import base64
    import io

    uri = lorameta.thumbnail(_sample(tmp_path))
    img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert max(img.size) == lorameta.THUMB_PX and len(uri) < 20_000


def test_merge_keeps_the_file_mode_and_leaves_no_temporary(lora):
    path, _ = lora
    path.chmod(0o644)
    lorameta.merge_metadata(path, {"bespoke.recommended_epoch": "3"})
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_not_a_safetensors_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\xff" * 16)
    with pytest.raises(BespokeError, match="not a safetensors file"):
        lorameta.merge_metadata(bad, {"a": "b"})
    assert bad.read_bytes() == b"\xff" * 16  # untouched


def test_modelspec_flags_are_sd_scripts_flags():
    from bespoke import recipe

    flags = lorameta.modelspec_flags(title="bespoke_baby_sdxl", triggers=("bespoke punk", "bespoke baby"),
                                     caption_prefix="pixel art, 24x24", sample_prompt=recipe.TEST_PROMPTS[0],
                                     dataset_hash="ab" * 32, images=203, profile="fast")
    assert set(flags) <= set(recipe.flags())
    assert flags["metadata_trigger_phrase"] == "bespoke punk, bespoke baby"
    assert "pixel art, 24x24" in flags["metadata_usage_hint"] and "portrait of bespoke punk" in flags["metadata_usage_hint"]
    assert "203 images" in flags["metadata_description"] and "fast" in flags["metadata_description"]
    assert "abababab" in flags["metadata_description"]
