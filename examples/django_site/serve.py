#!/usr/bin/env python
"""Start the example site in one command: migrate, create the demo user, run uvicorn.

    python examples/django_site/serve.py                              # daehwa's default model (the embedded one)
    python examples/django_site/serve.py --model local/qwen2.5-0.5b  # a smaller embedded model
    python examples/django_site/serve.py --upstream http://127.0.0.1:11434/v1 --model llama3.2  # OpenAI-compatible

Then open http://127.0.0.1:8000/ and log in as ``demo`` / ``daehwa-demo`` (or chat as a guest at /guest/).
Every other daehwa setting is a ``DAEHWA_*`` environment variable, as for ``daehwa serve``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", help="daehwa model name (DAEHWA_DEFAULT_MODEL), e.g. local/qwen2.5-0.5b")
    parser.add_argument("--upstream", help="base URL of an OpenAI-compatible server to use as the model")
    parser.add_argument("--api-key-env", help="with --upstream: the environment variable holding its API key")
    args = parser.parse_args()

    sys.path.insert(0, str(HERE))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tutor_site.settings")
    data = Path(os.environ.setdefault("DJANGO_SITE_DATA", str(HERE / "var")))
    data.mkdir(parents=True, exist_ok=True)
    if args.upstream:
        providers = data / "providers.toml"
        key = f'api_key_env = "{args.api_key_env}"\n' if args.api_key_env else ""
        providers.write_text(f'[providers.upstream]\ntype = "openai"\nbase_url = "{args.upstream}"\n{key}')
        os.environ["DAEHWA_PROVIDERS_FILE"] = str(providers)
        os.environ["DAEHWA_DEFAULT_MODEL"] = f"upstream/{args.model}" if args.model else "upstream"
    elif args.model:
        os.environ["DAEHWA_DEFAULT_MODEL"] = args.model

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    _demo_user()

    import uvicorn

    print(f"daehwa Django example: http://{args.host}:{args.port}/  (log in as demo / {_demo_password()})", flush=True)
    uvicorn.run("tutor_site.asgi:application", host=args.host, port=args.port, lifespan="on", log_level="info")


def _demo_password() -> str:
    return os.environ.get("DJANGO_DEMO_PASSWORD", "daehwa-demo")


def _demo_user() -> None:
    from django.contrib.auth import get_user_model

    users = get_user_model()
    if not users.objects.filter(username="demo").exists():
        users.objects.create_user("demo", password=_demo_password())


if __name__ == "__main__":
    main()
