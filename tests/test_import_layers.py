"""The import contracts of pyproject.toml ([tool.importlinter]) hold: `lint-imports`, as
a developer runs it."""

import shutil
import subprocess
import sys
from pathlib import Path

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
