"""``castore init`` and ``serve`` with ``--blobs s3://…`` check the bucket before anything else.

A missing bucket, or one these credentials may not write to, is found at setup (a small
put, get and delete under the prefix) with a line that says what to do, instead of on the
first file too large to be kept inline in the database (``HTTP/500: … S3UploadFailedError``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..backends import MotoServer, S3Server
from ..server_process import free_port


def castore(tmp_path: Path, blobs: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``castore --metadata sqlite:///tmp_path/… --blobs URL ARGS``, in a process of its own."""
    metadata = f"sqlite:///{tmp_path / 'metadata.sqlite3'}"
    return subprocess.run([sys.executable, "-m", "castore", "--metadata", metadata, "--blobs", blobs, *args],
                          capture_output=True, text=True, timeout=timeout, check=False, env=os.environ)


def bucket_exists(s3_server: S3Server, name: str) -> bool:
    from castore.blobs.s3 import _client

    return name in {b["Name"] for b in _client(s3_server.endpoint, s3_server.REGION).list_buckets()["Buckets"]}


def test_init_on_a_missing_bucket_says_how_to_make_it_and_makes_nothing(s3_server: S3Server, tmp_path: Path) -> None:
    name = s3_server.new_bucket_name()
    done = castore(tmp_path, s3_server.bucket_url(name), "init")
    assert done.returncode == 5, (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"the bucket {name} does not exist" in done.stderr, done.stderr
    assert "init --create-bucket" in done.stderr and f"aws s3 mb s3://{name}" in done.stderr, done.stderr
    assert not (tmp_path / "metadata.sqlite3").exists(), "no half-made store"
    assert not bucket_exists(s3_server, name)


def test_init_create_bucket_makes_it_and_large_files_go_there(s3_server: S3Server, tmp_path: Path) -> None:
    name = s3_server.new_bucket_name()
    blobs = s3_server.bucket_url(name)
    done = castore(tmp_path, blobs, "init", "--create-bucket")
    assert done.returncode == 0, done.stderr
    assert bucket_exists(s3_server, name)
    again = castore(tmp_path, blobs, "init", "--create-bucket")  # an existing bucket is kept
    assert again.returncode == 0, again.stderr
    large = tmp_path / "large.in"
    large.write_bytes(os.urandom(1 << 20))  # beyond inline_max: goes to the bucket
    put = castore(tmp_path, blobs, "put", str(large), "/p/large.in")
    assert put.returncode == 0, put.stderr
    from castore.blobs.s3 import _client

    listed = _client(s3_server.endpoint, s3_server.REGION).list_objects_v2(Bucket=name)
    assert [item["Key"].startswith("blobs/") for item in listed.get("Contents", [])] == [True], listed
    assert castore(tmp_path, blobs, "--json", "stat", "/p/large.in").returncode == 0


def test_serve_on_a_missing_bucket_stops_before_it_serves(s3_server: S3Server, tmp_path: Path) -> None:
    name = s3_server.new_bucket_name()
    done = castore(tmp_path, s3_server.bucket_url(name), "serve", "--init", "--port", str(free_port()),
                   "--workers", "1")
    assert done.returncode == 5, (done.stdout, done.stderr)
    assert f"the bucket {name} does not exist" in done.stderr and "serve --init --create-bucket" in done.stderr
    made = castore(tmp_path / "b", s3_server.bucket_url(name), "init", "--create-bucket")
    assert made.returncode == 0, made.stderr
    from castore.blobs.s3 import _client

    _client(s3_server.endpoint, s3_server.REGION).delete_bucket(Bucket=name)  # empty: the check left nothing
    served = castore(tmp_path / "b", s3_server.bucket_url(name), "serve", "--port", str(free_port()),
                     "--workers", "1")  # an existing store whose bucket went away
    assert served.returncode == 5 and f"the bucket {name} does not exist" in served.stderr, served.stderr

def test_a_bucket_these_credentials_cannot_write_to_is_refused_at_init(s3_server: S3Server, tmp_path: Path) -> None:
    if isinstance(s3_server, MotoServer):
        pytest.skip("moto does not enforce bucket policies (radosgw does)")
    from castore.blobs.s3 import _client

    name = s3_server.new_bucket_name()
    client = _client(s3_server.endpoint, s3_server.REGION)
    client.create_bucket(Bucket=name)
    client.put_bucket_policy(Bucket=name, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{name}/*"}]}))
    done = castore(tmp_path, s3_server.bucket_url(name, "prod"), "init")
    assert done.returncode == 5, (done.stdout, done.stderr)
    assert f"cannot write to s3://{name}/prod/" in done.stderr and "AccessDenied" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "metadata.sqlite3").exists()
