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

import base64
import configparser
import contextlib
import os
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
# Stores reached over a socket, and the port each scheme's client uses when none is given.
_PORTS = {"http": 80, "https": 443, "postgresql": 5432, "mysql": 3306, "mssql": 1433}


# The schemes MLflow's tracking client opens itself (its documentation's list of backend
# and server URIs); plugins add theirs through the `mlflow.tracking_store` entry points.
_BUILT_IN_SCHEMES = (
    "databricks", "databricks-uc", "file", "http", "https", "mssql", "mysql", "postgresql",
    "sqlite", "uc",
)  # fmt: skip


class StoreGone(SystemExit):
    """The tracking store cannot be used (or died mid-run): the process ends with this code.

    Its own class so that the entry point can leave at once (`os._exit`) after the one-line
    message: after a run stopped mid-fit, TensorFlow's threads can abort the interpreter's
    teardown ("terminate called without an active exception", exit -6; seen once in
    `test_a_server_that_dies_mid_run_ends_the_run_in_one_line` on a loaded machine).
    """


def known_schemes() -> list[str]:
    """The URI schemes MLflow can open: its own, and those of installed store plugins."""
    plugins = {e.name for e in entry_points(group="mlflow.tracking_store")}
    return sorted(set(_BUILT_IN_SCHEMES) | plugins)


def check_store(uri: str, timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """None if the store at `uri` can be used, else what is wrong, as a short phrase."""
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+", 1)[0]  # postgresql+psycopg2 -> postgresql
    if scheme in ("", "file"):
        return _check_writable_dir(Path(parts.path if scheme == "file" else uri))
    schemes = known_schemes()
    if scheme not in schemes:
        return f"unknown scheme '{scheme}://'; MLflow stores are " + ", ".join(
            f"{s}://" for s in schemes if s not in ("uc", "databricks-uc")
        )
    if scheme == "sqlite":
        return _check_sqlite(uri, timeout)
    if scheme not in _PORTS:
        return None  # databricks and plugins: their own clients know best
    host, port = parts.hostname or "localhost", parts.port or _PORTS[scheme]
    problem = _check_connect(host, port, timeout)
    if problem is None and scheme in ("http", "https"):
        problem = _check_http(uri, f"{host}:{port}", timeout)
    return problem


def _check_writable_dir(directory: Path) -> str | None:
    """MLflow creates missing folders, so the nearest existing one must take a new file."""
    existing = directory.resolve()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
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
        existing_only = f"file:{path}?mode=rw"  # never creates the file
        with contextlib.closing(sqlite3.connect(existing_only, uri=True, timeout=timeout)) as db:
            db.execute("select count(*) from sqlite_master").fetchone()
    except sqlite3.OperationalError as err:
        if "locked" in str(err) or "busy" in str(err):
            return None  # busy, not dead: the retries handle it
        return f"cannot open {path}: {err}"
    except sqlite3.DatabaseError as err:
        return f"{path} is not an SQLite database ({err})"
    try:
        with open(path, "r+b"):
            return None
    except OSError:
        return f"{path} is read-only"


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


def _check_http(uri: str, address: str, timeout: float) -> str | None:
    """A server that accepts connections at `address` (host:port): is it MLflow's, and does it
    take the credentials MLflow will send? A refusal is one line now, not a 401 traceback from
    the first logging call."""
    # the endpoint every run's first call uses
    url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
    request = urllib.request.Request(url, headers=_auth_headers())
    try:
        with urllib.request.urlopen(request, timeout=timeout * 2):
            return None
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            return _refused(err.code, bool(request.headers))
        if err.code == 404:
            return f"{address} answers but is not an MLflow tracking server (HTTP 404)"
        return f"the server answered HTTP {err.code} {err.reason}"
    except TimeoutError:
        return f"{address} accepts connections but did not answer within {timeout * 2:.0f} s"
    except urllib.error.URLError as err:
        return f"cannot reach the server: {err.reason}"
    except OSError as err:
        return f"cannot reach the server: {err}"


CREDENTIALS_FILE = Path("~/.mlflow/credentials")  # MLflow's documented credentials file


def _credentials() -> dict[str, str]:
    """The credentials MLflow's client sends, where its documentation says it reads them: the
    `MLFLOW_TRACKING_*` variables, else the `[mlflow]` section of ~/.mlflow/credentials."""
    keys = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
    found = {k: os.environ[k] for k in keys if os.environ.get(k)}
    path = CREDENTIALS_FILE.expanduser()
    if not found and path.is_file():
        parser = configparser.ConfigParser()
        parser.read(path)
        section = parser["mlflow"] if parser.has_section("mlflow") else {}
        found = {k: section[k.lower()] for k in keys if section.get(k.lower())}
    return found


def _auth_headers() -> dict[str, str]:
    creds = _credentials()
    if "MLFLOW_TRACKING_TOKEN" in creds:
        return {"Authorization": f"Bearer {creds['MLFLOW_TRACKING_TOKEN']}"}
    if "MLFLOW_TRACKING_USERNAME" in creds:
        pair = f"{creds['MLFLOW_TRACKING_USERNAME']}:{creds.get('MLFLOW_TRACKING_PASSWORD', '')}"
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
    return {}


def _refused(code: int, sent_credentials: bool) -> str:
    how = (
        "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN), "
        f"or put them in {CREDENTIALS_FILE}"
    )
    if code == 403:
        return f"these credentials have no access (HTTP 403); {how} for a user with access"
    if sent_credentials:
        return f"the server refused the credentials given (HTTP 401); {how}"
    return f"the server needs credentials (HTTP 401); {how}"


def say_store_error(uri: str, problem: str) -> str:
    """Print the one line that names the store and what is wrong with it; return it."""
    line = f"tracking store error: {uri}: {problem}"
    print(line, file=sys.stderr, flush=True)
    return line


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


def store_or_exit(uri: str) -> None:
    """Print one line naming the URI and exit 2 if the store cannot be used."""
    problem = check_store_once(uri)
    if problem:
        say_store_error(uri, problem)
        sys.exit(2)


def stores_or_exit(jobs: list) -> None:
    """Check every store the composed job configs would log to, each once."""
    from resnet_exp.tracking.store import resolve_tracking_uri

    for uri in dict.fromkeys(resolve_tracking_uri(cfg.tracking.uri) for cfg in jobs):
        store_or_exit(uri)
