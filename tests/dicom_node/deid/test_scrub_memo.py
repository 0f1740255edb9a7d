"""The scrubber's memo gives what scrubbing afresh gives, whatever was scrubbed before.

Its key leaves out the identifiers of digits and dots (UIDs, numbers) that are not in the text:
slices of one series then share results although each has its own SOP Instance UID.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dicom_node.deid.scrub import Scrubber, ScrubContext

NUMBER = "12.34"  # not cut by any rule of its own (no date, no long number)


def test_a_number_in_the_text_is_cut_whichever_context_came_first() -> None:
    text = f"Recon {NUMBER} KERNEL B30f"
    with_it = ScrubContext(frozenset({"huber"}), frozenset({NUMBER, "pid777"}))
    without = ScrubContext(frozenset({"huber"}), frozenset({NUMBER + "5", "pid777"}))
    for first, second in ((with_it, without), (without, with_it)):
        scrubber = Scrubber()
        results = {id(ctx): scrubber.scrub(text, ctx) for ctx in (first, second)}
        assert NUMBER not in results[id(with_it)]
        assert results[id(without)] == text


def test_name_parts_and_other_identifiers_are_part_of_the_key() -> None:
    scrubber = Scrubber()
    text = "Thorax Huber KM"
    assert scrubber.scrub(text, ScrubContext()) == text
    assert "Huber" not in scrubber.scrub(text, ScrubContext(frozenset({"huber"})))
    assert "Huber" not in scrubber.scrub(text, ScrubContext(identifiers=frozenset({"huber"})))
    assert scrubber.scrub(text, ScrubContext(identifiers=frozenset({"12345678"}))) == text


_TEXT = st.text(alphabet="0123456789.. abcKMΣσςİi_-/ΟΔ", max_size=30)
_NUMERIC = st.text(alphabet="0123456789.", min_size=1, max_size=12)


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(text=_TEXT, names=st.frozensets(st.text(alphabet="abcσςοδi", min_size=1, max_size=4),
                                       max_size=3),
       others=st.frozensets(st.text(alphabet="abcσςοδ12", min_size=1, max_size=5), max_size=3),
       numeric_a=st.frozensets(_NUMERIC, max_size=4), numeric_b=st.frozensets(_NUMERIC, max_size=4),
       kind=st.sampled_from(["text", "coded", "code"]))
def test_memo_equals_scrubbing_afresh(text: str, names: frozenset[str], others: frozenset[str],
                                      numeric_a: frozenset[str], numeric_b: frozenset[str],
                                      kind: str) -> None:
    first = ScrubContext(names, others | numeric_a)
    second = ScrubContext(names, others | numeric_b)
    scrubber = Scrubber(["qz"])
    scrubber.scrub(text, first, kind=kind)
    assert scrubber.scrub(text, second, kind=kind) == Scrubber(["qz"])._scrub(text, second, kind)
