"""Settings of the example site: Django's auth and sessions, Channels, and daehwa.django.

daehwa itself is configured by ``DAEHWA`` below and by ``DAEHWA_*`` environment variables (``serve.py --model`` and
``--upstream`` set those), exactly as for ``daehwa serve``.
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
#: Where the example keeps its state: Django's database, daehwa's store and providers file.
VAR = Path(os.environ.get("DJANGO_SITE_DATA", BASE_DIR / "var"))

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret-change-me")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "daehwa.django",
    "tutor",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "tutor_site.urls"
ASGI_APPLICATION = "tutor_site.asgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
            ]
        },
    }
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": VAR / "django.db"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "ko"
TIME_ZONE = "Asia/Seoul"
USE_TZ = True
STATIC_URL = "/static/"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "tutor"
LOGOUT_REDIRECT_URL = "login"

# daehwa's settings (the names of DAEHWA_* without the prefix); DAEHWA_* environment variables fill in the rest.
DAEHWA = {"DATA_DIR": os.environ.get("DAEHWA_DATA_DIR", str(VAR))}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"daehwa": {"handlers": ["console"], "level": os.environ.get("DJANGO_SITE_LOG_LEVEL", "INFO")}},
}
