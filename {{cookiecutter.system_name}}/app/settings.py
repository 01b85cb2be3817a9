"""Run-time settings: config/system_config.yaml, with every value overridable from the environment.

Invalid settings stop start-up with one line naming the variable and the value
(ConfigError), rather than failing on the first request. Of the service it imports only
app.defaults, so gunicorn.conf.py reads it in the master without loading the application.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import defaults

try:  # libyaml's loader when available: same safety, faster start-up
    from yaml import CSafeLoader as SafeLoader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_FILE = PROJECT_DIR / "config" / "system_config.yaml"
DEFAULT_THREADS = 4
DEFAULT_PORT = 8080
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


class ConfigError(Exception):
    """Configuration that the service cannot start with; the message is one line."""


@dataclass(frozen=True)
class StoreSettings:
    name: str
    table: str
    fields: dict | None


@dataclass(frozen=True)
class EndpointSettings:
    name: str
    path: str
    store: str
    operations: tuple[str, ...]
    page_size: int
    max_page_size: int
    auth: str
    cors_origins: tuple[str, ...]


@dataclass(frozen=True)
class Settings:
    system_name: str
    description: str
    version: str
    database_url: str | None
    data_dir: Path
    pool_min_size: int
    pool_max_size: int
    statement_timeout_ms: int
    request_timeout_ms: int
    ready_timeout_ms: int
    max_content_length: int
    proxy_count: int
    log_level: str
    api_keys: tuple[str, ...]
    migrate_on_start: bool
    transaction_pooler: bool
    stores: dict[str, StoreSettings]
    endpoints: dict[str, EndpointSettings]

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / f"{self.system_name}.sqlite3"


def _integer(environ: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        value = default
    else:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={value} is outside {low}..{high}")
    return value


def _boolean(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in TRUE_WORDS:
        return True
    if raw.lower() in FALSE_WORDS:
        return False
    words = "/".join((*TRUE_WORDS, *FALSE_WORDS))
    raise ConfigError(f"{name}={raw!r} is not one of {words}")


def threads(environ: Mapping[str, str] = os.environ) -> int:
    """Threads per Gunicorn worker; database pools are sized to at least this."""
    return _integer(environ, "GUNICORN_THREADS", DEFAULT_THREADS, 1, 256)


def _log_level(environ: Mapping[str, str], default: str = "INFO") -> str:
    log_level = (environ.get("LOG_LEVEL") or default).upper()
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL={log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    return log_level


@dataclass(frozen=True)
class ServerSettings:
    """Gunicorn's settings, as gunicorn.conf.py hands them to Gunicorn (see its comments)."""

    bind: str
    workers: int
    threads: int
    timeout: int
    graceful_timeout: int
    keepalive: int
    request_read_timeout: int
    max_requests: int
    max_requests_jitter: int
    preload_app: bool
    access_log: str | None
    control_socket: str | None
    drain_seconds: int

    @property
    def local_url(self) -> str:
        """Where a client on this host reaches a TCP `bind` (the Dockerfile's health check):
        loopback when the service listens on every interface."""
        host, _, port = self.bind.rpartition(":")
        # The wildcard address is recognised here, not bound to.
        if host in ("0.0.0.0", "[::]"):  # nosec B104
            host = "127.0.0.1"
        return f"http://{host}:{port}"


def _bind(environ: Mapping[str, str]) -> str:
    port = _integer(environ, "PORT", DEFAULT_PORT, 1, 65535)  # checked even when BIND is set
    bind = environ.get("BIND") or ""
    if not bind:
        return f"0.0.0.0:{port}"  # a container listens on all its interfaces
    if bind.startswith(("unix:", "fd://")):
        return bind
    host, separator, bind_port = bind.rpartition(":")
    if not separator or not host or not bind_port.isdigit() or not 1 <= int(bind_port) <= 65535:
        raise ConfigError(f"BIND={bind!r} is not HOST:PORT (port 1..65535) or unix:PATH")
    return bind


def load_server_settings(environ: Mapping[str, str] = os.environ) -> ServerSettings:
    """Gunicorn's settings from the environment; raise ConfigError when one is invalid."""
    return ServerSettings(
        bind=_bind(environ),
        workers=_integer(environ, "WEB_CONCURRENCY", (os.cpu_count() or 1) * 2 + 1, 1, 1024),
        threads=threads(environ),
        timeout=_integer(environ, "GUNICORN_TIMEOUT", 30, 1, 86_400),
        graceful_timeout=_integer(environ, "GUNICORN_GRACEFUL_TIMEOUT", 30, 0, 86_400),
        keepalive=_integer(environ, "GUNICORN_KEEPALIVE", 5, 0, 86_400),
        request_read_timeout=_integer(environ, "GUNICORN_REQUEST_READ_TIMEOUT", 10, 1, 3600),
        max_requests=_integer(environ, "GUNICORN_MAX_REQUESTS", 0, 0, 10**9),
        max_requests_jitter=_integer(environ, "GUNICORN_MAX_REQUESTS_JITTER", 0, 0, 10**9),
        preload_app=_boolean(environ, "GUNICORN_PRELOAD", False),
        access_log=environ.get("GUNICORN_ACCESS_LOG", "-") or None,
        control_socket=environ.get("GUNICORN_CONTROL_SOCKET") or None,
        drain_seconds=_integer(environ, "DRAIN_SECONDS", defaults.DRAIN_SECONDS, 0, 3600),
    )


def check_request_timeout(service: Settings, server: ServerSettings) -> None:
    """A request must end (504) before Gunicorn kills its worker for taking too long."""
    if service.request_timeout_ms >= server.timeout * 1000:
        raise ConfigError(
            f"REQUEST_TIMEOUT_MS={service.request_timeout_ms} is not below "
            f"GUNICORN_TIMEOUT={server.timeout} s"
        )


def _read_config(path: Path) -> dict:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=SafeLoader)
    except OSError as exc:
        raise ConfigError(f"CONFIG_FILE={str(path)!r} cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"CONFIG_FILE={str(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not {"system", "stores", "endpoints"} <= set(data):
        raise ConfigError(f"CONFIG_FILE={str(path)!r} lacks system, stores or endpoints")
    return data


def _database_url(environ: Mapping[str, str]) -> str | None:
    url = environ.get("DATABASE_URL") or None
    if url and not url.startswith(("postgresql://", "postgres://", "sqlite:///")):
        scheme = url.split(":", 1)[0]
        raise ConfigError(
            f"DATABASE_URL has scheme {scheme!r}; use postgresql://... or sqlite:///path"
        )
    return url


def env_name(component: str, setting: str) -> str:
    """The environment variable overriding a component's setting, e.g. ORDERS_API_PAGE_SIZE."""
    return f"{component.upper()}_{setting.upper()}"


def _endpoint(name: str, data: dict, environ: Mapping[str, str]) -> EndpointSettings:
    max_page_size = _integer(
        environ, env_name(name, "max_page_size"), data["max_page_size"], 1, 10_000
    )
    page_size = _integer(environ, env_name(name, "page_size"), data["page_size"], 1, max_page_size)
    origins_variable = env_name(name, "cors_origins")
    if origins_variable in environ:
        origins = tuple(
            item.strip() for item in environ[origins_variable].split(",") if item.strip()
        )
    else:
        origins = tuple(data.get("cors_origins", ()))
    return EndpointSettings(
        name=name,
        path=data["path"],
        store=data["store"],
        operations=tuple(data["operations"]),
        page_size=page_size,
        max_page_size=max_page_size,
        auth=data["auth"],
        cors_origins=origins,
    )


def load_settings(environ: Mapping[str, str] = os.environ) -> Settings:
    """Read the configuration file and apply the environment; raise ConfigError when invalid."""
    config_file = Path(environ.get("CONFIG_FILE") or DEFAULT_CONFIG_FILE)
    data = _read_config(config_file)
    service = data.get("service", {})
    database = data.get("database", {})
    worker_threads = threads(environ)
    pool_min = _integer(
        environ, "DB_POOL_MIN_SIZE", database.get("pool_min_size", defaults.POOL_MIN_SIZE), 1, 1000
    )
    pool_max = _integer(
        environ, "DB_POOL_MAX_SIZE", database.get("pool_max_size", defaults.POOL_MAX_SIZE), 1, 1000
    )
    if pool_min > pool_max:
        raise ConfigError(f"DB_POOL_MIN_SIZE={pool_min} is above DB_POOL_MAX_SIZE={pool_max}")
    log_level = _log_level(environ, service.get("log_level", "INFO"))
    keys = tuple(key.strip() for key in environ.get("API_KEYS", "").split(",") if key.strip())
    statement_timeout_ms = _integer(
        environ,
        "DB_STATEMENT_TIMEOUT_MS",
        database.get("statement_timeout_ms", defaults.STATEMENT_TIMEOUT_MS),
        1,
        3_600_000,
    )
    request_timeout_ms = _integer(
        environ, "REQUEST_TIMEOUT_MS", defaults.REQUEST_TIMEOUT_MS, 1, 3_600_000
    )
    # The database gives up first, with a clear error; the request deadline is the backstop
    # for a database that does not answer at all.
    if statement_timeout_ms > request_timeout_ms:
        raise ConfigError(
            f"DB_STATEMENT_TIMEOUT_MS={statement_timeout_ms} is above "
            f"REQUEST_TIMEOUT_MS={request_timeout_ms}"
        )
    return Settings(
        system_name=data["system"]["name"],
        description=data["system"].get("description", ""),
        version=data["system"].get("version", defaults.VERSION),
        database_url=_database_url(environ),
        data_dir=Path(environ.get("DATA_DIR") or PROJECT_DIR / "data"),
        # A pool smaller than the thread count would reconnect on most requests.
        pool_min_size=max(pool_min, worker_threads),
        pool_max_size=max(pool_max, worker_threads),
        statement_timeout_ms=statement_timeout_ms,
        request_timeout_ms=request_timeout_ms,
        ready_timeout_ms=_integer(
            environ, "READY_TIMEOUT_MS", defaults.READY_TIMEOUT_MS, 1, 60_000
        ),
        max_content_length=_integer(
            environ,
            "MAX_CONTENT_LENGTH",
            service.get("max_content_length", defaults.MAX_CONTENT_LENGTH),
            1024,
            1024**3,
        ),
        proxy_count=_integer(environ, "PROXY_COUNT", service.get("proxy_count", 0), 0, 10),
        log_level=log_level,
        api_keys=keys,
        migrate_on_start=_boolean(environ, "MIGRATE_ON_START", defaults.MIGRATE_ON_START),
        transaction_pooler=_boolean(environ, "DB_TRANSACTION_POOLER", False),
        stores={
            name: StoreSettings(name, store["table"], store["fields"])
            for name, store in data["stores"].items()
        },
        endpoints={
            name: _endpoint(name, endpoint, environ) for name, endpoint in data["endpoints"].items()
        },
    )
