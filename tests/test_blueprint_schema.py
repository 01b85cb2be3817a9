"""Unit tests of blueprint_schema: the model, legacy normalisation, YAML, samples and generation."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from blueprint_schema import BlueprintError, load_file, load_mapping
from blueprint_schema.generate import project_files
from blueprint_schema.samples import field_samples, store_samples
from blueprint_schema.service_modules import field_types

TEMPLATE_DIR = Path(__file__).resolve().parents[1]
EXAMPLES = TEMPLATE_DIR / "examples"
SEED = EXAMPLES / "legacy" / "phase8_test_system_blueprint.yaml"
ALL_OPERATIONS = ["list", "get", "create", "update", "delete"]
DEFAULT_POOL = {"min_size": 2, "max_size": 10}


def endpoint(path: str, store: str, **settings: object) -> dict:
    """An endpoint of the model with the defaults a blueprint may leave out."""
    defaults = {
        "description": "",
        "path": path,
        "store": store,
        "operations": ALL_OPERATIONS,
        "page_size": 50,
        "max_page_size": 500,
        "auth": "none",
        "cors_origins": [],
    }
    return {**defaults, **settings}


def minimal(**endpoint_config: object) -> dict:
    """A current-format blueprint of one store and one endpoint, as data."""
    return {
        "schema_version": 1,
        "system": {"name": "tiny"},
        "components": [
            {"name": "items", "type": "store"},
            {"name": "items_api", "type": "api_endpoint", "config": endpoint_config},
        ],
    }


def at(text: str, line: int, fragment: str) -> tuple[int, int]:
    """Line and column (1-based) of fragment on the given line of text."""
    return line, text.splitlines()[line - 1].index(fragment) + 1


def write(tmp_path: Path, text: str) -> Path:
    """Write text as the blueprint file of a test."""
    path = tmp_path / "blueprint.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# The valid examples and the defaults


def test_order_service_example_model():
    """examples/order_service.yaml gives exactly this model, without warnings."""
    blueprint = load_file(EXAMPLES / "order_service.yaml")
    assert blueprint.warnings == []
    assert blueprint.name == "order_service"
    assert blueprint.model == {
        "system": {"name": "order_service", "description": "Orders API", "version": "1.0.0"},
        "stores": {
            "orders": {
                "description": "Customer orders",
                "table": "orders",
                "fields": {
                    "customer": {"type": "string", "required": True, "max_length": 120},
                    "total": {"type": "number", "minimum": 0},
                    "status": {
                        "type": "string",
                        "enum": ["new", "paid", "shipped"],
                        "default": "new",
                    },
                    "email": {"type": "string", "pattern": "^[^@]+@[^@]+$", "unique": True},
                    "paid_at": {"type": "datetime"},
                },
                "pool": {"min_size": 4, "max_size": 8},
            }
        },
        "endpoints": {
            "orders_api": endpoint("/orders", "orders", description="Public order API"),
        },
    }


def test_library_example_model():
    """examples/library.yaml: bound and named stores, default path and table."""
    model = load_file(EXAMPLES / "library.yaml").model
    assert model["system"]["version"] == "2.3.0"
    assert model["system"]["description"] == 'Books, members and loans: the "everything" example'
    books, notes = model["stores"]["books"], model["stores"]["notes"]
    assert books["table"] == "books" and books["pool"] == DEFAULT_POOL
    assert sorted({spec["type"] for spec in books["fields"].values()}) == [
        "boolean", "date", "datetime", "decimal", "email", "integer", "json", "number", "string",
        "text", "uuid",
    ]  # fmt: skip
    assert notes == {
        "description": "Free-form notes, stored as JSON documents",
        "table": "user",
        "fields": None,
        "pool": DEFAULT_POOL,
    }
    assert model["endpoints"] == {
        "books_api": endpoint(
            "/v1/books",
            "books",  # from the binding
            description="Catalogue administration (needs an API key)",
            auth="api_key",
            page_size=20,
            max_page_size=100,
            cors_origins=["https://library.example.org"],
        ),
        "catalogue": endpoint(
            "/v1/catalogue",
            "books",
            description="Public, read-only catalogue",
            operations=["list", "get"],
        ),
        "notes_api": endpoint("/notes_api", "notes"),
    }


def test_defaults_of_a_minimal_mapping():
    """load_mapping takes a dict; everything left out gets its default."""
    blueprint = load_mapping(minimal(store="items"))
    assert blueprint.warnings == []
    assert blueprint.model == {
        "system": {"name": "tiny", "description": "", "version": "0.1.0"},
        "stores": {
            "items": {"description": "", "table": "items", "fields": None, "pool": DEFAULT_POOL}
        },
        "endpoints": {"items_api": endpoint("/items_api", "items")},
    }


def test_operations_keep_their_canonical_order():
    """Operations come out in list, get, create, update, delete order."""
    model = load_mapping(minimal(store="items", operations=["delete", "list"])).model
    assert model["endpoints"]["items_api"]["operations"] == ["list", "delete"]


def test_max_page_size_follows_a_large_page_size():
    """Without max_page_size, a page_size above 500 raises the maximum."""
    model = load_mapping(minimal(store="items", page_size=800)).model
    assert model["endpoints"]["items_api"]["page_size"] == 800
    assert model["endpoints"]["items_api"]["max_page_size"] == 800


def test_load_mapping_errors_name_the_source():
    """Errors of a mapping name its source instead of a file."""
    with pytest.raises(BlueprintError) as caught:
        load_mapping(minimal(store="itmes"), source="_blueprint")
    [error] = caught.value.errors
    assert (error.file, error.path) == ("_blueprint", "components[1].config.store")
    assert "did you mean 'items'?" in error.message


def test_load_mapping_refuses_what_is_not_a_mapping():
    """A list is refused with a message, not an exception."""
    with pytest.raises(BlueprintError) as caught:
        load_mapping(["system", "components"])
    assert "this one is a list" in caught.value.errors[0].message


# The legacy format


@pytest.fixture(scope="module")
def seed():
    """The legacy seed blueprint, loaded once."""
    return load_file(SEED)


def test_seed_blueprint_is_found():
    """The seed is kept in the repository: a clone needs nothing beside it."""
    assert SEED.is_file(), f"the seed blueprint is expected at {SEED}"


def test_legacy_seed_normalises(seed):
    """Types, the binding and pool_size of the legacy seed carry over."""
    model = seed.model
    assert model["system"] == {
        "name": "phase8_test_api",
        "description": "Test API system for Phase 8 production-ready generation validation",
        "version": "1.0.0",
    }
    assert model["stores"] == {
        "test_store": {
            "description": "V5 enhanced test data store",
            "table": "test_store",
            "fields": None,
            "pool": {"min_size": 2, "max_size": 20},  # from database.pool_size
        }
    }
    # The endpoint names no store: `test_api.output -> test_store.input` binds it.
    assert model["endpoints"] == {
        "test_api": endpoint(
            "/test_api", "test_store", description="Production test API endpoint", auth="none"
        )
    }


def test_legacy_seed_warns_about_every_ineffective_key(seed):
    """One warning per ineffective key, located on that key."""
    lines = SEED.read_text(encoding="utf-8").splitlines()
    keys = Counter()
    for warning in seed.warnings:
        key = warning.path.rsplit(".", 1)[-1]
        keys[key] += 1
        source = lines[warning.line - 1]
        assert source.lstrip(" -").startswith(f"{key}:"), f"{warning} points at {source!r}"
        assert warning.column == source.index(key) + 1, str(warning)
        assert str(warning).startswith(f"{SEED}:{warning.line}:{warning.column}: ")
    assert keys == {
        "inputs": 2,
        "outputs": 2,
        "port": 1,
        "host": 1,
        "rate_limiting": 1,
        "storage_type": 1,
        "testing_mode": 1,
        "schema_validation": 1,
        "type": 1,  # database.type
        "connection_string": 1,
        "environment": 1,  # the root `configuration` keys
        "timeouts": 1,
    }
    for warning in seed.warnings:
        if warning.path.endswith("connection_string"):
            assert "credential" in warning.message and "DATABASE_URL" in warning.message
        else:
            assert "has no effect" in warning.message, str(warning)


def test_legacy_seed_password_goes_nowhere(seed):
    """The connection string's password is in no model, warning or file."""
    assert "test123" not in json.dumps(seed.model)
    assert not any("test123" in str(warning) for warning in seed.warnings)
    for name, text in project_files(seed).items():
        assert "test123" not in text, name


def test_legacy_string_binding():
    """The legacy string form `a.output -> b.input` binds an endpoint to a store."""
    blueprint = load_mapping(
        {
            "system": {
                "name": "legacy",
                "components": [
                    {"name": "items_api", "type": "APIEndpoint"},
                    {"name": "items", "type": "Store", "configuration": {"pool_size": 5}},
                ],
                "bindings": ["items_api.output -> items.input"],
            }
        }
    )
    assert blueprint.model["endpoints"]["items_api"]["store"] == "items"
    assert blueprint.model["stores"]["items"]["pool"] == {"min_size": 2, "max_size": 5}


def test_legacy_auth_required_means_api_key():
    """Legacy auth_required: true becomes auth: api_key."""
    blueprint = load_mapping(
        {
            "system": {
                "name": "legacy",
                "components": [
                    {"name": "a", "type": "APIEndpoint", "configuration": {"auth_required": True}},
                    {"name": "b", "type": "Store"},
                ],
                "bindings": [{"from": "a.output", "to": "b.input"}],
            }
        }
    )
    assert blueprint.model["endpoints"]["a"]["auth"] == "api_key"


# YAML anchors, aliases and merge keys

ANCHORS = """\
schema_version: 1
system:
  name: shop
components:
  - name: orders
    type: store
    config:
      fields:
        customer: &text {type: string, max_length: 80}
        notes: *text
        status:
          <<: *text
          enum: [new, paid]
  - name: orders_api
    type: api_endpoint
    config: &api
      store: orders
      page_size: 20
  - name: orders_admin
    type: api_endpoint
    config:
      page_size: 10
      <<: *api
      path: /admin/orders
      auth: api_key
"""


def test_anchors_aliases_and_merge_keys(tmp_path):
    """Aliases copy values; `<<` merges a mapping under explicit keys."""
    model = load_file(write(tmp_path, ANCHORS)).model
    fields = model["stores"]["orders"]["fields"]
    assert fields["customer"] == fields["notes"] == {"type": "string", "max_length": 80}
    assert fields["status"] == {"type": "string", "max_length": 80, "enum": ["new", "paid"]}
    assert model["endpoints"]["orders_api"] == endpoint("/orders_api", "orders", page_size=20)
    # Keys written beside `<<` win over the merged ones, whatever their order.
    assert model["endpoints"]["orders_admin"] == endpoint(
        "/admin/orders", "orders", page_size=10, auth="api_key"
    )


ANCHOR_ERRORS = """\
schema_version: 1
system:
  name: shop
components:
  - name: orders
    type: store
    config:
      fields:
        code: &code {type: integer, max_length: 3}
        other_code: *code
  - name: orders_api
    type: api_endpoint
    config: &api {store: orders, page_size: 900, max_page_size: 100}
  - name: orders_admin
    type: api_endpoint
    config:
      <<: *api
      path: /admin
      page_size: 10
"""


def test_errors_through_anchors_point_at_their_place(tmp_path):
    """An error in an anchored value is reported where it is written and where it is reused."""
    path = write(tmp_path, ANCHOR_ERRORS)
    with pytest.raises(BlueprintError) as caught:
        load_file(path)
    reported = [(error.path, (error.line, error.column)) for error in caught.value.errors]
    assert reported == [
        ("components[0].config.fields.code.max_length", at(ANCHOR_ERRORS, 9, "max_length")),
        ("components[0].config.fields.other_code.max_length", at(ANCHOR_ERRORS, 10, "*code")),
        ("components[1].config.page_size", at(ANCHOR_ERRORS, 13, "900")),
    ]
    assert "does not apply" in caught.value.errors[0].message
    assert "page_size 900 is above max_page_size 100" in caught.value.errors[2].message


def test_duplicate_key_after_merge_is_an_error(tmp_path):
    """A key given twice beside `<<` is still a duplicate."""
    text = ANCHORS.replace("      auth: api_key\n", "      auth: api_key\n      auth: none\n")
    with pytest.raises(BlueprintError) as caught:
        load_file(write(tmp_path, text))
    [error] = caught.value.errors
    assert (error.path, error.line) == ("components[2].config.auth", 26)
    assert "duplicate key 'auth'" in error.message


def test_error_positions_in_a_plain_file(tmp_path):
    """Errors point at the offending key or value."""
    text = (EXAMPLES / "order_service.yaml").read_text(encoding="utf-8")
    text = text.replace("page_size: 50", "page_size: 0").replace("max_length: 120", "max_len: 120")
    with pytest.raises(BlueprintError) as caught:
        load_file(write(tmp_path, text))
    reported = [(error.path, (error.line, error.column)) for error in caught.value.errors]
    assert reported == [
        ("components[0].config.fields.customer.max_len", at(text, 14, "max_len")),
        ("components[1].config.page_size", at(text, 27, "0")),
    ]
    assert "unknown key 'max_len' (did you mean 'max_length'?)" in caught.value.errors[0].message


def test_byte_order_mark_is_accepted(tmp_path):
    """A UTF-8 byte order mark is skipped."""
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + (EXAMPLES / "order_service.yaml").read_bytes())
    assert load_file(path).name == "order_service"


# Sample records of the generated tests

FIELDS = {
    "name": {"type": "string", "required": True, "min_length": 3, "max_length": 12},
    "body": {"type": "text", "max_length": 40},
    "count": {"type": "integer", "minimum": -5, "maximum": 5},
    "ratio": {"type": "number", "minimum": 0.25, "maximum": 0.75},
    "active": {"type": "boolean", "required": True},
    "born": {"type": "date"},
    "seen_at": {"type": "datetime", "required": True},
    "ref": {"type": "uuid", "unique": True},
    "extra": {"type": "json"},
    "status": {"type": "string", "enum": ["new", "paid", "shipped"], "default": "new"},
    "level": {"type": "integer", "enum": [1, 2, 3]},
    "isbn": {"type": "string", "pattern": "^97[89][0-9]{10}$", "unique": True},
    "code": {"type": "string", "pattern": r"^[A-Z]{3}-\d{4}$", "required": True},
    "colour": {"type": "text", "pattern": "^(red|green|blue)$"},
    "email": {"type": "string", "pattern": r"^[^@\s]+@[a-z]+\.(com|org)$", "max_length": 30},
    "sku": {"type": "string", "pattern": "[a-z]+_[0-9]+"},  # unanchored
}


def test_samples_of_every_field_type_validate():
    """Sample records of every field type are valid store input."""
    records, missing = store_samples(FIELDS)
    assert missing == []
    assert len(records) == 3
    validator = field_types.value_validator(field_types.store_schemas(FIELDS)["input"])
    for record in records:
        errors = [error.message for error in validator.iter_errors(record)]
        assert errors == [], record
        assert set(record) == set(FIELDS)
    for name, spec in FIELDS.items():
        if spec.get("unique"):
            assert len({json.dumps(record[name]) for record in records}) == 3, name


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_field_samples_are_distinct_and_valid(name):
    """Each field's samples differ and pass its input schema."""
    spec = FIELDS[name]
    values = field_samples(name, spec)
    assert values, name
    assert len({json.dumps(value) for value in values}) == len(values)
    schema = field_types.store_schemas({name: spec})["input"]
    for value in values:
        assert field_types.value_validator(schema).is_valid({name: value}), value


def test_samples_are_deterministic():
    """The same fields give the same samples."""
    assert store_samples(FIELDS) == store_samples(FIELDS)


def test_schemaless_store_samples_validate():
    """Samples of a store without fields are valid JSON documents."""
    records, missing = store_samples(None)
    assert missing == [] and records
    for record in records:
        assert field_types.value_validator(field_types.store_schemas(None)["input"]).is_valid(
            record
        ), record


def test_example_is_used_first():
    """A field's example is its first sample, even for patterns not sampled."""
    spec = {"type": "string", "pattern": "^(?=.*[0-9])[a-z0-9]{8}$", "example": "abc12345"}
    assert field_samples("code", spec)[0] == "abc12345"
    assert load_mapping(
        {
            "system": {"name": "tiny"},
            "components": [
                {"name": "items", "type": "store", "config": {"fields": {"code": spec}}},
                {"name": "items_api", "type": "api_endpoint", "config": {"store": "items"}},
            ],
        }
    ).model["stores"]["items"]["fields"] == {"code": spec}


# Generated files: blueprint text is data, never code

TRICKY = "Quotes \"\"\" and ''' , {{ x }} and {% raw %}, a back\\slash, naïve café ☕ — 東京"


@pytest.fixture(scope="module")
def tricky_files() -> dict[str, str]:
    """Project files of a blueprint whose descriptions hold quotes, Jinja and non-ASCII."""
    blueprint = load_mapping(
        {
            "schema_version": 1,
            "system": {"name": "tricky", "description": TRICKY},
            "components": [
                {
                    "name": "items",
                    "type": "store",
                    "description": TRICKY,
                    "config": {"fields": {"label": {"type": "string", "description": TRICKY}}},
                },
                {
                    "name": "items_api",
                    "type": "api_endpoint",
                    "description": TRICKY,
                    "config": {"store": "items"},
                },
            ],
        }
    )
    return project_files(blueprint)


def test_description_is_data_in_yaml_files(tricky_files):
    """Descriptions arrive verbatim in the generated YAML files."""
    config = yaml.safe_load(tricky_files["config/system_config.yaml"])
    assert config["system"]["description"] == TRICKY
    assert config["stores"]["items"]["fields"]["label"]["description"] == TRICKY
    written = yaml.safe_load(tricky_files["blueprint.yaml"])
    assert written["system"]["description"] == TRICKY
    assert [component["description"] for component in written["components"]] == [TRICKY] * 2
    assert load_mapping(written).model["system"]["description"] == TRICKY


def test_description_never_reaches_python_files(tricky_files):
    """No generated module holds description text; all compile."""
    python = {name: text for name, text in tricky_files.items() if name.endswith(".py")}
    assert python, "project_files wrote no Python module"
    for name, text in python.items():
        for fragment in (TRICKY, "{{ x }}", "{% raw %}", "back\\slash", "naïve", "東京"):
            assert fragment not in text, f"{fragment!r} in {name}"
        compile(text, name, "exec")


def test_soft_keywords_are_legal_names():
    document = minimal(store="match")
    document["components"][0]["name"] = "match"
    assert "match" in load_mapping(document).model["stores"]


def test_unquoted_dates_stay_text(tmp_path):
    text = (
        "system: {name: shop}\n"
        "components:\n"
        "  - name: events\n"
        "    type: store\n"
        "    config:\n"
        "      fields:\n"
        "        day: {type: date, default: 2024-01-01}\n"
    )
    model = load_file(write(tmp_path, text)).model
    assert model["stores"]["events"]["fields"]["day"]["default"] == "2024-01-01"


def test_shared_anchors_are_written_out_in_full(tmp_path):
    text = (
        "system: {name: shop}\n"
        "components:\n"
        "  - name: a\n"
        "    type: store\n"
        "    config: {fields: {code: &code {type: string, max_length: 8}, other: *code}}\n"
    )
    files = project_files(load_file(write(tmp_path, text)))
    for name in ("blueprint.yaml", "config/system_config.yaml"):
        assert "&id" not in files[name] and "*id" not in files[name]
        assert yaml.safe_load(files[name])


def test_string_bindings_in_the_current_format():
    document = minimal()
    document["bindings"] = ["items_api.output -> items.input"]
    assert load_mapping(document).model["endpoints"]["items_api"]["store"] == "items"


def test_all_digit_path_segments_are_refused():
    document = minimal(path="/items/5", store="items")
    with pytest.raises(BlueprintError) as caught:
        load_mapping(document)
    assert "all-digit segment" in str(caught.value)
