"""Profile selection and the sd-scripts argv each profile produces (no GPU needed)."""

import pytest

from bespoke import kohya, profiles, recipe
from bespoke.errors import BespokeError


def argv_for(name, tmp_path, user=()):
    p = profiles.get(name)
    r = recipe.build(tmp_path, (*p.overrides, *user), tokenizer_dir=tmp_path / "tok")
    sd_script = "/opt/sd-scripts/sdxl_train_network.py"  # as pipeline.train: a launcher takes it as argv[1]
    script, args = (p.launcher_path(), [sd_script]) if p.launcher else (sd_script, [])
    return kohya.launch_argv(script, args + r.argv(), 1, python="python", mixed_precision=str(r.get("mixed_precision")))


def gpu(name="NVIDIA H100 80GB HBM3", memory_gb=79.2, capability=(9, 0), index=0):
    from bespoke.preflight import Gpu

    return Gpu(index, name, memory_gb, capability)


def test_fast_is_the_default_on_hopper_gpus_where_it_was_proven():
    assert profiles.default_for([gpu()])[0] == "fast"
    assert profiles.default_for([gpu("NVIDIA H200", 139.8), gpu("NVIDIA H200", 139.8, index=1)])[0] == "fast"


@pytest.mark.parametrize("gpus", [
    [gpu("NVIDIA GeForce RTX 4090", 24.0, (8, 9))],
    [gpu("NVIDIA RTX A5000", 24.0, (8, 6)), gpu("NVIDIA RTX A5000", 24.0, (8, 6), 1)],
    [gpu("NVIDIA L4", 22.5, (8, 9))],
    [gpu("NVIDIA H100 (a 24 GiB MIG slice)", 23.5)],
    [gpu(), gpu("NVIDIA GeForce RTX 3090", 24.0, (8, 6), 1)],  # the smallest GPU decides
])
def test_lean_is_the_default_where_fast_does_not_fit(gpus):
    name, reason = profiles.default_for(gpus)
    assert name == "lean" and "gradient checkpointing" in reason


def test_lean_keeps_checkpointing_and_compiles(tmp_path):
    lean, fast = argv_for("lean", tmp_path), argv_for("fast", tmp_path)
    assert "--gradient_checkpointing" in lean and "--sdpa" in lean and "--xformers" not in lean
    assert profiles.get("lean").launcher == "fastsdxl.py" and profiles.get("lean").compiles
    assert [a for a in lean if a not in ("--gradient_checkpointing", "--vae_batch_size=4")] == \
        [a for a in fast if a != "--vae_batch_size=8"]


@pytest.mark.parametrize("gpus, missing, why", [
    (None, None, "no GPU"),
    ([], None, "no GPU"),
    ([gpu("NVIDIA A100-SXM4-80GB", 79.2, (8, 0))], None, "not on NVIDIA A100"),
    ([gpu(), gpu("NVIDIA L40S", 44.4, (8, 9), 1)], None, "proven on Hopper"),  # every GPU must qualify
    ([gpu("NVIDIA Tesla T4", 15.0, (7, 5))], None, "not on NVIDIA Tesla T4"),  # no bf16, no room
    ([gpu("NVIDIA GeForce RTX 4080", 16.0, (8, 9))], None, "not on NVIDIA GeForce RTX 4080"),  # too small for lean too
    ([gpu("NVIDIA H100 (a 16 GiB MIG slice)", 16.0)], None, "peaks at"),
    ([gpu()], "a C compiler (cc/gcc)", "need a C compiler"),
    ([gpu("NVIDIA GeForce RTX 4090", 24.0, (8, 9))], "a C compiler (cc/gcc)", "need a C compiler"),
])
def test_exact_is_the_default_anywhere_else(gpus, missing, why):
    name, reason = profiles.default_for(gpus, missing)
    assert name == "exact" and why in reason


def test_exact_changes_nothing(tmp_path):
    assert profiles.get("exact").overrides == () and profiles.get("exact").launcher is None
    r = recipe.build(tmp_path, (), tokenizer_dir=tmp_path / "tok")
    assert argv_for("exact", tmp_path)[-len(r.argv()):] == r.argv()


def test_unknown_profile_names_the_choices():
    with pytest.raises(BespokeError, match="unknown profile 'turbo'") as e:
        profiles.get("turbo")
    assert "exact, fast, lean" in " ".join(map(str, e.value.args))


def test_fast_keeps_the_math(tmp_path):
    exact, fast = argv_for("exact", tmp_path), argv_for("fast", tmp_path)
    assert "--gradient_checkpointing" in exact and "--gradient_checkpointing" not in fast
    assert "--xformers" in exact and "--xformers" not in fast and "--sdpa" in fast
    # fast runs sd-scripts' script through the compile launcher; every other argument is exact's
    i = fast.index(str(profiles.get("fast").launcher_path()))
    assert fast[i + 1] == "/opt/sd-scripts/sdxl_train_network.py"
    rest = fast[:i] + fast[i + 2:]
    changed = {"--gradient_checkpointing", "--xformers", "/opt/sd-scripts/sdxl_train_network.py"}
    assert [a for a in exact if a not in changed] == [a for a in rest if a not in ("--sdpa", "--vae_batch_size=8")]
    assert "--vae_batch_size=8" in fast  # latent caching only: 8 images per VAE call
    for flag in ("--train_batch_size=2", "--mixed_precision=bf16", "--network_dim=128", "--network_alpha=64",
                 "--optimizer_type=AdamW8bit", "--text_encoder_lr=0.00005", "--lr_scheduler=cosine_with_restarts",
                 "--seed=42", "--max_train_epochs=10"):
        assert flag in fast


def test_fast_compiles_and_exact_does_not():
    assert profiles.get("fast").compiles and profiles.get("fast").launcher == "fastsdxl.py"
    assert not profiles.get("exact").compiles


def test_user_overrides_win_over_the_profile(tmp_path):
    argv = argv_for("fast", tmp_path, ("gradient_checkpointing=true",))
    assert "--gradient_checkpointing" in argv


def test_launcher_paths_exist():
    for p in profiles.PROFILES.values():
        assert p.launcher_path() is None or p.launcher_path().is_file()
