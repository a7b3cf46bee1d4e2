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
from pathlib import Path

import pytest

BUCKET = "mdm-asr-test"

# The emulator, started with two differences from real Cloud Storage removed:
# - It rewrites a JSON dump of every object's metadata after each write, even in memory:
#   quadratic in the objects a bucket holds. A checkpoint is hundreds of small objects, and at
#   that size a save took minutes on 2 cores. In memory the dump is never read back (it is how
#   the on-disk mode survives a restart), so it is skipped.
# - Its media downloads carry no `x-goog-generation` header, which Cloud Storage always sends
#   and tensorstore's OCDBT driver (orbax's default checkpoint format) needs ("Malformed
#   StorageGeneration"); the launcher adds it from the object's own record.
_SERVE = """
import sys
from gcp_storage_emulator.handlers import objects
from gcp_storage_emulator.storage import Storage

Storage._write_config_to_file = lambda self: None
_download = objects.download

def download(request, response, storage, *args, **kwargs):
    _download(request, response, storage, *args, **kwargs)
    try:
        record = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    except Exception:  # not found: the handler has set the status
        return
    response["x-goog-generation"] = record["generation"]
    response["x-goog-metageneration"] = record["metageneration"]

objects.download = download  # before the server module builds its routes
from gcp_storage_emulator import __main__ as emulator
emulator.main(sys.argv[1:])
"""


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gcp-storage-emulator exited: {log.read_text()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("localhost", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"gcp-storage-emulator did not listen on port {port} in {timeout} s")


@pytest.fixture(scope="session")
def gcs_bucket(tmp_path_factory):
    """'gs://BUCKET' on a running emulator; the client environment is set for the session."""
    pytest.importorskip("gcp_storage_emulator", reason="pip install gcp-storage-emulator")
    pytest.importorskip("gcsfs", reason="pip install gcsfs")
    import portpicker

    port = portpicker.pick_unused_port()
    # The server's output goes to a file: it prints a traceback for every client that hangs up
    # early, and a pipe nobody reads fills up and stops the (single-threaded) server mid-request.
    log = tmp_path_factory.mktemp("gcs_emulator") / "server.log"
    log_file = log.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVE, "start", f"--port={port}",
         f"--default-bucket={BUCKET}", "--in-memory", "--quiet"],
        stdout=log_file, stderr=subprocess.STDOUT, text=True,
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
        _wait_for_port(port, proc, log)
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
        log_file.close()
