"""Kafka security settings (CONTRACT §1) without a broker: what the client configuration carries for
each protocol (no SASL server runs here, so SASL is checked at this level: the options aiokafka's
clients are built with), the combinations refused at start-up, and the password kept out of sight."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest

from helpers.service import cli_command
from helpers.tls import TlsFiles, make_tls_files
from segment_worker import kafka
from segment_worker.config import Settings
from segment_worker.errors import ConfigError


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    assert kafka.client_security(Settings()) == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_sasl_ssl_carries_mechanism_credentials_and_tls(mechanism: str, tls_files: TlsFiles) -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="svc-segments", kafka_sasl_password="s3cret!",  # type: ignore[arg-type]
        kafka_ssl_cafile=str(tls_files.ca),
    )
    options = kafka.client_security(settings)
    context = options.pop("ssl_context")
    assert options == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": mechanism,
        "sasl_plain_username": "svc-segments", "sasl_plain_password": "s3cret!",
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    # aiokafka takes them as they are (its clients check SASL options when they are made).
    prod = kafka.create_producer(settings)
    cons = kafka.create_consumer(settings, group_id=None)
    try:
        for client in (prod.client, cons._client):
            assert client._security_protocol == "SASL_SSL"
            assert client._sasl_mechanism == mechanism
            assert client._sasl_plain_password == "s3cret!"
            assert client._ssl_context is not None
    finally:
        await prod.stop()
        await cons.stop()


def test_sasl_plaintext_has_no_tls(tls_files: TlsFiles) -> None:
    settings = Settings(kafka_security_protocol="sasl_plaintext", kafka_sasl_username="u",
                        kafka_sasl_password="p")  # type: ignore[arg-type]
    assert kafka.client_security(settings) == {
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "u", "sasl_plain_password": "p",
    }


def test_ssl_with_a_client_certificate(tls_files: TlsFiles) -> None:
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=str(tls_files.ca),
                        kafka_ssl_certfile=str(tls_files.client_cert),
                        kafka_ssl_keyfile=str(tls_files.client_key))
    options = kafka.client_security(settings)
    assert set(options) == {"security_protocol", "ssl_context"}
    assert options["security_protocol"] == "SSL"


def test_the_settings_come_from_the_environment_and_the_password_stays_hidden(
    monkeypatch: pytest.MonkeyPatch, tls_files: TlsFiles
) -> None:
    env = {
        "SEGMENT_WORKER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "SEGMENT_WORKER_KAFKA_SSL_CAFILE": str(tls_files.ca),
        "SEGMENT_WORKER_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "SEGMENT_WORKER_KAFKA_SASL_USERNAME": "svc",
        "SEGMENT_WORKER_KAFKA_SASL_PASSWORD": "hunter2-very-secret",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = Settings()
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings)
    assert "hunter2" not in str(settings.model_dump())
    assert kafka.client_security(settings)["sasl_plain_password"] == "hunter2-very-secret"
    # A child process (dev's worker, the bench's) gets the secret itself, not its mask.
    assert {k: v for k, v in settings.as_env().items() if k in env} == env


def _refusal(**fields: Any) -> str:
    with pytest.raises(ConfigError) as refused:
        Settings(**fields)
    return refused.value.message


def test_bad_combinations_are_refused_with_the_setting_to_fix(tls_files: TlsFiles, tmp_path: Path) -> None:
    assert "SEGMENT_WORKER_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs SEGMENT_WORKER_KAFKA_SASL_USERNAME and " \
        "SEGMENT_WORKER_KAFKA_SASL_PASSWORD" in _refusal(kafka_security_protocol="SASL_SSL")
    assert "needs SEGMENT_WORKER_KAFKA_SASL_USERNAME" in _refusal(
        kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="u")  # no password
    assert "does not use SASL" in _refusal(kafka_sasl_username="u", kafka_sasl_password="p")
    assert "does not use SASL" in _refusal(
        kafka_security_protocol="SSL", kafka_sasl_username="u", kafka_sasl_password="p")
    assert "SEGMENT_WORKER_KAFKA_SSL_CAFILE set but SEGMENT_WORKER_KAFKA_SECURITY_PROTOCOL=PLAINTEXT " \
        "does not use TLS" in _refusal(kafka_ssl_cafile=str(tls_files.ca))
    assert "does not use TLS" in _refusal(
        kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="u", kafka_sasl_password="p",
        kafka_ssl_cafile=str(tls_files.ca))
    assert "needs both SEGMENT_WORKER_KAFKA_SSL_CERTFILE and SEGMENT_WORKER_KAFKA_SSL_KEYFILE" in _refusal(
        kafka_security_protocol="SSL", kafka_ssl_certfile=str(tls_files.client_cert))
    assert "needs both" in _refusal(
        kafka_security_protocol="SSL", kafka_ssl_keyfile=str(tls_files.client_key))
    missing = tmp_path / "nope.pem"
    assert f"SEGMENT_WORKER_KAFKA_SSL_CAFILE={missing}: no such file" in _refusal(
        kafka_security_protocol="SSL", kafka_ssl_cafile=str(missing))


def test_a_file_that_is_not_a_certificate_is_a_config_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=str(junk))
    with pytest.raises(ConfigError, match="cannot load the Kafka TLS files"):
        kafka.client_security(settings)


@pytest.mark.parametrize(("variable", "value"), [
    ("SEGMENT_WORKER_KAFKA_SECURITY_PROTOCOL", "TLS"),
    ("SEGMENT_WORKER_KAFKA_SASL_MECHANISM", "GSSAPI"),
])
def test_unknown_values_are_refused(variable: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from segment_worker.cli.main import load_settings

    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        load_settings()


def test_the_worker_refuses_to_start_on_a_bad_combination(pg_dsn: str, redis_url: str) -> None:
    from helpers.service import cli_env

    env = cli_env(pg_dsn, redis_url, SEGMENT_WORKER_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
                  SEGMENT_WORKER_KAFKA_SASL_PASSWORD="hunter2-very-secret")
    done = subprocess.run([*cli_command(), "run"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "Error: invalid Kafka security settings: SEGMENT_WORKER_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs "
        "SEGMENT_WORKER_KAFKA_SASL_USERNAME and SEGMENT_WORKER_KAFKA_SASL_PASSWORD"
    ]
    assert "hunter2" not in done.stderr
