"""The HomePage's OpenAPI document says of text what the server does with it."""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st

from functions.homepage.openapi import NOT_BLANK
from handlers.model import ValidationError, validate_text

# Whitespace of every kind Python and ECMAScript disagree on, among ordinary characters.
edges = st.text(alphabet=st.sampled_from(" \t\n\x1c\x1f\x85\xa0\u2028\u3000\ufeffa7"), max_size=6)


@given(st.text(max_size=20) | edges)
@example("\x85")  # schemathesis's \S (ECMAScript) took this for text; str.strip takes it for space
@example("\ufeff")
def test_the_documented_pattern_admits_exactly_what_validation_keeps(text: str) -> None:
    try:
        validate_text(text)
        kept = True
    except ValidationError:
        kept = False
    assert (re.search(NOT_BLANK, text) is not None) == kept


def test_the_pattern_means_the_same_in_ecmascript_and_python() -> None:
    # JSON Schema patterns are ECMAScript's; \s, \w, \d and \b mean other sets there than in Python's re.
    assert re.search(r"\\[sSwWdDbB]", NOT_BLANK) is None
