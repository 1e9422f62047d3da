"""Moving in from Filetracker: import a data folder or a server, or migrate live while serving.

* :mod:`.sources` — a Filetracker 2.x data folder, a 1.x plain folder, a running 2.x server.
* :mod:`.importer` — copies a source into a store: resumable, reports problems, verifies.
* :mod:`.live` — ``castore serve --migrate-from``: fetch on miss, remembered deletions.
"""

from __future__ import annotations

from .importer import Importer, ImportReport, Outcome
from .sources import FolderV1, FolderV2, ImportProblem, Item, ServerSource, Source, real_name

__all__ = [
    "FolderV1",
    "FolderV2",
    "ImportProblem",
    "ImportReport",
    "Importer",
    "Item",
    "Outcome",
    "ServerSource",
    "Source",
    "real_name",
]
