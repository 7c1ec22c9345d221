"""What an installed package needs: configs and kernel source inside the package (covered by package-data),
the build tool pinned, one version."""
from __future__ import annotations

import fnmatch
import os
import tomllib

import dnadiff
from conftest import REPO


def test_every_bundled_config_and_kernel_source_is_package_data():
    from dnadiff.config import CONFIG_DIR

    package = REPO / "dnadiff"
    assert CONFIG_DIR.resolve().is_relative_to(package.resolve()), "configs must live inside the package"
    assert (REPO / "configs").resolve() == CONFIG_DIR.resolve(), "the top-level configs/ shows the bundled ones"
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["dnadiff"]
    needed = [p for p in CONFIG_DIR.rglob("*") if p.is_file() and p.suffix in (".yaml", ".md")]
    needed += list((package / "ops").glob("*.cpp"))
    assert len(needed) > 10
    for path in needed:
        rel = path.resolve().relative_to(package.resolve()).as_posix()
        assert any(fnmatch.fnmatch(rel, pat) and rel.count("/") == pat.count("/") for pat in patterns), \
            f"{rel} would be missing from the wheel: add it to [tool.setuptools.package-data]"


def test_the_kernel_build_uses_the_ninja_this_package_depends_on(monkeypatch):
    import ninja

    from dnadiff.ops import cpu_scan

    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with cpu_scan._pinned_ninja():
        assert os.environ["PATH"].split(os.pathsep)[0] == str(ninja.BIN_DIR)
    assert os.environ["PATH"] == "/usr/bin:/bin"


def test_version_is_stated_once():
    text = (REPO / "pyproject.toml").read_text()
    meta = tomllib.loads(text)
    assert "version" not in meta["project"] and "version" in meta["project"]["dynamic"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "dnadiff.__version__"}
    assert dnadiff.__version__.count(".") == 2
