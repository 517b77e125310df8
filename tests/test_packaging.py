"""Every app of INSTALLED_APPS is in what the Docker image and the Python package hold.

No Docker engine runs here: the image's files are worked out from the Dockerfile's COPY
lines and the .dockerignore, matched as Docker does (the Docker SDK's own matcher). The
package is built for real (sdist, then the wheel from the sdist, as `python -m build`
does), offline, from a copy of the tree.
"""

import io
import json
import shlex
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from fnmatch import fnmatch
from importlib.metadata import packages_distributions
from pathlib import Path, PurePosixPath

from django.apps import apps
from django.conf import settings
from docker.utils.build import exclude_paths
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from setuptools import find_packages

ROOT = Path(settings.BASE_DIR)
# What the web, worker and beat containers need beside the apps' code.
IMAGE_NEEDS = ["manage.py", "templates/base.html", "static/vendor"]


def _is_local(name: str, path: Path) -> bool:
    # This tree's own, not one installed into .venv beneath it.
    return path.resolve() == (ROOT / name.replace(".", "/")).resolve()


def _local_apps() -> dict[str, list[str]]:
    """Each app that lives in this tree, and the project's own package (settings, URLs,
    Celery), with their source files (relative, POSIX)."""
    folders = {config.name: Path(config.path) for config in apps.get_app_configs()}
    folders = {name: path for name, path in folders.items() if _is_local(name, path)}
    project = settings.ROOT_URLCONF.split(".")[0]
    folders[project] = ROOT / project
    return {
        name: sorted(
            str(file.relative_to(ROOT).as_posix())
            for file in path.rglob("*.py")
            if "__pycache__" not in file.parts
        )
        for name, path in folders.items()
    }


def _app_data() -> list[str]:
    """The apps' files that are not Python (the platform table, read at start), which
    package discovery alone leaves out."""
    return sorted(
        str(file.relative_to(ROOT).as_posix())
        for app in _local_apps()
        for file in (ROOT / app).rglob("*")
        if file.is_file() and file.suffix not in {".py", ".pyc"} and "__pycache__" not in file.parts
    )


def _missing(files: set[str]) -> dict[str, list[str]]:
    """The apps some of whose files are not among `files`, with those files."""
    missing = {}
    for app, sources in _local_apps().items():
        absent = [source for source in sources if source not in files]
        if absent:
            missing[app] = absent
    return missing


# -- the image ----------------------------------------------------------------------


def _dockerignore(text: str) -> list[str]:
    # As the Docker SDK's build() reads the file.
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def _context(root: Path, ignore_text: str) -> set[str]:
    """The build context's files (not folders), relative to it."""
    return {
        path.replace("\\", "/")
        for path in exclude_paths(str(root), _dockerignore(ignore_text))
        if (root / path).is_file()
    }


def image_files(dockerfile: str, ignore_text: str, root: Path = ROOT) -> set[str]:
    """The files the image has under its WORKDIR, relative to it, from the COPY and ADD
    lines (a folder's contents go under the destination, as Docker copies them)."""
    context = _context(root, ignore_text)
    workdir = PurePosixPath("/")
    files: set[str] = set()
    parser = DockerfileParser(fileobj=io.BytesIO(dockerfile.encode()))
    for instruction in parser.structure:
        name, value = instruction["instruction"], instruction["value"]
        if name == "WORKDIR":
            workdir = workdir / value
        if name not in {"COPY", "ADD"}:
            continue
        args = json.loads(value) if value.startswith("[") else shlex.split(value)
        flags = [arg for arg in args if arg.startswith("--")]
        assert not any(flag.startswith("--from") for flag in flags), "a multi-stage build"
        *sources, target = [arg for arg in args if not arg.startswith("--")]
        destination = workdir / target
        for source in sources:
            source = source.strip("/") if source not in {".", "./", "/"} else ""
            for file in context:
                if source and (file == source or fnmatch(file, source)):
                    into_folder = target.endswith("/") or len(sources) > 1
                    placed = destination / PurePosixPath(file).name if into_folder else destination
                elif (
                    not source
                    or file.startswith(f"{source}/")
                    or fnmatch(file.split("/")[0], source)
                ):
                    inside = file[len(source) + 1 :] if source else file
                    placed = destination / inside
                else:
                    continue
                files.add(str(placed))
    prefix = f"{workdir}/"
    return {file.removeprefix(prefix) for file in files if file.startswith(prefix)}


def test_it_puts_every_installed_app_in_the_image():
    assert {"sending", "crm", "mailsetup"} <= set(_local_apps())
    files = image_files((ROOT / "Dockerfile").read_text(), (ROOT / ".dockerignore").read_text())
    assert _missing(files) == {}
    assert [data for data in _app_data() if data not in files] == []
    for needed in IMAGE_NEEDS:
        assert needed in files or any(f.startswith(f"{needed}/") for f in files), needed
    # Local state and secrets never enter the image.
    assert not [f for f in files if f.startswith(("var/", ".venv/", ".git/")) or f == ".env"]


def test_it_would_catch_an_app_the_image_leaves_out():
    # The Dockerfile as it was, one COPY per app and none for sending/.
    copied = ["mailsetup", "providers", "accounts", "sync", "sharing", "crm"]
    listed = "\n".join(f"COPY {name} {name}" for name in copied)
    dockerfile = f"FROM python:3.12-slim\nWORKDIR /app\n{listed}\nCOPY manage.py ./\n"
    missing = _missing(image_files(dockerfile, ""))
    # Every app it does not copy, apps added since included.
    assert set(missing) == set(_local_apps()) - set(copied)
    assert {"sending", "systemsettings"} <= set(missing)
    assert "sending/models.py" in missing["sending"]
    # Or the whole tree, with an app left out by the .dockerignore.
    whole = "FROM python:3.12-slim\nWORKDIR /app\nCOPY . .\n"
    assert set(_missing(image_files(whole, "sending\n.venv\n"))) == {"sending"}
    with_migrations = {app for app, files in _local_apps().items() if "/migrations/" in str(files)}
    assert set(_missing(image_files(whole, "**/migrations\n.venv\n"))) == with_migrations
    assert "sending" in with_migrations


def test_it_reads_copy_lines_as_docker_does(tmp_path):
    (tmp_path / "app" / "sub").mkdir(parents=True)
    for name in ["app/a.py", "app/sub/b.py", "one.txt", "two.txt", "skip.txt"]:
        (tmp_path / name).write_text("x")
    dockerfile = (
        "FROM x\nWORKDIR /srv\nCOPY app code\nCOPY one.txt two.txt ./\n"
        'COPY ["skip.txt", "kept.txt"]\nWORKDIR /elsewhere\nCOPY app app\nWORKDIR /srv\n'
    )
    assert image_files(dockerfile, "skip.txt", tmp_path) == {
        "code/a.py", "code/sub/b.py", "one.txt", "two.txt",
    }  # fmt: skip


# -- the package --------------------------------------------------------------------


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _discovered(find: dict, root: Path = ROOT) -> set[str]:
    """The .py files of the packages setuptools finds with a [tool.setuptools.packages.find]."""
    assert find.get("namespaces") is False, "namespace discovery would take in any folder"
    packages = find_packages(
        where=str(root), include=find.get("include", ["*"]), exclude=find.get("exclude", [])
    )
    return {
        str((root / package.replace(".", "/") / file.name).relative_to(root).as_posix())
        for package in packages
        for file in (root / package.replace(".", "/")).glob("*.py")
    }


def test_it_would_catch_an_app_the_package_leaves_out():
    included = ["mailsetup", "providers", "accounts", "sync", "sharing", "crm", "systemsettings"]
    old = {"namespaces": False, "include": [f"{name}*" for name in included]}
    # Every app it does not include, apps added since included.
    assert set(_missing(_discovered(old))) == set(_local_apps()) - set(included)
    assert "sending" in _missing(_discovered(old))
    assert _missing(_discovered(_pyproject()["tool"]["setuptools"]["packages"]["find"])) == {}


def test_it_builds_a_package_with_every_installed_app(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        # The caches too: the other test process may be writing ruff's while this copies.
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv",
            "var",
            "test-results",
            "__pycache__",
            "*.egg-info",
            "build",
            "dist",
            ".ruff_cache",
            ".pytest_cache",
        ),
    )
    out = tmp_path / "dist"
    # --no-isolation: the build uses this environment's setuptools, and nothing is fetched.
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert _missing(in_wheel) == {}
    assert _missing(in_sdist) == {}
    assert "providers/platforms.yaml" in _app_data()
    assert [data for data in _app_data() if data not in in_wheel] == []
    assert [data for data in _app_data() if data not in in_sdist] == []
    assert not [name for name in in_wheel if name.startswith(("tests/", "bench/"))]


def test_it_lists_the_distribution_of_every_third_party_app():
    wanted = {
        canonicalize_name(Requirement(r).name) for r in _pyproject()["project"]["dependencies"]
    }
    distributions = packages_distributions()
    for config in apps.get_app_configs():
        if _is_local(config.name, Path(config.path)):
            continue
        top = config.name.split(".")[0]
        provided = {canonicalize_name(name) for name in distributions.get(top, [])}
        assert provided & wanted, f"{config.name} comes from {provided or 'nothing installed'}"
