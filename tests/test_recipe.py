import pytest

from bespoke import recipe
from bespoke.errors import RecipeError

NOTES_ARGV = [
    "--pretrained_model_name_or_path=stabilityai/stable-diffusion-xl-base-1.0",
    "--train_data_dir=/workspace/training_data",
    "--resolution=1024,1024",
    "--output_dir=/workspace/output",
    "--output_name=bespoke_baby_sdxl",
    "--save_model_as=safetensors",
    "--max_train_epochs=10",
    "--learning_rate=0.0001",
    "--unet_lr=0.0001",
    "--text_encoder_lr=0.00005",
    "--network_module=networks.lora",
    "--network_dim=128",
    "--network_alpha=64",
    "--save_every_n_epochs=1",
    "--mixed_precision=bf16",
    "--cache_latents",
    "--cache_latents_to_disk",
    "--optimizer_type=AdamW8bit",
    "--caption_extension=.txt",
    "--lr_scheduler=cosine_with_restarts",
    "--lr_scheduler_num_cycles=3",
    "--min_snr_gamma=5",
    "--noise_offset=0.1",
    "--train_batch_size=2",
    "--gradient_checkpointing",
    "--xformers",
    "--seed=42",
]
ADDED = [
    "--tokenizer_cache_dir=/opt/tok",
    "--logging_dir=/workspace/output/logs",
    "--log_with=tensorboard",
    "--save_state",
    "--save_last_n_epochs_state=1",
    "--sample_prompts=/workspace/output/sample-prompts.txt",
    "--sample_every_n_epochs=1",
    "--sample_sampler=euler",
]


def build(*overrides, xformers=True):
    return recipe.build("/workspace", overrides, tokenizer_dir="/opt/tok", xformers_available=xformers)


def test_default_argv_is_the_notes_command_plus_documented_additions():
    r = build()
    assert r.argv() == NOTES_ARGV + ADDED
    assert set(r.added) == {a[2:].split("=")[0] for a in ADDED}


def test_no_toml_anywhere():
    assert not any("config" in a for a in build().argv())
    with pytest.raises(RecipeError, match="TOML"):
        build("config_file=train.toml")


def test_override_replaces_value_in_place():
    argv = build("max_train_epochs=12", "network_dim=64").argv()
    assert argv[6] == "--max_train_epochs=12" and "--network_dim=64" in argv and "--network_dim=128" not in argv


def test_switch_overrides():
    argv = build("xformers=false", "sdpa=true", "gradient_checkpointing=off").argv()
    assert "--xformers" not in argv and "--sdpa" in argv and "--gradient_checkpointing" not in argv


def test_unknown_flag_is_refused_with_a_suggestion():
    with pytest.raises(RecipeError, match="unknown sd-scripts flag 'network_dimm'") as e:
        build("network_dimm=64")
    assert "network_dim" in e.value.fix


@pytest.mark.parametrize("text, message", [
    ("network_dim=big", "expected an integer"),
    ("learning_rate=fast", "expected a number"),
    ("xformers=maybe", "is a switch"),
    ("save_precision=fp8", "not one of"),
    ("max_train_epochs", "NAME=VALUE"),
    ("train_data_dir=/x", "sets this from the workspace"),
])
def test_bad_overrides(text, message):
    with pytest.raises(RecipeError, match=message):
        build(text)


def test_list_flags_split():
    assert build("network_args=conv_dim=4 conv_alpha=1").argv()[-2:] == ["conv_dim=4", "conv_alpha=1"]


def test_sdpa_replaces_missing_xformers_with_a_warning():
    r = build(xformers=False)
    assert "--xformers" not in r.argv() and "--sdpa" in r.argv()
    assert "sdpa" in r.added and r.warnings


def test_explicit_xformers_override_is_respected():
    assert "--xformers" in build("xformers=true", xformers=False).argv()


def test_training_math_for_the_users_data():
    m = recipe.training_math(build(), images=203, repeats=10, gpus=1)
    assert (m.samples_per_epoch, m.steps_per_epoch, m.total_steps) == (2030, 1015, 10150)
    assert "203 x 10 = 2030" in "\n".join(m.lines()) and "1015 x 10 epochs = 10150" in "\n".join(m.lines())


def test_training_math_on_two_gpus_halves_steps():
    m = recipe.training_math(build(), images=203, repeats=10, gpus=2)
    assert (m.steps_per_epoch, m.total_steps) == (508, 5080)
    assert "x 2 GPUs = 4" in "\n".join(m.lines())
    m1 = recipe.training_math(build("train_batch_size=1"), images=203, repeats=10, gpus=2)
    assert m1.steps_per_epoch == 1015  # global batch 2 on two GPUs: the notes' step count


def test_prompt_file_has_the_four_test_prompts():
    text = recipe.prompt_file_text()
    lines = text.splitlines()
    assert len(lines) == 4
    assert all(line.endswith("--w 1024 --h 1024 --s 30 --l 7.5 --d 1234") for line in lines)
    assert lines[1].startswith("portrait of bespoke baby, pink solid background")


def test_flag_list_matches_the_pin():
    import json
    from importlib import resources

    data = json.loads(resources.files("bespoke").joinpath("data/sdxl_train_network_flags.json").read_text())
    pin = resources.files("bespoke").joinpath("SD_SCRIPTS_COMMIT").read_text().strip()
    assert data["sd_scripts_commit"] == pin
    assert {name for name, _ in recipe.NOTES} <= set(data["flags"])
