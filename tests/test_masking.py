"""bespoke.masking: one rule for what a credential is, and masking it in everything printed or written."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bespoke import masking, recipe

TOKEN = "hf_" + "aZ3" * 12


@pytest.mark.parametrize("name", ["huggingface_token", "wandb_api_key", "HF_TOKEN", "--my-secret", "db_password",
                                  "AWS_SECRET_ACCESS_KEY", "private_key", "HF_TOKENS", "GITHUB_TOKEN_PATH"])
def test_credential_names(name):
    assert masking.is_secret_name(name)


@pytest.mark.parametrize("name", sorted(masking.NOT_SECRET) + ["learning_rate", "output_name", "network_dim",
                                                                "BESPOKE_TOKENIZER_DIR", "TOKENIZERS_PARALLELISM"])
def test_counts_and_paths_with_token_in_their_name_are_not_credentials(name):
    assert not masking.is_secret_name(name)


def test_every_sd_scripts_flag_named_like_a_credential_is_masked_or_listed():
    """A new sd-scripts flag with 'token' or 'key' in its name is masked unless someone lists it."""
    named = {f for f in recipe.flags() if any(w in f for w in ("token", "key", "secret", "passw"))}
    assert named - masking.NOT_SECRET == {"huggingface_token", "wandb_api_key"}
    assert set(masking.ENV_FOR_FLAG) == {"huggingface_token", "wandb_api_key"}


@pytest.mark.parametrize("argv,want", [
    ([f"--huggingface_token={TOKEN}"], ["--huggingface_token=***"]),
    (["--huggingface_token", TOKEN, "--seed=1"], ["--huggingface_token", "***", "--seed=1"]),
    (["--set", f"wandb_api_key={'w' * 40}"], ["--set", "wandb_api_key=***"]),
    ([f"HF_TOKEN={TOKEN}", "python"], ["HF_TOKEN=***", "python"]),
    ([f"--note=see {TOKEN} here"], ["--note=see *** here"]),
    (["--keep_tokens=2", "--max_token_length=225"], ["--keep_tokens=2", "--max_token_length=225"]),
    (["--set", "wandb_api_key", "w" * 40, "--seed=1"], ["--set", "wandb_api_key", "***", "--seed=1"]),  # `=` forgot
    (["--note", "wandb_api_key", "plain"], ["--note", "wandb_api_key", "plain"]),  # a bare word elsewhere: a value
])
def test_mask_argv(argv, want):
    assert masking.mask_argv(argv) == want


def test_argv_secrets_are_the_values_mask_argv_hides():
    argv = ["train", f"--huggingface_token={TOKEN}", "--set", "wandb_api_key", "w" * 40, "--seed", "1"]
    assert masking.argv_secrets(argv) == [TOKEN, "w" * 40]


@given(prefix=st.text(max_size=20), suffix=st.text(max_size=20),
       secret=st.from_regex(r"hf_[A-Za-z0-9]{8,40}", fullmatch=True))
def test_a_token_shaped_value_is_masked_wherever_it_appears(prefix, suffix, secret):
    masked = masking.mask_text(f"{prefix} {secret} {suffix}")
    assert secret not in masked


@given(word=st.from_regex(r"[A-Za-z0-9]{0,8}[_=:/.,-]", fullmatch=True),
       secret=st.from_regex(r"hf_[A-Za-z0-9]{8,40}", fullmatch=True))
def test_a_token_glued_to_a_word_by_punctuation_is_masked(word, secret):
    assert secret not in masking.mask_text(f"comment={word}{secret}")  # x_hf_...: "_" is a word character


@given(value=st.text(min_size=6, max_size=30))
def test_a_known_secret_value_is_masked_whatever_its_shape(value):
    assert masking.mask_text(f"<{value}>", [value]) == "<***>"


def test_secret_values_come_from_credential_named_environment_variables():
    env = {"HF_TOKEN": TOKEN, "WANDB_API_KEY": "k" * 40, "PATH": "/usr/bin", "KEEP_TOKENS": "2"}
    assert sorted(masking.secret_values(env)) == sorted([TOKEN, "k" * 40])


def test_credentials_move_to_the_environment_out_of_the_arguments():
    args, env = masking.to_env({"seed": "1", "huggingface_token": TOKEN, "wandb_api_key": "k" * 40})
    assert args == {"seed": "1"} and env == {"HF_TOKEN": TOKEN, "WANDB_API_KEY": "k" * 40}


def test_mask_obj_masks_nested_values_and_credential_keys():
    obj = {"argv": ["--x", f"--huggingface_token={TOKEN}"], "HF_TOKEN": TOKEN, "n": 3, "msg": f"got {TOKEN}"}
    masked = masking.mask_obj(obj)
    assert TOKEN not in repr(masked) and masked["n"] == 3 and masked["argv"][0] == "--x"
