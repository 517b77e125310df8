import os
import shutil
import subprocess

import pytest
import yaml

from mailsetup.settings import BASE_DIR


def _compose() -> list[str]:
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("Neither `docker compose` nor docker-compose is installed (make test installs it).")


def _config(env, tmp_path):
    # An empty --env-file keeps a developer's own .env out of the test.
    empty = tmp_path / "empty.env"
    empty.write_text("")
    return subprocess.run(
        [*_compose(), "--env-file", str(empty), "config"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_is_accepted_by_docker_compose_config(tmp_path):
    env = {**os.environ, "SECRET_KEY": "s", "CREDENTIAL_KEYS": "k", "POSTGRES_PASSWORD": "p"}
    result = _config(env, tmp_path)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert set(config["services"]) == {"web", "worker", "beat", "postgres", "redis"}
    for name in ("web", "worker", "beat"):
        environment = config["services"][name]["environment"]
        assert environment["CELERY_BROKER_URL"] == "redis://redis:6379/0"
        assert environment["DATABASE_URL"].startswith("postgres://")
        assert environment["DEBUG"] == "false"
    assert "gunicorn mailsetup.wsgi" in str(config["services"]["web"]["command"])


def test_it_refuses_to_render_without_the_secrets(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "CREDENTIAL_KEYS"}}
    env["POSTGRES_PASSWORD"] = "p"
    result = _config(env, tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr
