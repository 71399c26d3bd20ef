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
    "DATABASES": {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    "TEMPLATES": [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}],
    "STATIC_URL": "/static/",
    "USE_TZ": True,
    "LANGUAGE_CODE": "ko",
}


def configure() -> None:
    """Configure Django for the tests, unless this process already did."""
    if not settings.configured:
        settings.configure(**SETTINGS)
        django.setup()
