"""The shipped dialplan holds what the bridge counts on, and the AGI stand-in plays the same."""

from __future__ import annotations

import re

from gateway.voice.asterisk_side import SHIPPED_SUBROUTINES, _dial_options
from gateway.voice.transfer_timing import BRIDGED_AT_VARIABLE, TRANSFER_GOSUB, dial_option
from tests.conftest import ROOT
from tests.live.asterisk import MODULES
from tests.test_deployment import dialplan


def context_steps(name: str) -> list[tuple[str, str]]:
    """(application, data) of extension `s` in context `name`, in priority order."""
    steps: list[tuple[str, str]] = []
    for exten, _, app in dialplan((ROOT / "asterisk" / "extensions.conf").read_text(), name):
        step = re.fullmatch(r"(\w+)\((.*)\)", app)
        assert exten == "s" and step, f"unexpected step in [{name}]: {exten} {app!r}"
        steps.append((step.group(1), step.group(2)))
    return steps


def test_the_transfer_subroutine_stamps_the_answer_on_the_caller_and_returns() -> None:
    steps = context_steps(TRANSFER_GOSUB)
    assert steps, f"extensions.conf has no [{TRANSFER_GOSUB}] context"
    assert steps[-1] == ("Return", "")  # without it the callee's channel never reaches the bridge
    sets = [tuple(data.split("=", 1)) for app, data in steps if app == "Set"]
    assert sets == [(f"MASTER_CHANNEL({BRIDGED_AT_VARIABLE})", "${EPOCH}")]
    # What the stand-in runs for U() is what Asterisk runs.
    assert [tuple(s) for s in SHIPPED_SUBROUTINES[TRANSFER_GOSUB]] == sets


def test_the_bridge_dials_with_that_subroutine() -> None:
    """app_dial's U() takes a context (its `s` extension); ^ would separate Gosub arguments."""
    options = _dial_options(f"PJSIP/+81312345678@trunk,30,{dial_option()}")
    assert options == {"U": TRANSFER_GOSUB}


def test_the_live_asterisk_loads_app_stack() -> None:
    """U() runs through app_stack; without it Dial bridges but nothing is stamped."""
    assert "app_stack.so" in MODULES
