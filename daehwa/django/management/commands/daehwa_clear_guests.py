"""``manage.py daehwa_clear_guests``: delete daehwa's guest users whose Django session has ended (docs/django.md)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...accounts import clear_guests


class Command(BaseCommand):
    help = (
        "Delete daehwa's guest users (django-guest-...) whose Django session no longer exists or has expired, with "
        "their conversations. Run it after clearsessions (e.g. daily: manage.py clearsessions && manage.py "
        "daehwa_clear_guests)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--keep-minutes",
            type=float,
            default=60,
            help="Keep guests active in the last N minutes, whatever their session (default 60; 0 keeps none): "
            "a guest without a session may still have its room open.",
        )
        parser.add_argument("--dry-run", action="store_true", help="List the guests that would be deleted.")

    def handle(self, *args: Any, keep_minutes: float, dry_run: bool, **options: Any) -> None:
        try:
            names = clear_guests(keep_minutes=keep_minutes, dry_run=dry_run)
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        for name in names:
            self.stdout.write(name if dry_run else f"deleted {name}")
        verb = "Would delete" if dry_run else "Deleted"
        self.stdout.write(f"{verb} {len(names)} guest user(s) whose session has ended.")
