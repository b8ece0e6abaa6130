"""The talk time from Asterisk's two stamps, and what is not believed."""

from __future__ import annotations

import pytest

from gateway.voice.transfer_timing import bridged_seconds


def test_the_talk_time_is_the_difference_of_the_stamps() -> None:
    assert bridged_seconds("1796445975", "1796446006", 40.5) == 31.0


def test_whole_second_rounding_never_makes_it_longer_than_the_dial() -> None:
    """Answered at once, read back a moment later: the stamps can say a second more."""
    assert bridged_seconds("1796445975", "1796445977", 1.3) == 1.3


@pytest.mark.parametrize(
    ("at", "now", "dial"),
    [
        (None, "1796446006", 40.0),  # no stamp: an old dialplan, or not answered
        ("1796445975", None, 40.0),
        ("1796446007", "1796446006", 40.0),  # answered after the end
        ("1796445975", "1796446006", 20.0),  # longer than the Dial lasted
        ("0", "1796446006", 40.0),
        ("-5", "1796446006", 40.0),
        ("17964459.5", "1796446006", 40.0),
        ("１７９６４４５９７５", "1796446006", 40.0),  # fullwidth digits: isdigit() alone says yes
        ("1" * 40, "1" * 40, 40.0),
        ("", "1796446006", 40.0),
    ],
)
def test_stamps_that_make_no_sense_give_none(at: str | None, now: str | None, dial: float) -> None:
    assert bridged_seconds(at, now, dial) is None
