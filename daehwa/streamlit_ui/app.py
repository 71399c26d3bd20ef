"""The script ``streamlit run`` runs (``daehwa streamlit --server URL``); the app itself is ``page.py``."""

from daehwa.streamlit_ui.page import run

run()
