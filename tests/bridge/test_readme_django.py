"""The README's "Use it from your Django project" walk-through, run as written in a throw-away project.

The snippets are taken from README.md by their ``<!-- readme-django: NAME -->`` markers, so
the README cannot drift from what works.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BASE_SETTINGS = '''
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "readme-walk-through"
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "myapp"]
ROOT_URLCONF = "proj.urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
'''


def readme_snippets() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    found = dict(re.findall(r"<!-- readme-django: (\S+) -->\n```\w*\n(.*?)```", text, re.DOTALL))
    assert set(found) == {"settings.py", "urls.py", "models.py", "use", "cleanup", "oioioi-call-sites",
                          "oioioi/filetracker/fields.py"}, sorted(found)  # the last: test_oioioi_migrations.py
    return found


def test_the_readme_walk_through_works_as_written(tmp_path: Path) -> None:
    snippets = readme_snippets()
    project = tmp_path / "site"
    (project / "proj").mkdir(parents=True)
    (project / "myapp").mkdir()
    (project / "proj" / "__init__.py").write_text("")
    (project / "proj" / "settings.py").write_text(BASE_SETTINGS + snippets["settings.py"])
    (project / "proj" / "urls.py").write_text(snippets["urls.py"])
    (project / "myapp" / "__init__.py").write_text("")
    (project / "myapp" / "models.py").write_text(snippets["models.py"])
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "proj.settings",
           "PYTHONPATH": os.pathsep.join([str(project), str(ROOT)])}

    def run(*args: str) -> str:
        done = subprocess.run(list(args), cwd=project, env=env, capture_output=True, text=True, timeout=300,
                              check=False)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def django(*args: str) -> str:
        return run(sys.executable, "-m", "django", *args)

    django("check")
    django("migrate", "--run-syncdb", "-v", "0")
    used = django("shell", "-c", snippets["use"])
    assert re.search(r"problems/1/tests/1a\.in@\d+", used) and "b'1 2\\n'" in used, used
    # the embedded store is where the README says, and another process sees the file
    assert (project / "castore-data" / "metadata.sqlite3").exists()
    later = django("shell", "-c", "from myapp.models import Test\n"
                                  "from django.test import Client\n"
                                  "f = Test.objects.get().input_file\n"
                                  "print(f.read(), f.url, Client().get(f.url).status_code)")
    assert re.search(r"^b'1 2\\n' /files/file/problems/1/tests/1a\.in@\d+/ 403$", later, re.MULTILINE), later

    django("shell", "-c", "from django.core.files.base import ContentFile\n"
                          "from myapp.models import Test\n"
                          "Test.objects.get().input_file.save('1b.in', ContentFile(b'3 4'))")  # 1a.in: unused
    time.sleep(1.1)  # collectgarbage --days 0 takes versions older than now, in whole seconds
    for line in snippets["cleanup"].strip().splitlines():
        words = line.split()
        if words[:2] == ["python", "manage.py"]:
            django(*words[2:])
        else:
            assert words[0] == "castore", line
            run(sys.executable, "-m", "castore", *words[1:])
    usage = json.loads(run(sys.executable, "-m", "castore", "--root", "castore-data", "--json", "du"))
    assert usage["files"] == 1 and usage["blobs"] == 1 and usage["unreferenced_blobs"] == 0, usage

    # "Switching an OIOIOI site": OIOIOI's call sites, with the same model
    called = django("shell", "-c", snippets["oioioi-call-sites"])
    assert called.splitlines()[-2:] == ["['index.html']", "d/e.txt"], called
