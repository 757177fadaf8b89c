"""Start an MLflow tracking server on loopback: SQLite backend, served artifact store.

Runs and sweeps on other processes or hosts log to it over HTTP when
`MLFLOW_TRACKING_URI=http://HOST:PORT` is set; artifacts travel through the
server (`--serve-artifacts`), so clients need no shared filesystem for them.

    python scripts/tracking_server.py --port 5001 [--root DIR] [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def server_command(root: Path, host: str, port: int) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow-server.db'}",
        "--artifacts-destination",
        str(root / "mlartifacts"),
        "--serve-artifacts",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
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


def start_server(root: Path, port: int, host: str = "127.0.0.1", log=None) -> subprocess.Popen:
    """Start the server in the background and return once it answers."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": ""}
    process = subprocess.Popen(
        server_command(root, host, port), stdout=log, stderr=log, env=env, start_new_session=True
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
    args = parser.parse_args()
    print(f"MLflow server: http://{args.host}:{args.port}  (store: {args.root})")
    print(f"log to it with: export MLFLOW_TRACKING_URI=http://{args.host}:{args.port}")
    os.execv(sys.executable, server_command(args.root, args.host, args.port))


if __name__ == "__main__":
    main()
