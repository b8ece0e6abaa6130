"""MT routing rules (gateway/routing): first match wins, every criterion of a rule must match,
a bad file is refused naming the rule and its line, and the rules file is reloaded when its
content changes while a bad version leaves the rules in force."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.routing.rules import Routed, RulesError, parse_rules
from gateway.routing.source import RouteFile

CONNECTORS = ["a", "b", "c"]

RULES = """
# OTP traffic of one account goes to c first
[[route]]
name = "otp"
account = "AC1"
tag = ["otp", "2fa"]
connectors = ["c", "a"]

[[route]]
prefix = ["+8190", "8170"]
connectors = ["b", "a"]

[[route]]
sender = "BANK"
connectors = ["c"]
"""


def message(recipient: str = "+818012345678", account: str = "AC9", sender: str = "X", *tags: str) -> Routed:
    return Routed(recipient, account, sender, tags)


def test_first_match_wins_and_a_rule_needs_all_its_criteria() -> None:
    table = parse_rules(RULES, CONNECTORS)
    assert table.connectors_for(message()) == ("a",)  # nothing matches: the first connector
    assert table.connectors_for(message("+819012345678")) == ("b", "a")
    assert table.connectors_for(message("+817012345678")) == ("b", "a")  # + is optional in a prefix
    assert table.connectors_for(message(sender="BANK")) == ("c",)
    assert table.connectors_for(message(sender="bank")) == ("a",)  # exactly
    # The account's OTP messages go to c, whatever their destination; its others do not.
    assert table.connectors_for(message("+819012345678", "AC1", "X", "otp")) == ("c", "a")
    assert table.connectors_for(message("+819012345678", "AC1", "X", "news", "2fa")) == ("c", "a")
    assert table.connectors_for(message("+819012345678", "AC1", "X", "news")) == ("b", "a")
    assert table.connectors_for(message("+819012345678", "AC2", "X", "otp")) == ("b", "a")


def test_a_rule_without_criteria_matches_everything_and_no_rules_means_the_first_connector() -> None:
    table = parse_rules('[[route]]\nconnectors = ["b", "c"]\n', CONNECTORS)
    assert table.connectors_for(message()) == ("b", "c")
    assert parse_rules("", CONNECTORS).connectors_for(message()) == ("a",)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            RULES.replace('connectors = ["c"]', 'connectors = ["c", "d"]'),
            "route 3 (line 13): unknown connector 'd'",
        ),
        (
            RULES.replace('name = "otp"', 'name = "otp"\nsenders = "X"'),
            "route 1 (line 3) 'otp': unknown key 'senders'",
        ),
        ('[[route]]\nprefix = "+81"\n', "route 1 (line 1): connectors is required"),
        (
            '[[route]]\nprefix = "+81-90"\nconnectors = ["a"]\n',
            "route 1 (line 1): prefix '+81-90' is not digits",
        ),
        ('[[route]]\nconnectors = ["a", "a"]\n', "route 1 (line 1): a connector is listed twice"),
        ("[[route]]\nconnectors = []\n", "route 1 (line 1): connectors is required"),
        ('[[route]]\ntag = 5\nconnectors = ["a"]\n', "route 1 (line 1): tag must be a non-empty string"),
        ('[[route]]\nconnectors = ["a"]\n[[route]\n', "not valid TOML: "),
        ('[routes]\nconnectors = ["a"]\n', "unknown top-level key 'routes'"),
    ],
)
def test_a_bad_rules_file_names_the_rule_and_its_line(text: str, error: str) -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules(text, CONNECTORS)
    assert str(caught.value).startswith(error), str(caught.value)


async def test_the_file_is_reloaded_when_it_changes_and_a_bad_version_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "gateway.routing.source")
    path = tmp_path / "routes.toml"
    path.write_text('[[route]]\nprefix = "+8190"\nconnectors = ["b"]\n')
    routes = RouteFile(str(path), CONNECTORS)
    routes.load()
    docomo = message("+819012345678")
    assert routes.table.connectors_for(docomo) == ("b",)

    path.write_text('[[route]]\nprefix = "+8190"\nconnectors = ["c", "b"]\n')
    await routes.check()
    assert routes.table.connectors_for(docomo) == ("c", "b")
    assert "routing rules reloaded" in caplog.text

    caplog.clear()
    path.write_text('[[route]]\nprefix = "+8190"\nconnectors = ["c", "b"]\n\n[[route]]\nconnectors = ["x"]\n')
    await routes.check()
    await routes.check()  # the same bad content is reported once
    assert routes.table.connectors_for(docomo) == ("c", "b")  # the rules in force stay
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "route 2 (line 5): unknown connector 'x'" in errors[0], errors

    path.unlink()
    await routes.check()
    assert routes.table.connectors_for(docomo) == ("c", "b")
    assert "unreadable" in caplog.text


def test_a_missing_or_bad_file_at_start_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read"):
        RouteFile(str(tmp_path / "nope.toml"), CONNECTORS).load()
    bad = tmp_path / "bad.toml"
    bad.write_text('[[route]]\nconnectors = ["zz"]\n')
    with pytest.raises(RulesError, match=r"route 1 \(line 1\): unknown connector 'zz'"):
        RouteFile(str(bad), CONNECTORS).load()
    assert RouteFile("", CONNECTORS).load().connectors_for(message()) == ("a",)
