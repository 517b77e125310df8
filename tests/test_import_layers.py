"""The import contracts of pyproject.toml ([tool.importlinter]) hold: `lint-imports`, as
a developer runs it."""

import copy
import importlib.util
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest
from importlinter import configuration
from importlinter.contracts.forbidden import ForbiddenContract
from importlinter.contracts.layers import LayersContract

ROOT = Path(__file__).resolve().parent.parent


def _lint_imports(*args: str) -> subprocess.CompletedProcess:
    command = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert command, "import-linter is a test dependency (pyproject.toml)"
    return subprocess.run(
        [command, "--no-cache", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_it_keeps_the_layering_contracts():
    result = _lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert " kept, 0 broken." in result.stdout


def test_it_fails_on_an_import_that_breaks_a_contract(tmp_path):
    # The same tool on a contract the code does not keep (sharing's selectors read
    # sync's models): it must say so, or the test above proves nothing.
    config = tmp_path / "contracts.toml"
    config.write_text(
        '[tool.importlinter]\nroot_packages = ["sharing", "sync"]\n\n'
        "[[tool.importlinter.contracts]]\n"
        'name = "sharing without sync"\ntype = "forbidden"\n'
        'source_modules = ["sharing"]\nforbidden_modules = ["sync"]\n'
    )
    result = _lint_imports("--config", str(config))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "sharing.selectors -> sync.models" in result.stdout


# -- The mailbox apps' layers (issue 16) ------------------------------------------------
# The pages are the top layer; below them sending, sharing, sync, crm and accounts, in
# that order (pyproject.toml's "layers" contract). These tests read the import graph
# itself (grimp, which import-linter is built on) from this checkout.

APPS = ["sending", "sharing", "sync", "crm", "accounts"]


def _config() -> dict:
    # The contracts below run in this process: import-linter's own settings (its timer,
    # its graph builder) as its command line sets them.
    configuration.configure()
    with (ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)["tool"]["importlinter"]


def _graph():
    # This checkout's packages, not an installed copy's (grimp finds them on sys.path).
    assert Path(importlib.util.find_spec("accounts").origin).is_relative_to(ROOT)
    return grimp.build_graph(*_config()["root_packages"], cache_dir=None)


def _is_page(module: str) -> bool:
    parts = module.split(".")
    return len(parts) >= 2 and parts[1] in {"views", "urls"}


def _layers_contract() -> LayersContract:
    config = _config()
    layered = [c for c in config["contracts"] if c["type"] == "layers"]
    assert len(layered) == 1, "one contract layers the mailbox apps"
    options = {key: value for key, value in layered[0].items() if key not in {"name", "type"}}
    assert options["layers"] == APPS
    return LayersContract(
        name=layered[0]["name"],
        session_options={"root_packages": config["root_packages"]},
        contract_options=options,
    )


def test_it_lets_no_module_but_a_page_import_a_page():
    # The layers contract sets the pages aside ("*.views -> **"): that holds only while
    # nothing below them imports one.
    graph = _graph()
    wrong = sorted(
        f"{importer} -> {page}"
        for page in graph.modules
        if _is_page(page)
        for importer in graph.find_modules_that_directly_import(page)
        if not _is_page(importer)
    )
    assert wrong == []


@pytest.mark.parametrize(
    ("lower", "upper"),
    [(APPS[i], APPS[j]) for i in range(len(APPS)) for j in range(i)],
)
def test_it_fails_on_any_new_import_loop_between_the_apps(lower, upper):
    # Every upper app already reads the lower one (or one between): one import back,
    # from any module that is not a page, closes a loop, and the contract says so.
    contract = _layers_contract()
    graph = _graph()
    assert contract.check(copy.deepcopy(graph), verbose=False).kept
    graph.add_import(importer=f"{lower}.models", imported=f"{upper}.models")
    assert not contract.check(graph, verbose=False).kept


def _loops_across_apps(graph) -> set[str]:
    """Chains of modules (pages aside) that leave an app and come back to where they
    started."""
    modules = {m for m in graph.modules if m.split(".")[0] in APPS and not _is_page(m)}
    loops = set()
    for module in sorted(modules):
        for imported in graph.find_modules_directly_imported_by(module) & modules:
            if imported.split(".")[0] == module.split(".")[0]:
                continue
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back is not None:
                loops.add(" -> ".join((module, *back)))
    return loops


def test_it_has_no_import_loop_through_modules_of_two_apps():
    # What the contract sets aside (crm's timelines read sync and sharing for crm's pages)
    # must not hide a loop of modules either: no module of one app imports, however
    # indirectly, a module of another app that imports it back.
    assert _loops_across_apps(_graph()) == set()


def test_it_finds_a_loop_of_modules_when_there_is_one():
    graph = _graph()
    graph.add_import(importer="crm.models", imported="sync.models")
    assert "crm.models -> sync.models -> crm.models" in _loops_across_apps(graph)


def test_it_fails_when_a_page_imports_a_task():
    # Views never queue tasks; the services do, once their transaction commits.
    config = _config()
    (queueing,) = [c for c in config["contracts"] if c["name"].startswith("The pages queue")]
    contract = ForbiddenContract(
        name=queueing["name"],
        session_options={"root_packages": config["root_packages"]},
        # As import-linter reads TOML: a boolean becomes the word it reads in INI files.
        contract_options={
            key: str(value) if isinstance(value, bool) else value
            for key, value in queueing.items()
            if key not in {"name", "type"}
        },
    )
    graph = _graph()
    assert contract.check(copy.deepcopy(graph), verbose=False).kept
    graph.add_import(importer="accounts.views.settings", imported="sync.tasks")
    assert not contract.check(graph, verbose=False).kept


# Entry points above every app: the pages (views, urls, the admin's), the management
# commands and the migrations. What remains is each app's own code.
ENTRY_POINTS = {"views", "urls", "admin", "management", "migrations"}


def _package_loops(graph) -> list[str]:
    """Pairs of root packages that import each other, however indirectly, through
    modules that are not entry points: one import for each direction as the proof."""
    edges: dict[tuple[str, str], str] = {}
    for module in graph.modules:
        if module.partition(".")[2].split(".")[0] in ENTRY_POINTS:
            continue
        for imported in graph.find_modules_directly_imported_by(module):
            if imported.partition(".")[2].split(".")[0] in ENTRY_POINTS:
                continue
            pair = (module.split(".")[0], imported.split(".")[0])
            if pair[0] != pair[1]:
                edges.setdefault(pair, f"{module} -> {imported}")
    above: dict[str, set[str]] = {}
    for importer, imported in edges:
        above.setdefault(importer, set()).add(imported)

    def reaches(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in above.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    return sorted(f"{edges[a, b]} (and back)" for a, b in edges if a in reaches(b))


def test_it_has_no_two_apps_importing_each_other():
    # The rule in its own words, over every root package: the layers contract
    # covers the mailbox apps, this also mail, providers, push, health, mailsetup.
    assert _package_loops(_graph()) == []


def test_it_finds_two_apps_importing_each_other():
    graph = _graph()
    graph.add_import(importer="providers.models", imported="mail.registry")
    assert "providers.models -> mail.registry (and back)" in _package_loops(graph)
