"""Settings of the small Django project the bridge tests run in (pytest-django)."""

import atexit
import shutil
import tempfile
from pathlib import Path

BASE_DIR = Path(tempfile.mkdtemp(prefix="castore-django-tests-"))
atexit.register(shutil.rmtree, BASE_DIR, ignore_errors=True)  # one per run, gone with the run
SECRET_KEY = "tests-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "Europe/Warsaw"
ALLOWED_HOSTS = ["testserver"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django_bridge",
    "tests.bridge.testapp",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "tests.bridge.urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(BASE_DIR / "db.sqlite3")}}
STORAGES = {
    "default": {"BACKEND": "django_bridge.storage.FiletrackerStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
FILETRACKER_CLIENT_FACTORY = "django_bridge.client.memory_store_factory"
CASTORE_ROOT = str(BASE_DIR / "castore-data")
FILE_UPLOAD_TEMP_DIR = str(BASE_DIR)
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
