"""A client killed in the middle of a download leaves no partial file in the cache or at the destination."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from castore.client import Client
from castore.client.cache import LocalCache

from ..server_process import castore_server

CHILD = """
import sys
from castore.client import Client
client = Client(cache_dir=sys.argv[2], remote_url=sys.argv[1])
while True:
    client.get_file(sys.argv[3], sys.argv[4], force_refresh=True)
"""


def test_kill_during_downloads_leaves_whole_files_only(tmp_path: Path) -> None:
    content = os.urandom(24 << 20)
    source = tmp_path / "big"
    source.write_bytes(content)
    cache_dir, destination = tmp_path / "cache", tmp_path / "dest.bin"
    with castore_server(tmp_path / "store") as url:
        name = Client(local_store=None, remote_url=url).put_file("/crash/big@77", source)
        for round_ in range(4):
            child = subprocess.Popen([sys.executable, "-c", CHILD, url, str(cache_dir), name, str(destination)])
            deadline = time.monotonic() + 20
            while not any((cache_dir / "tmp").glob("*")) and time.monotonic() < deadline:
                time.sleep(0.005)  # wait until a download is being written
            time.sleep(0.01 * round_)
            child.send_signal(signal.SIGKILL)
            child.wait()
            cached = cache_dir / "files" / "crash" / "big"
            for whole in (cached, destination):
                if whole.exists():
                    assert whole.read_bytes() == content  # complete, or not there at all
            if cached.exists():
                assert int(cached.stat().st_mtime) == 77
        # a later client serves a correct file, and cleaning removes the leftovers of the kills
        assert Client(cache_dir=cache_dir, remote_url=url).get_file(name, tmp_path / "after") == name
        assert (tmp_path / "after").read_bytes() == content
    leftovers = list((cache_dir / "tmp").glob("*"))
    assert leftovers  # the kills did land in the middle of downloads
    for leftover in leftovers:
        os.utime(leftover, (0, 0))  # make them look abandoned long ago
    LocalCache(cache_dir).clean(1 << 40)
    assert list((cache_dir / "tmp").glob("*")) == []
