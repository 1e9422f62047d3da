"""Files a server's master hands its forked workers: unlinked, named by a descriptor in a variable.

Made before the workers fork (:func:`share_file`), the file has no name on disk (nothing
is left behind, whatever ends the server) and every worker inherits its descriptor, whose
number travels in an environment variable. A worker takes it back with
:func:`inherited_file`, which refuses anything else the number may name by then (the
variable passed on through an ``exec``, say). The live migration locks bytes of one
(a path is fetched once in all); ``serve --compact-when-idle`` maps one as a shared page.
"""

from __future__ import annotations

import os
import stat
import tempfile

__all__ = ["inherited_file", "share_file"]


def share_file(variable: str, *, prefix: str, size: int = 0) -> None:
    """In the master, before forking: make the unlinked file of ``size`` bytes named by ``variable`` (once)."""
    if variable not in os.environ:
        fd, name = tempfile.mkstemp(prefix=prefix)
        os.unlink(name)
        if size:
            os.ftruncate(fd, size)
        os.environ[variable] = str(fd)


def inherited_file(variable: str, *, size: int = 0) -> int | None:
    """The descriptor :func:`share_file` made, if ``variable`` names an unlinked regular file of ``size`` bytes at least."""
    value = os.environ.get(variable, "")
    if not value.isdigit():
        return None
    try:
        info = os.fstat(int(value))
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 0 or info.st_size < size:
        return None
    return int(value)
