"""The field-type registry ({{cookiecutter.system_name}}/app/field_types.py), which the generator
and the generated service share, and the types it proves it can take: decimal and email.

The registry is the service's own module, loaded by the generator from the template; these
tests read it the same way, then run a generated service on SQLite and PostgreSQL.
"""

from __future__ import annotations

from decimal import Decimal

import psycopg2
import pytest
from conftest import bake

from blueprint_schema.samples import field_samples
from blueprint_schema.service_modules import SERVICE_APP_DIR, field_types
from service_validator.server import GunicornServer, http

# One spec per type, with the options that shape it.
SPECS = {
    "string": {"type": "string", "max_length": 20},
    "text": {"type": "text"},
    "integer": {"type": "integer", "minimum": 1, "maximum": 9},
    "number": {"type": "number", "minimum": 0},
    "decimal": {"type": "decimal", "precision": 6, "scale": 2, "minimum": 0},
    "boolean": {"type": "boolean"},
    "date": {"type": "date"},
    "datetime": {"type": "datetime"},
    "uuid": {"type": "uuid"},
    "email": {"type": "email"},
    "json": {"type": "json"},
}


def test_the_generator_uses_the_service_module_itself():
    """One home: blueprint_schema loads the template's app/field_types.py, not a copy."""
    assert field_types.__file__ == str(SERVICE_APP_DIR / "field_types.py")
    assert sorted(SPECS) == sorted(field_types.TYPES)


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_every_type_is_declared_whole(kind):
    """Both dialects have a column type; samples pass the type's own checks."""
    spec = SPECS[kind]
    declared = field_types.TYPES[kind]
    for dialect in ("postgresql", "sqlite"):
        assert declared.sql[dialect](spec)
    samples = field_samples("f", spec)
    assert len(samples) == (2 if kind == "boolean" else 3), samples  # distinct values
    problems = field_types.value_problems(spec)
    assert all(problems(value) == [] for value in samples), samples


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("0", True),
        ("19.99", True),
        ("-1234.5", True),
        ("9999.99", True),
        ("10000", False),  # 5 digits before the point: precision 6 - scale 2 = 4
        ("1.999", False),  # 3 after it: never rounded, refused
        ("1e3", False),
        ("NaN", False),
        (" 1", False),
        (19.99, False),  # a JSON number would have passed through a float
    ],
)
def test_decimal_values_fit_precision_and_scale_exactly(value, valid):
    spec = {"type": "decimal", "precision": 6, "scale": 2}
    assert (field_types.value_problems(spec)(value) == []) is valid


def test_decimal_range_and_enum_compare_exactly():
    spec = {"type": "decimal", "scale": 2, "minimum": 0.1, "maximum": 5, "enum": ["0.10", "5"]}
    problems = field_types.value_problems(spec)
    assert problems("0.1") == [] and problems("5.00") == [] and problems("0.10") == []
    assert "less than the minimum" in problems("0.09")[0]
    assert "not one of" in problems("1")[0]
    assert "greater than the maximum" in problems("5.01")[0]


def test_decimal_text_is_canonical():
    assert field_types.decimal_text("19.9", 2) == "19.90"
    assert field_types.decimal_text(Decimal("-0"), 2) == "0.00"
    assert field_types.decimal_text("0.00000001", 8) == "0.00000001"  # no exponent form
    assert field_types.decimal_text("12345678901234567.89", 2) == "12345678901234567.89"


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("ada@example.org", True),
        ("first.last+tag@mail.example.co.uk", True),
        ("o'brien@example.ie", True),
        ("ada at example.org", False),
        ("ada@", False),
        ("@example.org", False),
        ("ada@example", False),
        ("ada..b@example.org", False),
        ("ada@-example.org", False),
        ("a" * 65 + "@example.org", False),  # the local part has at most 64 characters
        ("a@" + "b" * 250 + ".org", False),  # an address has at most 254
    ],
)
def test_email_format(value, valid):
    assert (field_types.value_problems({"type": "email"})(value) == []) is valid


BLUEPRINT = {
    "system": {"name": "ledger"},
    "components": [
        {
            "name": "payments",
            "type": "store",
            "config": {
                "fields": {
                    "amount": {
                        "type": "decimal",
                        "precision": 12,
                        "scale": 4,
                        "minimum": -1000000,
                        "maximum": 99999999,
                        "required": True,
                    },
                    "payer": {"type": "email", "unique": True},
                }
            },
        },
        {
            "name": "payments_api",
            "type": "api_endpoint",
            "config": {"store": "payments", "path": "/payments"},
        },
    ],
}
# Values a float would change: 0.1 + 0.2, the largest amounts, many digits after the point.
AMOUNTS = ["0.1", "0.2", "0.3", "9999999.9999", "-999999.9999", "12345678.1234", "0.0001"]


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):
    return bake(tmp_path_factory.mktemp("bake"), _blueprint=BLUEPRINT)


def exercise_decimal_and_email(url: str) -> None:
    created = []
    for index, amount in enumerate(AMOUNTS):
        response = http("POST", f"{url}/payments", {"amount": amount, "payer": f"p{index}@ex.org"})
        assert response.status == 201, response.body
        created.append(response.json())
    # Stored and served exactly, with the scale's 4 digits.
    expected = [field_types.decimal_text(amount, 4) for amount in AMOUNTS]
    assert [record["amount"] for record in created] == expected
    listed = http("GET", f"{url}/payments?limit=100").json()["items"]
    assert [record["amount"] for record in listed] == expected
    assert sum(Decimal(record["amount"]) for record in listed) == sum(map(Decimal, AMOUNTS))

    # Filters compare exactly: 0.30 finds 0.3 and only it (0.1 + 0.2 as floats would not).
    found = http("GET", f"{url}/payments?amount=0.30").json()["items"]
    assert [record["id"] for record in found] == [created[2]["id"]]
    assert http("GET", f"{url}/payments?amount=0.3001").json()["items"] == []
    assert http("GET", f"{url}/payments?amount=lots").status == 400
    by_payer = http("GET", f"{url}/payments?payer=p1@ex.org").json()["items"]
    assert [record["id"] for record in by_payer] == [created[1]["id"]]

    refused = {
        "a float": {"amount": 0.5},
        "too many digits after the point": {"amount": "0.00001"},
        "above the maximum": {"amount": "99999999.0001"},
        "not an address": {"amount": "1", "payer": "nobody"},
    }
    for reason, body in refused.items():
        response = http("POST", f"{url}/payments", body)
        assert response.status == 422, reason
    taken = http("POST", f"{url}/payments", {"amount": "1", "payer": "p0@ex.org"})
    assert taken.status == 409
    patched = http("PATCH", f"{url}/payments/{created[0]['id']}", {"amount": "-0.00"})
    assert patched.status == 200 and patched.json()["amount"] == "0.0000"

    document = http("GET", f"{url}/openapi.json").json()
    schema = document["components"]["schemas"]["payments"]["properties"]
    assert schema["amount"]["type"] == "string" and schema["amount"]["format"] == "decimal"
    assert schema["payer"]["type"] == ["string", "null"] and schema["payer"]["format"] == "email"


def test_decimal_and_email_on_sqlite(ledger, tmp_path):
    with GunicornServer(ledger, tmp_path) as server:
        exercise_decimal_and_email(server.url)
    import sqlite3

    connection = sqlite3.connect(tmp_path / "data" / "ledger.sqlite3")
    stored = [row[0] for row in connection.execute("SELECT amount FROM payments ORDER BY id")]
    connection.close()
    assert stored[1:] == [field_types.decimal_text(amount, 4) for amount in AMOUNTS[1:]]


def test_decimal_and_email_on_postgresql(ledger, tmp_path, postgres_database):
    with GunicornServer(ledger, tmp_path, {"DATABASE_URL": postgres_database}) as server:
        exercise_decimal_and_email(server.url)
    connection = psycopg2.connect(postgres_database)
    with connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT data_type, numeric_precision, numeric_scale FROM information_schema.columns "
            "WHERE table_name = 'payments' AND column_name = 'amount'"
        )
        assert cursor.fetchone() == ("numeric", 12, 4)
        cursor.execute("SELECT sum(amount) FROM payments WHERE id > 1")
        assert cursor.fetchone()[0] == sum(map(Decimal, AMOUNTS[1:]))
    connection.close()
