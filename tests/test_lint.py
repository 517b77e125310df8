"""ruff's verdict as a test, so pytest's exit code is the whole CI verdict."""

import shutil
import subprocess
import sys
from pathlib import Path

from mailsetup.settings import BASE_DIR

RUFF = shutil.which("ruff", path=str(Path(sys.executable).parent)) or "ruff"


def test_it_passes_ruff_check():
    result = subprocess.run([RUFF, "check", "."], cwd=BASE_DIR, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_it_is_formatted_by_ruff():
    result = subprocess.run(
        [RUFF, "format", "--check", "."], cwd=BASE_DIR, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout
