"""Is the tracking store usable? One cheap look before anything trains.

MLflow retries a dead store as if it were a busy one: its HTTP client backs off
through 7 retries (about 4 minutes, `MLFLOW_HTTP_REQUEST_MAX_RETRIES`), and its
SQLAlchemy store retries engine creation 10 times (about 100 s). Those retries
protect a healthy store under load, so they stay; this module tells a store
that cannot work at all (nothing listening, a folder that cannot be written, a
scheme MLflow does not know) in a second or two, in one line, before a job or
a sweep starts. A busy store (a SQLite lock) passes: that is what the retries
in `resnet_exp.tracking.store.with_retry` are for.
"""

from __future__ import annotations

import socket
import sqlite3
import sys
import tempfile
import urllib.error
import urllib.request
from importlib.metadata import entry_points
from pathlib import Path
from urllib.parse import urlsplit

CONNECT_TIMEOUT_S = 3.0
_DB_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


# The schemes MLflow's tracking client opens itself (its documentation's list of backend
# and server URIs); plugins add theirs through the `mlflow.tracking_store` entry points.
_BUILT_IN_SCHEMES = (
    "databricks", "databricks-uc", "file", "http", "https", "mssql", "mysql", "postgresql",
    "sqlite", "uc",
)  # fmt: skip


def known_schemes() -> list[str]:
    """The URI schemes MLflow can open: its own, and those of installed store plugins."""
    plugins = {e.name for e in entry_points(group="mlflow.tracking_store")}
    return sorted(set(_BUILT_IN_SCHEMES) | plugins)


def _scheme(uri: str) -> str:
    scheme = urlsplit(uri).scheme
    return scheme.split("+", 1)[0]  # postgresql+psycopg2 -> postgresql


def check_store(uri: str, timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """None if the store at `uri` can be used, else what is wrong, as a short phrase."""
    scheme = _scheme(uri)
    if scheme in ("", "file"):
        path = Path(urlsplit(uri).path if scheme == "file" else uri)
        return _check_writable_dir(path)
    if scheme not in known_schemes():
        return f"unknown scheme '{scheme}://'; MLflow stores are " + ", ".join(
            f"{s}://" for s in known_schemes() if s not in ("uc", "databricks-uc")
        )
    if scheme == "sqlite":
        return _check_sqlite(uri, timeout)
    if scheme in ("http", "https"):
        return _check_http(uri, timeout)
    if scheme in _DB_PORTS:
        parts = urlsplit(uri)
        port = parts.port or _DB_PORTS[scheme]
        return _check_connect(parts.hostname or "localhost", port, timeout)
    return None  # databricks and plugins: their own clients know best


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable_dir(directory: Path) -> str | None:
    """MLflow creates missing folders, so the nearest existing one must take a new file."""
    existing = _nearest_existing(directory.resolve())
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        return f"cannot write in {existing}: {err.strerror or err}"
    return None


def _check_sqlite(uri: str, timeout: float) -> str | None:
    path_text = uri.removeprefix("sqlite:///")
    if path_text in ("", ":memory:") or uri.startswith("sqlite:///:memory:"):
        return None
    path = Path(path_text)
    if not path.exists():
        return _check_writable_dir(path.parent)
    if path.is_dir():
        return f"{path} is a folder, not a database file"
    try:
        connection = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=timeout)
        try:
            connection.execute("select count(*) from sqlite_master").fetchone()
        finally:
            connection.close()
    except sqlite3.OperationalError as err:
        if "locked" in str(err) or "busy" in str(err):
            return None  # busy, not dead: the retries handle it
        return f"cannot open {path}: {err}"
    except sqlite3.DatabaseError as err:
        return f"{path} is not an SQLite database ({err})"
    if not _writable_file(path):
        return f"{path} is read-only"
    return None


def _writable_file(path: Path) -> bool:
    try:
        with open(path, "r+b"):
            return True
    except OSError:
        return False


def _check_connect(host: str, port: int, timeout: float) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except ConnectionRefusedError:
        return f"connection refused (nothing listening on {host}:{port})"
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout:.0f} s"
    except socket.gaierror:
        return f"unknown host '{host}'"
    except OSError as err:
        return f"cannot connect to {host}:{port}: {err.strerror or err}"


def _check_http(uri: str, timeout: float) -> str | None:
    parts = urlsplit(uri)
    host = parts.hostname or "localhost"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    problem = _check_connect(host, port, timeout)
    if problem:
        return problem
    # the endpoint every run's first call uses; auth errors are left to MLflow's own credentials
    url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
    try:
        with urllib.request.urlopen(url, timeout=timeout * 2):
            return None
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            return None
        if err.code == 404:
            return f"{host}:{port} answers but is not an MLflow tracking server (HTTP 404)"
        return f"the server answered HTTP {err.code} {err.reason}"
    except TimeoutError:
        return f"{host}:{port} accepts connections but did not answer within {timeout * 2:.0f} s"
    except urllib.error.URLError as err:
        return f"cannot reach the server: {err.reason}"
    except OSError as err:
        return f"cannot reach the server: {err}"


def store_error_line(uri: str, problem: str) -> str:
    return f"tracking store error: {uri}: {problem}"


_USABLE: set[str] = set()  # stores this process found usable: each is checked once


def check_store_once(uri: str) -> str | None:
    """`check_store`, but a store found usable is not checked again in this process (the
    entry point, the sweeper and a job in the same process all ask)."""
    if uri in _USABLE:
        return None
    problem = check_store(uri)
    if problem is None:
        _USABLE.add(uri)
    return problem


def store_or_exit(uri: str, code: int = 2) -> None:
    """Print one line naming the URI and exit `code` if the store cannot be used."""
    problem = check_store_once(uri)
    if problem:
        print(store_error_line(uri, problem), file=sys.stderr, flush=True)
        sys.exit(code)


def stores_or_exit(jobs: list) -> None:
    """Check every store the composed job configs would log to, each once."""
    from resnet_exp.tracking.store import resolve_tracking_uri

    for uri in dict.fromkeys(resolve_tracking_uri(cfg.tracking.uri) for cfg in jobs):
        store_or_exit(uri)
