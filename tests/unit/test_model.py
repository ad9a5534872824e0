"""Validation of command input: tokens and modes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ticker_worker.core.model import MAX_BULK, Mode, parse_mode, parse_token, parse_token_list
from ticker_worker.errors import InvalidMode, InvalidRequest, InvalidToken


@pytest.mark.parametrize("value", ["full", "FULL", " Quote ", "ltp"])
def test_modes_are_case_insensitive(value: str) -> None:
    assert parse_mode(value) == Mode(value.strip().lower())


@pytest.mark.parametrize("value", ["fulll", "", None, 1, ["full"], "snapquote"])
def test_unknown_mode_names_the_value_and_the_choices(value: object) -> None:
    with pytest.raises(InvalidMode) as err:
        parse_mode(value)
    assert repr(value) in str(err.value)
    assert "ltp, quote, full" in str(err.value)


@pytest.mark.parametrize(
    "value", ["256265", 256265.0, True, False, None, -1, 0, 2**32, [256265], {"t": 1}]
)
def test_bad_tokens_are_refused_with_the_value(value: object) -> None:
    with pytest.raises(InvalidToken) as err:
        parse_token(value)
    assert repr(value) in str(err.value) or str(value) in str(err.value)


def test_good_token_passes() -> None:
    assert parse_token(256265) == 256265


@given(st.one_of(st.text(), st.floats(), st.none(), st.booleans(), st.lists(st.integers())))
def test_no_non_integer_is_ever_a_token(value: object) -> None:
    with pytest.raises(InvalidRequest):
        parse_token(value)


def test_bulk_container_checks() -> None:
    with pytest.raises(InvalidToken, match="list of integers"):
        parse_token_list("256265")
    with pytest.raises(InvalidToken, match="at most"):
        parse_token_list(list(range(1, MAX_BULK + 2)))
    assert parse_token_list((1, 2)) == [1, 2]
