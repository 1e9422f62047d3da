"""An OIOIOI site switching to the bridge keeps its migrations: ``makemigrations --check`` finds no change.

OIOIOI has 19 migrations naming ``oioioi.filetracker.fields.FileField``. The README's
Django section tells a site to keep that module as one subclass of the bridge's field;
this test runs that advice for real in a copy of ``tests/bridge/oioioi_site``: the first
migration is made with OIOIOI's field, then the module is replaced by the README's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .test_readme_django import ROOT, readme_snippets

SITE = Path(__file__).resolve().parent / "oioioi_site"

OIOIOI_FIELD = '''
from django.db.models.fields import files


class FileField(files.FileField):
    """OIOIOI's field as migrations see it: Django's, max_length 255 by default, no deconstruct of its own."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("max_length", 255)
        super().__init__(*args, **kwargs)
'''

RE_EXPORT = "from django_bridge.fields import FileField  # noqa: F401\n"

SETTINGS = '''
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "oioioi-migrations"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "django_bridge", "oioioi.problems"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}
STORAGES = {"default": {"BACKEND": "django_bridge.storage.FiletrackerStorage"}}
CASTORE_ROOT = BASE_DIR / "castore-data"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
'''


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A copy of the stand-in site, its fields module still OIOIOI's, its first migration made."""
    site = tmp_path / "site"
    shutil.copytree(SITE, site)
    (site / "site_settings.py").write_text(SETTINGS)
    (site / "oioioi" / "filetracker").mkdir()
    (site / "oioioi" / "filetracker" / "__init__.py").write_text("")
    (site / "oioioi" / "filetracker" / "fields.py").write_text(OIOIOI_FIELD)
    made = manage(site, "makemigrations", "problems")
    assert made.returncode == 0, made.stdout + made.stderr
    migration = (site / "oioioi" / "problems" / "migrations" / "0001_initial.py").read_text()
    # the form of OIOIOI's own migrations (e.g. its problems/migrations)
    assert ("oioioi.filetracker.fields.FileField(max_length=255, "
            "upload_to=oioioi.problems.models.make_problem_filename, verbose_name='content')") in migration
    return site


def manage(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "site_settings",
           "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    return subprocess.run([sys.executable, "-m", "django", *args], cwd=site, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def test_the_readme_s_fields_module_keeps_oioioi_s_migrations_unchanged(site: Path) -> None:
    (site / "oioioi" / "filetracker" / "fields.py").write_text(readme_snippets()["oioioi/filetracker/fields.py"])
    checked = manage(site, "makemigrations", "--check", "--dry-run")
    assert checked.returncode == 0 and "No changes detected" in checked.stdout, checked.stdout + checked.stderr
    used = manage(site, "shell", "-c", "from oioioi.problems.models import ProblemStatement as S\n"
                                       "from django_bridge.fields import FieldFile\n"
                                       "print(S._meta.get_field('content').attr_class is FieldFile)")
    assert used.stdout.strip().splitlines()[-1] == "True", used.stdout + used.stderr  # the bridge's field, under OIOIOI's name


NEW_FIELD = '''

class ProblemAttachment(models.Model):
    content = FileField(upload_to=make_problem_filename, verbose_name="content")
'''


@pytest.mark.parametrize(("module", "path"), [
    ("readme", "oioioi.filetracker.fields.FileField"),
    (RE_EXPORT, "django_bridge.fields.FileField"),
], ids=["readme-subclass", "re-export"])
def test_new_migrations_name_the_field_by_its_class_s_own_module(site: Path, module: str, path: str) -> None:
    """Why the README says "a subclass": a re-export passes ``--check`` too (the old migrations
    import the re-exported class), but new migrations would name ``django_bridge.fields``,
    so a site's migrations would name the field two ways."""
    text = readme_snippets()["oioioi/filetracker/fields.py"] if module == "readme" else module
    (site / "oioioi" / "filetracker" / "fields.py").write_text(text)
    checked = manage(site, "makemigrations", "--check", "--dry-run")
    assert checked.returncode == 0 and "No changes detected" in checked.stdout, checked.stdout + checked.stderr
    with (site / "oioioi" / "problems" / "models.py").open("a") as models:
        models.write(NEW_FIELD)
    new = manage(site, "makemigrations", "--dry-run", "-v", "3")
    assert new.returncode == 0 and "Create model ProblemAttachment" in new.stdout, new.stdout + new.stderr
    assert f"{path}(max_length=255, upload_to=oioioi.problems.models.make_problem_filename" in new.stdout
