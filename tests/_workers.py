"""Code run in child processes by the crash and multi-process tests."""

from __future__ import annotations

import random
from pathlib import Path

from castore.opening import open_store
from castore.store import Store


def content_for(path: str, version: int, size: int | None = None) -> bytes:
    """Deterministic content of ``path@version``: equal versions always carry equal bytes.

    Without ``size``, the size too is drawn from the name: small, inline or large.
    """
    rng = random.Random(f"{path}@{version}")
    if size is None:
        size = rng.choice([10, 5_000, 200_000]) + rng.randrange(1000)
    return rng.randbytes(size)


def _open(where: tuple[str, str]) -> Store:
    """Open the store at ``(metadata URL, blobs URL)``, as another process would."""
    return open_store(metadata=where[0], blobs=where[1])


def put_forever(where: tuple[str, str], size: int, ready: object) -> None:
    """Put large contents in a loop until killed; set ``ready`` after the first put."""
    rng = random.Random(where[0])
    noise = rng.randbytes(size)
    text = b"".join(b"%d %d\n" % (rng.randrange(10**9), rng.randrange(1000)) for _ in range(size // 14))
    with _open(where) as store:
        version = 0
        while True:
            version += 1
            path = f"/crash/{version % 5}"
            # Alternate incompressible and compressible contents, and two source kinds;
            # the version header makes every content distinct.
            data = b"%d\n" % version + (noise if version % 2 else text)
            store.put(path, data if version % 3 else memoryview(data), version=version)
            if version == 1:
                ready.set()  # type: ignore[attr-defined]
            if version % 7 == 0:
                store.delete(f"/crash/{(version + 1) % 5}")
                store.collect_garbage(staging_grace=0)


def put_random_versions(where: tuple[str, str], seed: int, paths: int, puts: int, log: str) -> None:
    """Put ``puts`` times to random paths with random versions; log what was attempted."""
    rng = random.Random(seed)
    attempted = []
    with _open(where) as store:
        for _ in range(puts):
            path = f"/mp/{rng.randrange(paths)}"
            version = rng.randrange(1_000)
            store.put(path, content_for(path, version), version=version)
            attempted.append(f"{path} {version}")
    Path(log).write_text("\n".join(attempted))

