"""``manage.py collectgarbage``: delete store files no FileField row references (replaces OIOIOI's).

Only files below the storage's prefix, older than ``--days``, and inside a top-level
folder that at least one FileField value uses (``problems/``, ``submissions/``, ...) are
candidates: folders Django does not manage, such as sioworkers' ``/sandboxes`` or
scratch ``/eval`` files, are left alone unless ``--all-folders`` is given. Each file is
deleted at the version seen, so a file re-uploaded meanwhile survives. ``--dry-run``
lists the files it would delete (``-v 2`` lists them while deleting too; ``-v 0`` prints nothing).
"""

from __future__ import annotations

import time
from typing import Any

from django.apps import apps
from django.core.files.storage import default_storage
from django.core.management.base import BaseCommand, CommandParser
from django.db import models

from ...filename import FiletrackerFilename, split_versioned
from ...storage import FiletrackerStorage, is_missing


def _file_fields(storage: FiletrackerStorage) -> list[tuple[type[models.Model], models.FileField]]:
    """Every (model, FileField) whose storage puts files in the same place as ``storage``."""
    found = []
    for model in apps.get_models():
        for field in model._meta.get_fields():
            if isinstance(field, models.FileField) and getattr(field.storage, "prefix", None) == storage.prefix:
                found.append((model, field))
    return found


def referenced_paths(storage: FiletrackerStorage) -> set[str]:
    """Store paths (unversioned) that some FileField row names."""
    paths = set()
    for model, field in _file_fields(storage):
        names = model._default_manager.exclude(**{field.attname: ""}).exclude(**{f"{field.attname}__isnull": True})
        for name in names.values_list(field.attname, flat=True).iterator(chunk_size=2000):
            try:
                path = storage._make_filetracker_path(str(FiletrackerFilename(name)))
            except ValueError:
                continue  # a malformed name in the database cannot name a stored file
            paths.add(split_versioned(path)[0])
    return paths


class Command(BaseCommand):
    help = "Delete stored files that no FileField references and that are older than --days."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("-d", "--days", type=float, default=30.0,
                            help="Only files whose version is older than this many days (default 30).")
        parser.add_argument("--dry-run", "-p", "--pretend", action="store_true", dest="dry_run",
                            help="List the files that would be deleted (NAME@VERSION, one a line); delete nothing.")
        parser.add_argument("--all-folders", action="store_true",
                            help="Also consider top-level folders no FileField value uses (e.g. /sandboxes).")

    def handle(self, *args: Any, days: float, dry_run: bool, all_folders: bool, **options: Any) -> None:
        storage = default_storage
        if not isinstance(storage, FiletrackerStorage):
            storage = FiletrackerStorage()
        referenced = referenced_paths(storage)
        base = storage.prefix.rstrip("/")
        folders = {p[len(base) + 1:].split("/", 1)[0] for p in referenced}
        cutoff = time.time() - days * 86400
        client = storage.client
        doomed: list[tuple[str, int]] = []
        for relative in client.list_remote_files(subpath=base or "/"):
            path = f"{base}/{relative}"
            if path in referenced or (not all_folders and relative.split("/", 1)[0] not in folders):
                continue
            try:
                version = int(client.file_version(path))
            except Exception as e:
                if is_missing(e):
                    continue  # deleted meanwhile
                raise
            if version < cutoff:
                doomed.append((path, version))
        verbosity = options.get("verbosity", 1)
        if not doomed:
            if verbosity >= 1:
                self.stdout.write("No files to delete.")
            return
        if verbosity >= 1:
            self.stdout.write(f"{'Would delete' if dry_run else 'Deleting'} {len(doomed)} file(s).")
        for path, version in doomed:
            if verbosity >= (1 if dry_run else 2):  # a dry run is for reading what would go
                self.stdout.write(f"  {path}@{version}")
            if not dry_run:
                # at that version: a newer one (a re-upload) survives; a missing file is no error
                storage.delete(f"{storage._cut_prefix(path)}@{version}")
