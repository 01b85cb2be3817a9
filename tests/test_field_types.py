"""The field-type registry ({{cookiecutter.system_name}}/app/field_types.py), which the generator
and the generated service share, and the types it proves it can take: decimal and email.

The registry is the service's own module, loaded by the generator from the template; these
tests read it the same way, then run a generated service on SQLite and PostgreSQL.
"""

from __future__ import annotations

import random
import re
from decimal import Decimal
from pathlib import Path

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
        ("-0", False),  # zero has no sign
        (" 1", False),
        (19.99, False),  # a JSON number would have passed through a float
    ],
)
def test_decimal_values_fit_precision_and_scale_exactly(value, valid):
    spec = {"type": "decimal", "precision": 6, "scale": 2}
    assert (field_types.value_problems(spec)(value) == []) is valid


def test_decimal_range_and_enum_compare_exactly():
    def valid(spec: dict, value: str) -> bool:
        return field_types.value_problems({"type": "decimal", "scale": 2, **spec})(value) == []

    bounded = {"minimum": 0.1, "maximum": 5}
    assert [valid(bounded, v) for v in ("0.1", "0.10", "5", "5.00", "2.5")] == [True] * 5
    assert [valid(bounded, v) for v in ("0.09", "5.01", "-1", "0")] == [False] * 4
    listed = {"enum": ["0.10", "5"]}
    assert [valid(listed, v) for v in ("0.1", "0.10", "5", "5.0", "5.00")] == [True] * 5
    assert [valid(listed, v) for v in ("1", "0.11", "5.001", "-5")] == [False] * 4


def _texts(precision: int, scale: int, rng: random.Random) -> list[str]:
    """Decimal-looking texts, within the precision and a digit beyond it, either sign."""
    texts = []
    for _ in range(60):
        whole = rng.randint(0, precision - scale + 1)
        digits = "".join(rng.choice("0123456789") for _ in range(max(whole - 1, 0)))
        integer = (str(rng.randint(1, 9)) + digits) if whole else "0"
        fraction = "".join(rng.choice("0123456789") for _ in range(rng.randint(0, scale + 1)))
        sign = "-" if rng.random() < 0.4 else ""
        texts.append(sign + integer + (f".{fraction}" if fraction else ""))
    return texts


def test_decimal_pattern_accepts_exactly_the_allowed_values():
    """The pattern does JSON Schema's job of comparing numbers written as strings: checked
    against Decimal arithmetic on 24,000 texts of 400 random fields (seeded)."""
    rng = random.Random(20261201)
    for _ in range(400):
        precision = rng.randint(1, 9)
        scale = rng.randint(0, precision)
        whole = precision - scale
        spec = {"type": "decimal", "precision": precision, "scale": scale}
        step = Decimal(1).scaleb(-rng.randint(0, scale + 1))
        for bound in ("minimum", "maximum"):
            if rng.random() < 0.7:
                low = spec.get("minimum", -(10**whole))
                spec[bound] = float(Decimal(rng.uniform(low, 10**whole)).quantize(step))
        valid = field_types.value_problems(spec)
        for text in _texts(precision, scale, rng):
            value = Decimal(text)
            integer, _, fraction = text.lstrip("-").partition(".")
            fits = (
                len(integer) <= max(whole, 1)
                and (whole > 0 or integer == "0")
                and len(fraction) <= scale
                and not (text.startswith("-") and value == 0)  # zero has no sign
            )
            within = ("minimum" not in spec or value >= Decimal(str(spec["minimum"]))) and (
                "maximum" not in spec or value <= Decimal(str(spec["maximum"]))
            )
            assert (valid(text) == []) is (fits and within), (spec, text)


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
    patched = http("PATCH", f"{url}/payments/{created[0]['id']}", {"amount": "0"})
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


def test_readme_lists_every_field_type():
    """The README's table of field types names each type of the registry, and no other."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    table = readme.split("| field type | JSON | PostgreSQL | SQLite |", 1)[1].split("\n\n", 1)[0]
    listed = re.findall(
        r"`([a-z]+)`", "\n".join(line.split("|")[1] for line in table.splitlines()[2:])
    )
    assert sorted(listed) == sorted(field_types.TYPES)


def test_the_complete_blueprint_schema_names_every_field_type(tmp_path):
    """`python -m blueprint_schema schema` (and each project's blueprint.schema.json) is the
    base schema completed from the registry: an editor then knows decimal and its options."""
    import json
    import subprocess
    import sys

    import jsonschema
    import yaml

    result = subprocess.run(
        [sys.executable, "-m", "blueprint_schema", "schema"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    schema = json.loads(result.stdout)
    field = schema["$defs"]["field"]["properties"]
    assert field["type"]["enum"] == list(field_types.TYPES)
    assert {"precision", "scale"} <= set(field)
    validator = jsonschema.Draft202012Validator(schema)
    library = Path(__file__).resolve().parents[1] / "examples" / "library.yaml"
    document = yaml.safe_load(library.read_text(encoding="utf-8"))
    assert list(validator.iter_errors(document)) == []
    books = document["components"][0]["config"]["fields"]
    books["deposit"]["type"] = "money"
    assert [error.validator for error in validator.iter_errors(document)] == ["enum"]


def test_a_long_value_keeps_the_reason_in_the_message():
    """The validator's message starts with the value: a long one is cut, not the reason."""
    message = field_types.value_problems({"type": "string", "max_length": 80})("a" * 4000)[0]
    assert len(message) <= 200 and message.endswith("is longer than 80 characters"), message
    assert field_types.value_problems({"type": "email"})("a" * 255) == [
        "must be an email address such as name@example.org, at most 254 characters"
    ]
    assert field_types.value_problems({"type": "decimal", "scale": 2})(19.9) == [
        'must be a decimal number written as a string ("19.90"), with at most 16 digits '
        "before the point and 2 after it"
    ]
