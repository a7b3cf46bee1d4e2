"""A real Cloud Storage API for tests: the `gcp-storage-emulator` server on a free localhost port.

`gcs_bucket` (session fixture) starts it with an in-memory bucket and points every client this
project uses at it, through the settings each client reads:
  - epath -> fsspec `gcsfs` (EPATH_USE_TF=0: tf.io.gfile has no emulator endpoint setting) and
    google-cloud-storage (TensorBoard files): STORAGE_EMULATOR_HOST;
  - tensorstore (orbax's array data): TENSORSTORE_GCS_HTTP_URL, GOOGLE_AUTH_TOKEN_FOR_TESTING.
Subprocesses inherit them. Nothing of this project is mocked.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

BUCKET = "mdm-asr-test"


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gcp-storage-emulator exited: {proc.stdout.read()}")
        with socket.socket() as s:
            if s.connect_ex(("localhost", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"gcp-storage-emulator did not listen on port {port} in {timeout} s")


@pytest.fixture(scope="session")
def gcs_bucket():
    """'gs://BUCKET' on a running emulator; the client environment is set for the session."""
    pytest.importorskip("gcp_storage_emulator", reason="pip install gcp-storage-emulator")
    pytest.importorskip("gcsfs", reason="pip install gcsfs")
    import portpicker

    port = portpicker.pick_unused_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gcp_storage_emulator", "start", f"--port={port}",
         f"--default-bucket={BUCKET}", "--in-memory", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://localhost:{port}"
    settings = {
        "EPATH_USE_TF": "0",
        "STORAGE_EMULATOR_HOST": url,
        "TENSORSTORE_GCS_HTTP_URL": url,
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
        "GOOGLE_CLOUD_PROJECT": "test",
    }
    saved = {k: os.environ.get(k) for k in settings}
    # epath caches "is TensorFlow importable" on first use (any path); recompute it under
    # EPATH_USE_TF=0 here and again afterwards.
    from etils.epath import gpath

    try:
        _wait_for_port(port, proc)
        os.environ.update(settings)
        gpath._is_tf_installed.cache_clear()
        yield f"gs://{BUCKET}"
    finally:
        gpath._is_tf_installed.cache_clear()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        proc.terminate()
        proc.wait(timeout=30)
