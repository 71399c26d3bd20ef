"""The Django app: it holds the process's daehwa runtime (the services every consumer of this process shares)."""

from __future__ import annotations

from django.apps import AppConfig

from .runtime import Runtime


class DaehwaConfig(AppConfig):
    name = "daehwa.django"
    label = "daehwa"  # templates and static files live under daehwa/, and "django" would clash with everything
    verbose_name = "daehwa"

    def __init__(self, app_name: str, app_module: object) -> None:
        super().__init__(app_name, app_module)
        self.runtime = Runtime()
