import os
import shutil
import subprocess
import sys

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
    assert set(config["services"]) == {"web", "worker", "beat", "listener", "postgres", "redis"}
    for name in ("web", "worker", "beat", "listener"):
        environment = config["services"][name]["environment"]
        assert environment["CELERY_BROKER_URL"] == "redis://redis:6379/0"
        assert environment["DATABASE_URL"].startswith("postgres://")
        assert environment["DEBUG"] == "false"
    web = str(config["services"]["web"]["command"])
    assert "gunicorn mailsetup.wsgi" in web and "--timeout" not in web
    assert "mail_listener" in str(config["services"]["listener"]["command"])


@pytest.mark.parametrize("connect", [None, "40"])
def test_it_gives_gunicorn_s_workers_longer_than_the_longest_sign_in(monkeypatch, connect):
    # Past gunicorn's default 30 s the wizard's sign-in check (IMAP then SMTP, each up to
    # 3 x MAIL_CONNECT_TIMEOUT, after an OAuth token exchange) lost its worker.
    import runpy

    if connect:
        monkeypatch.setenv("MAIL_CONNECT_TIMEOUT_SECONDS", connect)
    seconds = int(connect or 15)
    timeout = runpy.run_path(str(BASE_DIR / "gunicorn.conf.py"))["timeout"]
    assert timeout > (2 + 2 * 3) * seconds
    assert "--timeout" not in (BASE_DIR / "Dockerfile").read_text()


def test_it_refuses_to_render_without_the_secrets(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "CREDENTIAL_KEYS"}}
    env["POSTGRES_PASSWORD"] = "p"
    result = _config(env, tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile, continuation lines joined."""
    text = (BASE_DIR / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def test_it_builds_an_image_whose_user_can_write_the_media_volume(tmp_path):
    """Issue 15, point 10: the volume on MEDIA_ROOT was created by Docker for root, and
    the app's user could not write attachments there. A named volume starts as a copy of
    the image's directory, owner included: the directory must exist in the image,
    owned by the user the app runs as."""
    import shlex

    env = {**os.environ, "SECRET_KEY": "s", "CREDENTIAL_KEYS": "k", "POSTGRES_PASSWORD": "p"}
    config = yaml.safe_load(_config(env, tmp_path).stdout)
    instructions = _dockerfile()
    user = [args for name, args in instructions if name == "USER"][-1]
    commands = [
        shlex.split(part)
        for name, args in instructions
        if name == "RUN"
        for part in args.split("&&")
        if part.split()[:1] in (["mkdir"], ["chown"])
    ]
    owned = {
        path for words in commands if words[:1] == ["chown"]
        for path in words[2:] if words[1].split(":")[0] == user
    }  # fmt: skip
    made = {path for words in commands if words[:2] == ["mkdir", "-p"] for path in words[2:]}
    for name in ("web", "worker"):
        service = config["services"][name]
        media = service["environment"]["MEDIA_ROOT"]
        targets = [
            volume["target"] if isinstance(volume, dict) else volume.split(":")[1]
            for volume in service["volumes"]
        ]
        assert media in targets, service
        assert media in made and media in owned, (media, made, owned)


def test_it_starts_the_listener_only_once_the_migrations_are_applied(tmp_path):
    """web migrates at its start; the listener started beside it read tables that did not
    exist yet. It now waits until `migrate --check` passes, then becomes the listener."""
    env = {**os.environ, "SECRET_KEY": "s", "CREDENTIAL_KEYS": "k", "POSTGRES_PASSWORD": "p"}
    config = yaml.safe_load(_config(env, tmp_path).stdout)
    command = config["services"]["listener"]["command"]
    command = command if isinstance(command, str) else " ".join(command)
    wait = command.index("until python manage.py migrate --check")
    assert wait < command.index("exec python manage.py mail_listener"), command
    # The check itself: it fails on a database not migrated yet, and passes once it is.
    manage = [sys.executable, str(BASE_DIR / "manage.py"), "migrate"]
    fresh = {**os.environ, "DEBUG": "true", "DATABASE_URL": f"sqlite:///{tmp_path / 'new.sqlite3'}"}
    check = subprocess.run([*manage, "--check"], env=fresh, capture_output=True, timeout=120)
    assert check.returncode != 0
    subprocess.run([*manage, "--noinput"], env=fresh, capture_output=True, timeout=300, check=True)
    check = subprocess.run([*manage, "--check"], env=fresh, capture_output=True, timeout=120)
    assert check.returncode == 0, check.stderr
