"""castore.client.cache.replaced_whole: a destination is replaced whole and atomically."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_replacing_a_file_never_leaves_its_name_missing(tmp_path: Path) -> None:
    """A reader polling the destination while it is replaced 300 times always finds a whole file."""
    import threading

    from castore.client.cache import replaced_whole

    destination = tmp_path / "input.txt"
    destination.write_bytes(b"0" * 1000)
    stop = threading.Event()
    seen: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                data = destination.read_bytes()
            except FileNotFoundError:
                seen.append("missing")
                continue
            if len(data) != 1000 or len(set(data)) != 1:
                seen.append("torn")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(300):
            with replaced_whole(destination) as temporary:
                temporary.write_bytes(str(i % 10).encode() * 1000)
    finally:
        stop.set()
        thread.join()
    assert seen == []
    assert destination.read_bytes() == b"9" * 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.txt"]  # nothing left aside


def test_replacing_keeps_a_folder_or_link_at_the_destination_as_os_replace_would(tmp_path: Path) -> None:
    from castore.client.cache import replaced_whole

    target = tmp_path / "real.txt"
    target.write_bytes(b"old")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    with replaced_whole(link) as temporary:
        temporary.write_bytes(b"new")
    assert not link.is_symlink() and link.read_bytes() == b"new"
    assert target.read_bytes() == b"old"  # the link is replaced, its target untouched
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(OSError), replaced_whole(folder) as temporary:
        temporary.write_bytes(b"x")
    assert folder.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "link.txt", "real.txt"]
