"""The Django app: it holds the process's daehwa runtime (the services every consumer of this process shares)."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from .runtime import Runtime, daehwa_settings


class DaehwaConfig(AppConfig):
    name = "daehwa.django"
    label = "daehwa"  # templates and static files live under daehwa/, and "django" would clash with everything
    verbose_name = "daehwa"

    def __init__(self, app_name: str, app_module: object) -> None:
        super().__init__(app_name, app_module)
        self.runtime = Runtime()

    def ready(self) -> None:
        from .accounts import connect_user_deletion

        checks.register(check_daehwa_settings)
        connect_user_deletion()  # deleting a Django user deletes its daehwa user and data


def check_daehwa_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """``manage.py check``: settings.DAEHWA is read as the consumers will read it, so a typo shows at deploy time."""
    try:
        daehwa_settings()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), hint="See docs/django.md, 'Set up'.", id="daehwa.E001")]
    return []
