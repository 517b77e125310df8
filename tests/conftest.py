import os
from pathlib import Path

import pytest

from tests.factories import UserFactory

pytest_plugins = ["tests.browser"]

PROJECT_DIR = Path(__file__).resolve().parent.parent
SHARED_DIR = Path(os.environ.get("MAILSETUP_SHARED_DIR") or PROJECT_DIR.parent / "shared")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED_DIR.is_dir():
        pytest.fail(f"The shared test data folder {SHARED_DIR} is missing (see README).")
    return SHARED_DIR


@pytest.fixture
def ispdb_dir(shared_dir) -> Path:
    return shared_dir / "ispdb"


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def builtin_providers(db):
    from providers.services import provider_load_builtins

    return provider_load_builtins()
