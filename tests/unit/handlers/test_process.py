from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from functions.adapters.memory import MemoryResultStore
from handlers.model import Barrage, ProcessedBarrage
from handlers.ports import PutResult, PutStatus
from handlers.process import (
    Masker,
    OutcomeStatus,
    ProcessConfig,
    _skeleton,
    assign_lane,
    process,
    sanitise,
)

NOW = 1_767_225_600_000


class FixedClock:
    def now_ms(self) -> int:
        return NOW


def barrage(i: int = 0, text: str = "hello", user: str = "u1", colour: str | None = None) -> Barrage:
    return Barrage(id=f"id-{i}", room="r1", user=user, text=text, sent_at=NOW - 10, colour=colour)


# -- sanitiser ----------------------------------------------------------------------------

any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=400)


@given(any_text)
@settings(max_examples=400)
def test_sanitise_never_raises_and_is_bounded(text: str) -> None:
    cleaned, _ = sanitise(text, 50)
    assert len(cleaned) <= 50


@given(any_text)
@settings(max_examples=400)
def test_sanitise_leaves_no_control_or_zero_width_characters(text: str) -> None:
    cleaned, _ = sanitise(text)
    assert not any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Cn") for c in cleaned)
    assert "  " not in cleaned
    assert cleaned == cleaned.strip()
    cleaned.encode("utf-8")  # lone surrogates would fail here


@given(any_text, st.integers(min_value=1, max_value=250))
@settings(max_examples=400)
def test_sanitise_is_idempotent(text: str, cap: int) -> None:
    once, _ = sanitise(text, cap)
    assert sanitise(once, cap) == (once, False)


@given(st.text(max_size=80))
def test_a_printable_text_keeps_every_character_the_sanitiser_would_keep(text: str) -> None:
    # The fast path (str.isprintable) must agree with the character-by-character rule.
    by_rule = "".join(" " if c.isspace() else c for c in text
                      if c.isspace() or unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Cn"))
    if text.isprintable():
        assert by_rule == text
    cleaned, _ = sanitise(text, 10_000)
    assert cleaned == " ".join(unicodedata.normalize("NFC", by_rule).split())


def test_sanitise_examples() -> None:
    assert sanitise("  a\u200b b\t\n\r c\u0000 ") == ("a b c", False)
    assert sanitise("e\u0301") == ("\u00e9", False)  # NFC
    assert sanitise("x" * 250, 200) == ("x" * 200, True)
    assert sanitise("\u202eevil") == ("evil", False)  # bidi override removed


# -- masking ------------------------------------------------------------------------------

words = st.text(st.sampled_from("abcdexyz"), min_size=2, max_size=5)
separators = st.text(st.sampled_from(" .-_*!,"), max_size=2)


@given(st.lists(words, min_size=1, max_size=4), st.lists(st.tuples(st.sampled_from("abcdexyzABCDE"), separators)))
@settings(max_examples=400)
def test_masked_word_never_survives(listed: list[str], pieces: list[tuple[str, str]]) -> None:
    masker = Masker(listed)
    text = "".join(char + sep for char, sep in pieces)
    masked, _ = masker.mask(text)
    skeleton = _skeleton(masked)[0]
    assert not any(word in skeleton for word in listed)
    assert len(masked) == len(text)


@given(st.text(st.sampled_from("mnopqrstuvw .!MN中文"), max_size=60))
def test_unlisted_text_is_unchanged(text: str) -> None:
    masker = Masker(["abc", "xyz"])
    assert masker.mask(text) == (text, 0)


def test_masking_is_case_insensitive_and_spans_separators() -> None:
    masker = Masker(["bad"])
    assert masker.mask("so BAD") == ("so ***", 1)
    assert masker.mask("b.a d!") == ("*.* *!", 1)
    assert masker.mask("ｂａｄ") == ("***", 1)  # full-width letters fold too
    assert masker.mask("good") == ("good", 0)


def test_masking_repeats_when_masking_joins_a_new_word() -> None:
    masker = Masker(["xy", "ab"])
    masked, count = masker.mask("axyb")
    assert masked == "****" and count == 2


# -- process ------------------------------------------------------------------------------


def test_process_stores_cleaned_results_with_placement() -> None:
    store = MemoryResultStore()
    config = ProcessConfig(masked_words=("spam",), lanes=8)
    batch = [barrage(1, "  buy   SPAM\u200b now "), barrage(2, "hi", colour="#112233")]
    outcomes = process(batch, store, FixedClock(), config)
    assert [o.status for o in outcomes] == [OutcomeStatus.STORED, OutcomeStatus.STORED]
    first, second = (o.result for o in outcomes)
    assert isinstance(first, ProcessedBarrage) and isinstance(second, ProcessedBarrage)
    assert first.text == "buy **** now" and first.masked_words == 1 and first.flags == ("masked",)
    assert first.processed_at == NOW and first.sent_at == NOW - 10
    assert 0 <= first.lane < 8 and first.lane == assign_lane("id-1", 8)
    assert second.colour == "#112233"
    assert first.colour.startswith("#")
    assert store.count() == 2


def test_process_is_idempotent_by_id() -> None:
    store = MemoryResultStore()
    config = ProcessConfig()
    process([barrage(1)], store, FixedClock(), config)
    outcomes = process([barrage(1), barrage(2)], store, FixedClock(), config)
    assert [o.status for o in outcomes] == [OutcomeStatus.DUPLICATE, OutcomeStatus.STORED]
    assert store.count() == 2


def test_process_rejects_text_that_cleans_to_nothing() -> None:
    outcomes = process([barrage(1, "\u200b\u200b")], MemoryResultStore(), FixedClock(), ProcessConfig())
    assert outcomes[0].status is OutcomeStatus.REJECTED
    assert "empty" in outcomes[0].reason


def test_process_rate_limits_per_user_within_a_batch() -> None:
    config = ProcessConfig(max_per_user_per_batch=2)
    batch = [barrage(i, user="loud") for i in range(4)] + [barrage(9, user="quiet")]
    statuses = [o.status for o in process(batch, MemoryResultStore(), FixedClock(), config)]
    assert statuses == [OutcomeStatus.STORED] * 2 + [OutcomeStatus.REJECTED] * 2 + [OutcomeStatus.STORED]


class BrokenStore(MemoryResultStore):
    def __init__(self, fail_ids: set[str] | None = None, explode: bool = False) -> None:
        super().__init__()
        self.fail_ids = fail_ids or set()
        self.explode = explode

    def put_many(self, results: Sequence[ProcessedBarrage]) -> list[PutResult]:
        if self.explode:
            raise ConnectionError("store down")
        ok = super().put_many([r for r in results if r.id not in self.fail_ids])
        by_id = {o.id: o for o in ok}
        return [by_id.get(r.id, PutResult(r.id, PutStatus.FAILED, "throttled")) for r in results]


def test_process_reports_partial_store_failure_per_item() -> None:
    outcomes = process([barrage(1), barrage(2)], BrokenStore({"id-2"}), FixedClock(), ProcessConfig())
    assert [(o.id, o.status) for o in outcomes] == [("id-1", OutcomeStatus.STORED), ("id-2", OutcomeStatus.FAILED)]
    assert outcomes[1].reason == "throttled"


def test_process_turns_a_store_exception_into_failed_outcomes() -> None:
    outcomes = process([barrage(1), barrage(2, "\u200b")], BrokenStore(explode=True), FixedClock(), ProcessConfig())
    assert [o.status for o in outcomes] == [OutcomeStatus.FAILED, OutcomeStatus.REJECTED]
    assert "store down" in outcomes[0].reason


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="lanes"):
        ProcessConfig(lanes=0)
    with pytest.raises(ValueError, match="max_per_user_per_batch"):
        ProcessConfig(max_per_user_per_batch=0)
