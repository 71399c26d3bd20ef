"""The Streamlit chat app (``pip install "daehwa[streamlit]"``, ``daehwa streamlit --server URL``; docs/clients.md).

``app.py`` is the script Streamlit runs; ``page.py`` draws the page through ``daehwa.client``; ``texts.py`` holds
its Korean and English sentences. Nothing here imports Streamlit at import time of the package.
"""

from __future__ import annotations

from pathlib import Path

APP_FILE = Path(__file__).with_name("app.py")
