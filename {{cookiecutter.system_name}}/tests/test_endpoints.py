"""Each API endpoint: CRUD round trip, pagination, validation errors, auth, problem details."""

from __future__ import annotations

import pytest

from app.stores import STORES
from helpers import ENDPOINTS
from helpers import SAMPLES
from helpers import SETTINGS
from helpers import endpoint
from helpers import same_values

PROBLEM_JSON = "application/problem+json"
STORES_BY_NAME = {store.name: store for store in STORES}


@pytest.fixture
def headers(auth_headers):
    def for_endpoint(name: str) -> dict:
        return auth_headers if endpoint(name).auth == "api_key" else {}

    return for_endpoint


def _seed(client, name: str, record: dict, headers: dict) -> dict:
    """A stored record: through the API when it can create, else through the store."""
    settings = endpoint(name)
    if "create" in settings.operations:
        response = client.post(settings.path, json=record, headers=headers)
        assert response.status_code == 201, response.get_json()
        assert response.headers["Location"] == f"{settings.path}/{response.get_json()['id']}"
        return response.get_json()
    return STORES_BY_NAME[settings.store].create(record)


@pytest.mark.parametrize("name", ENDPOINTS)
def test_crud_round_trip(client, headers, name):
    settings = endpoint(name)
    auth = headers(name)
    first, *others = SAMPLES[settings.store]
    created = _seed(client, name, first, auth)
    assert same_values(first, created)
    record_url = f"{settings.path}/{created['id']}"

    if "get" in settings.operations:
        response = client.get(record_url, headers=auth)
        assert response.status_code == 200
        assert response.get_json() == created

    if "list" in settings.operations:
        response = client.get(settings.path, headers=auth)
        assert response.status_code == 200
        assert created in response.get_json()["items"]

    if "update" in settings.operations:
        replacement = others[0] if others else first
        response = client.put(record_url, json=replacement, headers=auth)
        assert response.status_code == 200, response.get_json()
        assert same_values(replacement, response.get_json())
        field, value = next(iter(first.items()))
        response = client.patch(record_url, json={field: value}, headers=auth)
        assert response.status_code == 200, response.get_json()
        assert response.get_json()[field] == value
        assert response.get_json()["created_at"] == created["created_at"]

    if "delete" in settings.operations:
        assert client.delete(record_url, headers=auth).status_code == 204
        response = client.get(record_url, headers=auth)
        assert response.status_code in (404, 405)
        assert client.delete(record_url, headers=auth).status_code == 404


@pytest.mark.parametrize("name", [n for n in ENDPOINTS if "list" in endpoint(n).operations])
def test_pagination_visits_every_record_once(client, headers, name):
    settings = endpoint(name)
    auth = headers(name)
    created = [_seed(client, name, record, auth)["id"] for record in SAMPLES[settings.store]]
    seen, after = [], 0
    for _ in range(len(created) + 1):
        response = client.get(
            settings.path, query_string={"limit": 1, "after": after}, headers=auth
        )
        assert response.status_code == 200
        page = response.get_json()
        seen += [item["id"] for item in page["items"]]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert seen == created
    too_big = client.get(
        settings.path, query_string={"limit": settings.max_page_size + 1}, headers=auth
    )
    assert too_big.status_code == 400
    assert too_big.mimetype == PROBLEM_JSON


@pytest.mark.parametrize("name", [n for n in ENDPOINTS if "create" in endpoint(n).operations])
def test_invalid_bodies_get_problem_details(client, headers, name):
    settings = endpoint(name)
    auth = headers(name)

    response = client.post(
        settings.path, data="{not json", content_type="application/json", headers=auth
    )
    assert response.status_code == 400 and response.mimetype == PROBLEM_JSON

    response = client.post(
        settings.path, data=b'{"a": "\xff"}', content_type="application/json", headers=auth
    )
    assert response.status_code == 400 and response.mimetype == PROBLEM_JSON

    response = client.post(settings.path, data="x=1", content_type="text/plain", headers=auth)
    assert response.status_code == 415 and response.mimetype == PROBLEM_JSON

    response = client.post(settings.path, json=[1, 2], headers=auth)
    assert response.status_code == 422 and response.mimetype == PROBLEM_JSON

    response = client.post(settings.path, json={"id": 5, "no_such_field_xyz": 1}, headers=auth)
    assert response.status_code == 422
    assert response.get_json()["errors"]

    response = client.post(settings.path, json={"text": "a\u0000b"}, headers=auth)
    assert response.status_code == 422
    assert response.get_json()["errors"][0]["pointer"] == "/text"

    big = "x" * (client.application.config["MAX_CONTENT_LENGTH"] + 1)
    response = client.post(settings.path, json={"blob": big}, headers=auth)
    assert response.status_code == 413 and response.mimetype == PROBLEM_JSON


WITH_FIELDS = [
    name
    for name in ENDPOINTS
    if "create" in endpoint(name).operations and SETTINGS.stores[endpoint(name).store].fields
]


@pytest.mark.parametrize("name", WITH_FIELDS)
def test_every_bad_field_is_listed_by_pointer(client, headers, name):
    settings = endpoint(name)
    store_fields = STORES_BY_NAME[settings.store].field_types
    bad = {field: {"not": "valid"} for field, kind in store_fields.items() if kind != "json"}
    response = client.post(settings.path, json=bad, headers=headers(name))
    assert response.status_code == 422
    pointers = {error["pointer"] for error in response.get_json()["errors"]}
    assert pointers >= {f"/{field}" for field in bad}


@pytest.mark.parametrize("name", [n for n in ENDPOINTS if "get" in endpoint(n).operations])
def test_missing_record_is_404_problem(client, headers, name):
    settings = endpoint(name)
    response = client.get(f"{settings.path}/999999", headers=headers(name))
    assert response.status_code == 404
    assert response.mimetype == PROBLEM_JSON
    assert response.get_json()["status"] == 404


@pytest.mark.parametrize("name", [n for n in ENDPOINTS if endpoint(n).auth == "api_key"])
def test_api_key_is_required(client, name):
    path = endpoint(name).path
    operation_path = path if "list" in endpoint(name).operations else f"{path}/1"
    for headers in ({}, {"X-API-Key": "wrong"}):
        response = client.get(operation_path, headers=headers)
        assert response.status_code == 401
        assert response.mimetype == PROBLEM_JSON


def _unique_fields(name: str) -> list[str]:
    fields = SETTINGS.stores[endpoint(name).store].fields or {}
    return [field for field, spec in fields.items() if spec.get("unique")]


@pytest.mark.parametrize(
    "name", [n for n in ENDPOINTS if "create" in endpoint(n).operations and _unique_fields(n)]
)
def test_duplicate_unique_value_is_409(client, headers, name):
    settings = endpoint(name)
    record = SAMPLES[settings.store][0]
    assert client.post(settings.path, json=record, headers=headers(name)).status_code == 201
    response = client.post(settings.path, json=record, headers=headers(name))
    assert response.status_code == 409
    assert response.mimetype == PROBLEM_JSON


CREATE_ENDPOINTS = [name for name in ENDPOINTS if "create" in endpoint(name).operations]


@pytest.mark.parametrize("name", CREATE_ENDPOINTS)
def test_retried_post_with_the_same_idempotency_key_creates_one_record(client, headers, name):
    settings = endpoint(name)
    auth = headers(name)
    first, *others = SAMPLES[settings.store]
    keyed = {**auth, "Idempotency-Key": f"retry-{name}"}

    created = client.post(settings.path, json=first, headers=keyed)
    retried = client.post(settings.path, json=first, headers=keyed)

    assert created.status_code == retried.status_code == 201, retried.get_json()
    assert "Idempotent-Replayed" not in created.headers
    assert retried.headers["Idempotent-Replayed"] == "true"
    assert retried.get_json() == created.get_json()
    assert retried.headers["Location"] == created.headers["Location"]
    records, _ = STORES_BY_NAME[settings.store].list(limit=100)
    assert [record["id"] for record in records] == [created.get_json()["id"]]

    if others:  # the same key with another body is refused, and creates nothing
        reused = client.post(settings.path, json=others[0], headers=keyed)
        assert reused.status_code == 409 and reused.content_type == PROBLEM_JSON
        assert "Idempotency-Key" in reused.get_json()["detail"]
        assert len(STORES_BY_NAME[settings.store].list(limit=100)[0]) == 1


@pytest.mark.parametrize("name", CREATE_ENDPOINTS)
@pytest.mark.parametrize("key", ["", "has spaces", "x" * 256, "caf\u00e9"])
def test_malformed_idempotency_key_is_400(client, headers, name, key):
    settings = endpoint(name)
    sample = SAMPLES[settings.store][0]
    response = client.post(
        settings.path, json=sample, headers={**headers(name), "Idempotency-Key": key}
    )
    assert response.status_code == 400 and response.content_type == PROBLEM_JSON
    assert response.get_json()["errors"][0]["header"] == "Idempotency-Key"
    assert STORES_BY_NAME[settings.store].list(limit=10)[0] == []
