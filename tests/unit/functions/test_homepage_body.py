"""Request-body limits of the HomePage: the nesting scan agrees with the real nesting of any JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from functions.homepage.body import MAX_JSON_DEPTH, nesting_depth, parse_json
from functions.homepage.http import ApiError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet=st.sampled_from('[]{}"\\,:ab\n')),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=60,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


def nested(levels: int) -> Any:
    value: Any = '[{"inside"}]'
    for level in range(levels):
        value = [value] if level % 2 else {"k": value}
    return value


@given(json_values)
def test_the_scan_is_exact_for_valid_json(value: Any) -> None:
    text = json.dumps(value)
    found = nesting_depth(text)
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH:
        assert found == depth(value) or (found > MAX_JSON_DEPTH and depth(value) > MAX_JSON_DEPTH)
    else:
        assert found == 0  # skipped: it cannot exceed the limit


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH])
def test_up_to_the_limit_parses(levels: int) -> None:
    assert depth(parse_json(json.dumps(nested(levels)).encode())) == levels


@pytest.mark.parametrize("body", [json.dumps(nested(MAX_JSON_DEPTH + 1)).encode(), b"[" * 50_000,
                                  b'{"a":' * 10_000])
def test_beyond_the_limit_is_400(body: bytes) -> None:
    with pytest.raises(ApiError) as caught:
        parse_json(body)
    assert caught.value.status == 400
    assert f"nested deeper than {MAX_JSON_DEPTH} levels" in caught.value.message


def test_brackets_in_strings_do_not_count() -> None:
    text = json.dumps({"text": "[" * 1000 + '"{' * 100})
    assert parse_json(text.encode()) == {"text": "[" * 1000 + '"{' * 100}


@pytest.mark.parametrize("body", [b'"' + b'\\"' * 50_000, b'"\\' * 30_000, b"[" + b'"' * 40_001])
def test_pathological_strings_are_quick_400s(body: bytes) -> None:
    with pytest.raises(ApiError) as caught:
        parse_json(body)
    assert caught.value.status == 400
