import os
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from mailsetup.env import env_bool, env_int, env_list
from mailsetup.settings import BASE_DIR


@pytest.mark.parametrize(
    ("raw", "expected"), [("true", True), ("Yes", True), ("0", False), ("off", False)]
)
def test_it_reads_booleans(monkeypatch, raw, expected):
    monkeypatch.setenv("FLAG", raw)
    assert env_bool("FLAG") is expected


def test_it_names_the_variable_of_a_bad_boolean(monkeypatch):
    monkeypatch.setenv("FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="FLAG must be a boolean"):
        env_bool("FLAG")


def test_it_names_the_variable_of_a_bad_or_too_small_number(monkeypatch):
    monkeypatch.setenv("COUNT", "ten")
    with pytest.raises(ImproperlyConfigured, match="COUNT must be a whole number, not 'ten'"):
        env_int("COUNT", 1)
    monkeypatch.setenv("COUNT", "0")
    with pytest.raises(ImproperlyConfigured, match="COUNT must be at least 1"):
        env_int("COUNT", 1, minimum=1)


def test_it_reads_lists_and_defaults(monkeypatch):
    monkeypatch.setenv("HOSTS", " a.test, b.test ,,")
    assert env_list("HOSTS") == ["a.test", "b.test"]
    monkeypatch.delenv("HOSTS")
    assert env_list("HOSTS", ["x"]) == ["x"]


def _start(tmp_path, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "CREDENTIAL_KEYS"}}
    clean.update({"MAILSETUP_VAR_DIR": str(tmp_path), "DEBUG": "false"}, **env)
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=BASE_DIR,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_refuses_to_start_in_production_without_a_secret_key(tmp_path):
    result = _start(tmp_path, CREDENTIAL_KEYS=Fernet.generate_key().decode())
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr
    assert not any(tmp_path.iterdir())


def test_it_refuses_to_start_in_production_without_credential_keys(tmp_path):
    result = _start(tmp_path, SECRET_KEY="x" * 50)
    assert result.returncode != 0
    assert "CREDENTIAL_KEYS must be set when DEBUG is off" in result.stderr


def test_it_refuses_a_malformed_credential_key(tmp_path):
    result = _start(tmp_path, SECRET_KEY="x" * 50, CREDENTIAL_KEYS="not-a-key")
    assert result.returncode != 0
    assert "CREDENTIAL_KEYS entry 1 is not a valid Fernet key" in result.stderr


def test_it_refuses_a_malformed_setting_by_name(tmp_path):
    result = _start(tmp_path, DEBUG="sometimes")
    assert result.returncode != 0
    assert "DEBUG must be a boolean" in result.stderr
    result = _start(tmp_path, DEBUG="true", DISCOVERY_STEP_TIMEOUT_SECONDS="0")
    assert result.returncode != 0
    assert "DISCOVERY_STEP_TIMEOUT_SECONDS must be at least 1" in result.stderr


def test_it_names_an_empty_key_file(tmp_path):
    (tmp_path / "credential_key").write_text("")
    result = _start(tmp_path, DEBUG="true")
    assert result.returncode != 0
    assert "credential_key is empty; delete it" in result.stderr


def test_it_starts_in_production_with_its_keys(tmp_path):
    result = _start(
        tmp_path,
        SECRET_KEY="x" * 50,
        CREDENTIAL_KEYS=Fernet.generate_key().decode(),
        ALLOWED_HOSTS="mail.example.com",
    )
    assert result.returncode == 0, result.stderr


def test_it_generates_development_keys_once_and_reuses_them(tmp_path):
    first = _start(tmp_path, DEBUG="true")
    assert first.returncode == 0, first.stderr
    secret = (tmp_path / "secret_key").read_text()
    key = (tmp_path / "credential_key").read_text()
    assert oct((tmp_path / "credential_key").stat().st_mode & 0o777) == "0o600"
    assert _start(tmp_path, DEBUG="true").returncode == 0
    assert (tmp_path / "secret_key").read_text() == secret
    assert (tmp_path / "credential_key").read_text() == key


def test_it_hands_every_process_started_at_once_the_same_development_keys(tmp_path):
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from mailsetup import settings; print(settings.CREDENTIAL_KEYS[0])",
            ],
            cwd=BASE_DIR,
            env={**os.environ, "DEBUG": "true", "MAILSETUP_VAR_DIR": str(tmp_path)},
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    keys = {process.communicate(timeout=60)[0].strip() for process in processes}
    assert len(keys) == 1
    assert keys == {(tmp_path / "credential_key").read_text().strip()}


@pytest.mark.parametrize(
    "raw", ["10.0.0.0/8,proxy.internal", "10.0.0.300", "10.0.0.0/33", "fd00::/129", "*"]
)
def test_it_refuses_to_start_with_a_trusted_proxy_that_is_no_address_or_network(tmp_path, raw):
    # A typo here used to surface only at the first request, as a 500 on every page.
    result = _start(tmp_path, DEBUG="true", TRUSTED_PROXIES=raw)
    assert result.returncode != 0
    assert "TRUSTED_PROXIES" in result.stderr
    assert "is not an IP address or network" in result.stderr


def test_it_reads_trusted_proxies_as_addresses_and_networks(monkeypatch):
    from mailsetup.env import env_networks

    monkeypatch.setenv("PROXIES", " 10.0.0.0/8, 192.0.2.7 ,fd00::/8, 2001:db8::1, 10.1.2.3/8")
    assert env_networks("PROXIES") == ["10.0.0.0/8", "192.0.2.7/32", "fd00::/8", "2001:db8::1/128",
                                       "10.0.0.0/8"]  # fmt: skip
    monkeypatch.setenv("PROXIES", "10.0.0.0/8,nonsense")
    with pytest.raises(ImproperlyConfigured, match="PROXIES entry 2, 'nonsense', is not an IP"):
        env_networks("PROXIES")
