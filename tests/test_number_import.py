"""Number inventory CSV: validation of every row, all-or-nothing upserts, and the `gateway numbers`
command as a real process."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.db.engine import create_engine, session_factory
from gateway.services.accounts import AccountService
from gateway.services.number_import import COLUMNS, NumberImportError, NumberRow, parse_numbers_csv
from gateway.services.numbers import NumberService
from tests.test_cli_and_run import _sql, run_cli

HEADER = ",".join(COLUMNS)
GOOD = f"""{HEADER}
+81312345678,jp,813,true,yes,1000,0
+81312345679,JP,813,1,0,1000.5,0.25
+14155550100,US,1415,no,TRUE,2,0.0100
"""


def errors_of(text: str | bytes) -> list[str]:
    with pytest.raises(NumberImportError) as exc:
        parse_numbers_csv(text)
    return exc.value.errors


def test_parse_good_file() -> None:
    rows = parse_numbers_csv(GOOD)
    # The older form of prefix (the leading digits, country code included) is read as the
    # local area prefix after the country code.
    assert rows == [
        NumberRow(2, "+81312345678", "JP", "3", True, True, Decimal(1000), Decimal(0)),
        NumberRow(3, "+81312345679", "JP", "3", True, False, Decimal("1000.5"), Decimal("0.25")),
        NumberRow(4, "+14155550100", "US", "415", False, True, Decimal(2), Decimal("0.0100")),
    ]


@pytest.mark.parametrize(
    ("number", "prefix", "local"),
    [
        ("+81312345678", "", "3"),  # derived: Tokyo
        ("+815012345678", "", "50"),  # 050 IP phone
        ("+818012345678", "", "80"),  # mobile
        ("+81612345678", "", "6"),  # Osaka
        ("+14155550100", "", "415"),
        ("+442071838750", "", "20"),
        ("+815012345678", "50", "50"),  # the local form, as given
        ("+815012345678", "5", "5"),  # a shorter one the operator prefers
        ("+815012345678", "8150", "50"),  # the older form
        ("+815012345678", "81", "50"),  # only the country code: derived
    ],
)
def test_the_local_prefix_is_derived_or_read(number: str, prefix: str, local: str) -> None:
    (row,) = parse_numbers_csv(f"{HEADER}\n{number},JP,{prefix},true,true,1,1\n")
    assert row.prefix == local


def test_the_prefix_column_may_be_left_out() -> None:
    (row,) = parse_numbers_csv(
        "number,country_code,sms,voice,monthly_cost,minute_cost\n+815012345678,JP,1,1,1,1\n"
    )
    assert row.prefix == "50"


def test_parse_accepts_bom_blank_lines_spaces_and_any_column_order() -> None:
    text = (
        "\ufeffminute_cost, Number ,prefix,country_code,voice,sms,monthly_cost\r\n"
        "\r\n"
        "0.5, +81312345678 ,813,jp,no,yes,10\r\n"
    )
    (row,) = parse_numbers_csv(text.encode("utf-8"))
    assert row == NumberRow(3, "+81312345678", "JP", "3", True, False, Decimal(10), Decimal("0.5"))
    assert parse_numbers_csv(HEADER + "\n") == []


def test_every_bad_row_is_reported_with_its_line() -> None:
    errors = errors_of(
        f"{HEADER}\n"
        "+8108012345678,JPN,81x,maybe,yes,-1,abc\n"  # line 2: six problems
        "+81312345678,JP,814,true,true,1,0.12345\n"  # line 3: prefix mismatch, 5 decimals
        "\n"
        "+81312345678,JP,813,true,true,1,1\n"  # line 5: duplicate of line 3
        "81312345670,,813,true,true,,1\n"  # line 6: no +, two empty cells
        "+81312345671,JP,813,true\n"  # line 7: short row
        "+81312345672,JP,813,true,true,1e20,NaN\n"  # line 8: too large, not finite
    )
    assert errors == [
        "line 2: number: not a valid E.164 number (e.g. +81312345678) (got '+8108012345678')",
        "line 2: country_code: expected a 2-letter ISO country code, e.g. JP (got 'JPN')",
        "line 2: prefix: expected 1-16 digits, e.g. 813 (got '81x')",
        "line 2: sms: expected true/false, 1/0 or yes/no (got 'maybe')",
        "line 2: monthly_cost: must be >= 0 (got '-1')",
        "line 2: minute_cost: expected a decimal number, e.g. 1000 or 0.25 (got 'abc')",
        "line 3: minute_cost: at most 4 decimal places (got '0.12345')",
        "line 3: prefix: +81312345678 does not start with 814",
        "line 5: number: +81312345678 already on line 3",
        "line 6: number: not a valid E.164 number (e.g. +81312345678) (got '81312345670')",
        "line 6: country_code: required",
        "line 6: monthly_cost: required",
        "line 7: expected 7 columns, got 4",
        "line 8: monthly_cost: must be at most 9999999999.9999 (got '1e20')",
        "line 8: minute_cost: expected a decimal number, e.g. 1000 or 0.25 (got 'NaN')",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "line 1: empty file"),
        ("number,country_code,prefix,sms,voice,monthly_cost\n", "missing minute_cost"),
        ("number,country_code,sms,voice,monthly_cost\n", "missing minute_cost (expected"),
        (HEADER + ",notes\n", "unknown 'notes'"),
        (HEADER + ",sms\n", "repeated sms"),
        (b"\xff\xfe" + HEADER.encode("utf-16-le"), "not UTF-8"),
        (HEADER + '\n"+81312345678,JP,813,true,true,1,1\n', "malformed CSV"),
    ],
)
def test_bad_files(text: str | bytes, expected: str) -> None:
    errors = errors_of(text)
    assert len(errors) == 1 and expected in errors[0], errors


async def test_import_upserts_in_one_transaction(clean_db: str) -> None:
    engine = create_engine(clean_db)
    sessions = session_factory(engine)
    numbers, accounts = NumberService(sessions), AccountService(sessions)
    try:
        result = await numbers.import_numbers(parse_numbers_csv(GOOD))
        assert (result.created, result.updated) == (3, 0)
        before = {n["number"]: n for n in await numbers.list_inventory()}
        assert before["+81312345679"] == {
            "number": "+81312345679",
            "uid": before["+81312345679"]["uid"],
            "country_code": "JP",
            "prefix": "3",
            "sms": True,
            "voice": False,
            "monthly_cost": 1000.5,
            "minute_cost": 0.25,
            "sin_subscriber": None,
            "din_subscriber": None,
        }
        assert len({n["uid"] for n in before.values()}) == 3
        assert all(len(n["uid"]) == 32 for n in before.values())
        acct = await accounts.create("a")
        sub = await numbers.subscribe(acct.account.id, "sin", before["+81312345679"]["uid"])

        # Re-import: changed costs and capabilities, one new number; uids and subscriptions stay.
        again = f"""{HEADER}
+81312345679,JP,813,true,true,900,0.3
+81312345678,JP,813,false,true,1000,0
+81312345670,JP,813,true,false,5,0
"""
        result = await numbers.import_numbers(parse_numbers_csv(again))
        assert (result.created, result.updated) == (1, 2)
        after = {n["number"]: n for n in await numbers.list_inventory()}
        assert len(after) == 4
        for number in ("+81312345678", "+81312345679", "+14155550100"):
            assert after[number]["uid"] == before[number]["uid"]
        assert after["+81312345679"]["voice"] is True and after["+81312345679"]["monthly_cost"] == 900.0
        assert after["+81312345679"]["sin_subscriber"] == acct.account.sid
        assert after["+81312345678"]["sms"] is False
        assert await numbers.list_subscriptions(acct.account.id, "sin") == [
            {**sub, "monthly_cost": 900.0, "minute_cost": 0.3}
        ]

        # Removing SMS from a number someone holds as SIN refuses the whole file.
        drop = f"""{HEADER}
+81312345670,JP,813,true,true,7,7
+81312345679,JP,813,false,true,900,0.3
"""
        with pytest.raises(NumberImportError) as exc:
            await numbers.import_numbers(parse_numbers_csv(drop))
        assert exc.value.errors == [
            "line 3: sms: +81312345679 has a SIN subscription; unsubscribe it before removing SMS"
        ]
        assert {n["number"]: n for n in await numbers.list_inventory()} == after  # line 2 not applied
    finally:
        await engine.dispose()


async def test_numbers_cli(clean_db: str, tmp_path: Path) -> None:
    env = {"GATEWAY_DATABASE_URL": clean_db}
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text(GOOD)
    bad.write_text(GOOD + "+81312345678,JP,813,true,true,1,1\n+8131234567x,JP,813,true,true,1,1\n")

    code, out, err = await run_cli(env, "numbers", "import", str(bad))
    assert code == 1 and out == ""
    assert "line 5: number: +81312345678 already on line 2" in err
    assert "line 6: number: not a valid E.164 number" in err
    assert "2 error(s); nothing imported" in err
    assert await _sql(clean_db, "SELECT id FROM numbers") == []

    code, out, err = await run_cli(env, "numbers", "import", str(good))
    assert code == 0, err
    assert json.loads(out) == {"created": 3, "updated": 0}
    code, out, _ = await run_cli(env, "numbers", "list")
    listed = json.loads(out)
    assert [n["number"] for n in listed] == ["+14155550100", "+81312345678", "+81312345679"]
    uids = {n["number"]: n["uid"] for n in listed}

    good.write_text(GOOD.replace("1000.5,0.25", "1200,0.5"))
    code, out, err = await run_cli(env, "numbers", "import", str(good))
    assert code == 0, err
    assert json.loads(out) == {"created": 0, "updated": 3}
    code, out, _ = await run_cli(env, "numbers", "list", "--country", "jp", "--prefix", "813")
    listed = json.loads(out)
    assert [n["number"] for n in listed] == ["+81312345678", "+81312345679"]
    assert {n["number"]: n["uid"] for n in listed} == {k: v for k, v in uids.items() if k.startswith("+81")}
    assert listed[1]["monthly_cost"] == 1200.0 and listed[1]["minute_cost"] == 0.5
    code, out, _ = await run_cli(env, "numbers", "list", "--prefix", "1")
    assert [n["number"] for n in json.loads(out)] == ["+14155550100"]

    code, _, err = await run_cli(env, "numbers", "list", "--country", "JPN")
    assert code == 1 and "country" in err
    code, _, err = await run_cli(env, "numbers", "import", str(tmp_path / "missing.csv"))
    assert code == 1 and "cannot read" in err
