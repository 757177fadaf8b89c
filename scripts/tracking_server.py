"""Start an MLflow tracking server on loopback: SQLite backend, served artifact store.

Runs and sweeps on other processes or hosts log to it over HTTP when
`MLFLOW_TRACKING_URI=http://HOST:PORT` is set; artifacts travel through the
server (`--serve-artifacts`), so clients need no shared filesystem for them.

    python scripts/tracking_server.py --port 5001 [--root DIR] [--host 127.0.0.1] [--auth]

`--auth` runs MLflow's own basic-auth app (`mlflow server --app-name basic-auth`):
every request needs a user and password. The admin account comes from the
environment, as MLflow reads it: `MLFLOW_AUTH_ADMIN_PASSWORD` (required, at
least 12 characters, used when the user store is first created) and
`MLFLOW_AUTH_ADMIN_USERNAME` (default `admin`). Users and permissions live in
`<root>/basic_auth.db`, the settings in `<root>/basic_auth.ini` (mode 600: it
holds the admin password too, which MLflow versions before late 2026 read only
from there); other users are created by the admin through MLflow's
API or its `/signup` page. Clients log in with `MLFLOW_TRACKING_USERNAME` and
`MLFLOW_TRACKING_PASSWORD`. The session secret is `MLFLOW_FLASK_SERVER_SECRET_KEY`
if set, else one generated once and kept in `<root>/flask_secret_key` (mode 600).
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


AUTH_INI = """[mlflow]
default_permission = {permission}
database_uri = sqlite:///{db}
admin_username = {username}
admin_password = {password}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
"""


class AuthSetupError(Exception):
    """The basic-auth server cannot start as configured; the message is one line."""


def _private_file(path: Path, text: str) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text)


def auth_environment(root: Path, permission: str = "READ") -> dict[str, str]:
    """Environment for MLflow's basic-auth app: its config file, admin and session secret."""
    if not os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD"):
        raise AuthSetupError(
            "--auth needs the admin password in MLFLOW_AUTH_ADMIN_PASSWORD (12+ characters); "
            "MLFLOW_AUTH_ADMIN_USERNAME names the admin (default: admin)"
        )
    root.mkdir(parents=True, exist_ok=True)
    ini = root / "basic_auth.ini"
    _private_file(
        ini,
        AUTH_INI.format(
            permission=permission,
            db=root / "basic_auth.db",
            username=os.environ.get("MLFLOW_AUTH_ADMIN_USERNAME") or "admin",
            password=os.environ["MLFLOW_AUTH_ADMIN_PASSWORD"].replace("%", "%%"),  # configparser
        ),
    )
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(ini)}
    if not os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY"):
        key_file = root / "flask_secret_key"
        if not key_file.exists():
            _private_file(key_file, secrets.token_hex(32))
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = key_file.read_text().strip()
    return env


def server_command(root: Path, host: str, port: int, auth: bool = False) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    return [
        *[sys.executable, "-m", "mlflow", "server"],
        *["--backend-store-uri", f"sqlite:///{root / 'mlflow-server.db'}"],
        *["--artifacts-destination", str(root / "mlartifacts"), "--serve-artifacts"],
        *["--host", host, "--port", str(port), "--workers", "1"],
        *(["--app-name", "basic-auth"] if auth else []),
    ]


def wait_until_ready(url: str, timeout_s: float = 120.0) -> None:
    """Poll the server's health endpoint; raise TimeoutError with the URL if it never answers."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"MLflow server at {url} did not answer within {timeout_s:.0f} s")


def start_server(
    root: Path, port: int, host: str = "127.0.0.1", log=None, auth: bool = False
) -> subprocess.Popen:
    """Start the server in the background and return once it answers."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": "", **(auth_environment(root) if auth else {})}
    process = subprocess.Popen(
        server_command(root, host, port, auth),
        stdout=log,
        stderr=log,
        env=env,
        start_new_session=True,
    )
    try:
        wait_until_ready(f"http://{host}:{port}")
    except TimeoutError:
        process.terminate()
        raise
    return process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (loopback by default)")
    parser.add_argument("--root", type=Path, default=ROOT / "tracking-server")
    parser.add_argument(
        "--auth", action="store_true", help="MLflow's basic-auth app (see the module doc)"
    )
    parser.add_argument(
        "--default-permission",
        default="READ",
        choices=("READ", "EDIT", "MANAGE", "NO_PERMISSIONS"),
        help="with --auth: what a user may do with experiments others created (default READ)",
    )
    args = parser.parse_args()
    env = dict(os.environ)
    if args.auth:
        try:
            env.update(auth_environment(args.root, args.default_permission))
        except AuthSetupError as err:
            sys.exit(f"tracking_server: {err}")
    print(f"MLflow server: http://{args.host}:{args.port}  (store: {args.root})")
    print(f"log to it with: export MLFLOW_TRACKING_URI=http://{args.host}:{args.port}")
    if args.auth:
        print("  and MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (basic auth is on)")
    command = server_command(args.root, args.host, args.port, args.auth)
    os.execve(sys.executable, command, env)


if __name__ == "__main__":
    main()
