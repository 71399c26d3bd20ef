"""Django settings for tests/test_django.py, applied once per test process (Django cannot be configured twice).

Only the test modules of daehwa.django import this; the rest of the suite never sees Django.
"""

from __future__ import annotations

import django
from django.conf import settings

SETTINGS = {
    "SECRET_KEY": "daehwa-tests-only",
    "INSTALLED_APPS": [
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "django.contrib.staticfiles",
        "channels",
        "daehwa.django",
    ],
    # In memory, shared by the threads of the process (sync_to_async runs the ORM in another thread than the test).
    "DATABASES": {
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "file:daehwa-django-tests?mode=memory&cache=shared"}
    },
    "TEMPLATES": [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}],
    "STATIC_URL": "/static/",
    "USE_TZ": True,
    "LANGUAGE_CODE": "ko",
}


_migrated = False


def configure() -> None:
    """Configure Django for the tests, unless this process already did."""
    if not settings.configured:
        settings.configure(**SETTINGS)
        django.setup()


def migrate() -> None:
    """Create the tables of the installed apps (users, sessions), once per process."""
    global _migrated
    if not _migrated:
        from django.core.management import call_command

        call_command("migrate", run_syncdb=True, verbosity=0)
        _migrated = True
