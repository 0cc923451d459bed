"""--set values against sd-scripts' flag table and the recipe's math: any text either parses into a value
sd-scripts can use, or is refused in one line; no override reaches training to divide by zero."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bespoke import recipe
from bespoke.errors import RecipeError

NUMERIC = sorted(n for n, spec in recipe.flags().items() if spec["type"] in ("int", "float") and n not in recipe.OWNED)
FLAGS = sorted(set(recipe.flags()) - recipe.OWNED - set(recipe.REFUSED))


def _numbers(value) -> list[float]:
    return [float(v) for v in (value if isinstance(value, list) else [value])]


@given(name=st.sampled_from(NUMERIC),
       value=st.one_of(st.text(max_size=12), st.integers(-10**6, 10**6).map(str),
                       st.floats(allow_nan=True, allow_infinity=True).map(repr),
                       st.sampled_from(["0", "-1", "nan", "inf", "-inf", "1e309", "0x10", "1_000", " 3 ", "1e3"])))
def test_a_number_override_is_finite_and_in_range_or_refused(name, value):
    try:
        parsed_name, parsed = recipe.parse_override(f"{name}={value}")
    except RecipeError as e:
        assert "\n" not in e.line() and name in e.line()
        return
    assert parsed_name == name
    for number in _numbers(parsed):
        assert math.isfinite(number) and number >= (1 if name in recipe.AT_LEAST_1 else 0)
        if recipe.flags()[name]["type"] == "int":
            assert float(number).is_integer()


@given(name=st.sampled_from(FLAGS), value=st.text(max_size=30))
def test_any_value_for_any_flag_parses_or_is_refused_in_one_line(name, value):
    try:
        recipe.parse_override(f"{name}={value}")
    except RecipeError as e:
        assert "\n" not in e.line() and "\x1b" not in e.line()


@given(text=st.text(max_size=40))
def test_any_override_text_parses_or_is_refused_in_one_line(text):
    try:
        recipe.parse_override(text)
    except RecipeError as e:
        assert "\n" not in e.line() and "\x1b" not in e.line()


@pytest.mark.parametrize("override", ["train_batch_size=0", "gradient_accumulation_steps=0", "max_train_epochs=-3",
                                      "max_train_epochs=0", "learning_rate=nan", "learning_rate=-1e-4",
                                      "unet_lr=inf", "text_encoder_lr=abc", "text_encoder_lr=1e-4 nan",
                                      "network_dim=0", "network_dim=1.5", "save_every_n_epochs=0",
                                      "optimizer_args=weight_decay='0.1", "network_args=\"conv_dim=4",
                                      "lr_warmup_steps=abc", "lr_warmup_steps=-5", "caption_dropout_rate=2",
                                      "resolution=0,0", "resolution=abc", "resolution=1024,1024,1024",
                                      "output_name=../../X", "output_name=a/b", "output_name=", "log_prefix=..",
                                      "wandb_run_name=/tmp/x", "seed=1\x1b[2J", "max_token_length=100"])
def test_values_that_pass_the_types_but_break_training_are_refused(override):
    with pytest.raises(RecipeError):
        recipe.parse_override(override)


def test_every_bad_override_is_reported_at_once_and_the_good_ones_kept():
    good, errors = recipe.check_overrides(["train_batch_size=0", "network_dim=64", "learning_rate=nan", "nope=1"])
    assert good == [("network_dim", "64")]
    assert [e.line().split(":")[0] for e in errors[:2]] == ["--set train_batch_size=0", "--set learning_rate=nan"]
    assert "nope" in errors[2].line()
    with pytest.raises(RecipeError, match="3 overrides are wrong") as e:
        recipe.build("/ws", ["train_batch_size=0", "learning_rate=nan", "nope=1"], tokenizer_dir="/t")
    assert len(e.value.problems) == 3


def test_the_training_math_of_an_accepted_recipe_never_divides_by_zero():
    r = recipe.build("/ws", ["train_batch_size=1", "gradient_accumulation_steps=1", "max_train_epochs=1"],
                     tokenizer_dir="/t")
    m = recipe.training_math(r, images=1, repeats=1, gpus=0)
    assert m.steps_per_epoch == 1 and m.total_steps == 1
