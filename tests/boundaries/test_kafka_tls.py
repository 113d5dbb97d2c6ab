"""Secured Kafka (CONTRACT §1) over real TLS: a second embedded broker behind a TLS-terminating proxy
that demands a client certificate (mutual TLS), advertising the proxy's address, so every Kafka
client of the project — the admin (topic creation), a ``segment-worker run`` process's consumer and
producer, the API's producer, a plain producer and a reader — must speak TLS with our settings."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from helpers.harness import WorkerProcess
from helpers.kafka_io import log_ends, produce, read_topic
from helpers.scenario import T0, create_workspace, encode, event, wait_caught_up
from helpers.service import cli_command
from helpers.tls import TlsFiles, TlsProxy, make_tls_files
from segment_worker import kafka
from segment_worker.config import Settings
from segment_worker.embedded import EmbeddedStack
from segment_worker.errors import ConfigError, StoreUnavailable
from segment_worker.service.context import ServiceContext
from segment_worker.stores import postgres as pg

pytestmark = pytest.mark.timeout(180)


@dataclass(frozen=True)
class TlsBroker:
    bootstrap: str  # the proxy: the only address the broker advertises
    files: TlsFiles
    proxy: TlsProxy

    def settings(self, **fields: object) -> Settings:
        """Mutual-TLS client settings for this broker (override any field)."""
        base: dict[str, object] = {
            "kafka_bootstrap": self.bootstrap,
            "kafka_security_protocol": "SSL",
            "kafka_ssl_cafile": str(self.files.ca),
            "kafka_ssl_certfile": str(self.files.client_cert),
            "kafka_ssl_keyfile": str(self.files.client_key),
        }
        return Settings(**(base | fields))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
async def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TlsBroker]:
    files = make_tls_files(tmp_path_factory.mktemp("tls"))
    proxy = TlsProxy(files, require_client_cert=True).start()
    stack = EmbeddedStack(kafka=True, postgres=False, redis=False, kafka_advertised=f"127.0.0.1:{proxy.port}")
    try:
        await stack.astart()
        proxy.upstream = int(stack.kafka_bootstrap.rsplit(":", 1)[1])
        yield TlsBroker(f"127.0.0.1:{proxy.port}", files, proxy)
    finally:
        proxy.stop()
        await stack.astop()


async def test_a_worker_process_and_every_client_work_over_mutual_tls(
    tls_broker: TlsBroker, pg_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:10]
    ws_id = f"ws-tls-{tag}"
    settings = tls_broker.settings(
        database_url=pg_dsn, redis_url=redis_url, topic_events=f"tls-in-{tag}",
        topic_membership=f"tls-out-{tag}", topic_dlq=f"tls-dlq-{tag}", consumer_group=f"tls-{tag}",
        input_partitions=2,
    )
    conn = await pg.connect(pg_dsn)
    ctx = await ServiceContext.open(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")  # settings reach it as SEGMENT_WORKER_* env
    try:
        vip = {"field": "tags", "op": "has", "value": "VIP"}
        ws = await create_workspace(conn, ws_id, segments={"VIP": vip})
        sid = ws.segments["VIP"]
        await kafka.ensure_topics(settings)  # the admin client, over TLS
        assert await kafka.input_partition_count(settings) == 2
        worker.start()
        # A plain producer, and the API's publisher (``PATCH /customers/{id}`` goes through it).
        await produce(settings, settings.topic_events, [
            encode(event(ws_id, "c1", "customer.tags_added", {"tags": ["VIP"]}, T0, "e-1")),
            encode(event(ws_id, "c2", "customer.tags_added", {"tags": ["VIP"]}, T0, "e-2")),
            (f"{ws_id}:c9".encode(), b"not json"),  # bad input: the DLQ producer's turn
        ])
        e3 = event(ws_id, "c1", "customer.tags_removed", {"tags": ["VIP"]}, T0 + timedelta(minutes=1), "e-3")
        await ctx.publisher.publish(settings.topic_events, [encode(e3)])
        ends = await log_ends(settings, settings.topic_events)  # with the publisher's record
        await wait_caught_up(conn, settings.consumer_group, settings.topic_events, ends, workspace_id=ws_id,
                             limit_s=90)
        # The session database's outbox may hold other tests' unsent rows of these partitions too.
        output = [r for r in await read_topic(settings, settings.topic_membership)
                  if r.key.startswith(f"{ws_id}:".encode())]
        dead = await read_topic(settings, settings.topic_dlq)
    finally:
        status = worker.terminate() if worker.proc is not None and worker.proc.poll() is None else None
        worker.ensure_dead()
        await ctx.close()
        await conn.close()
    assert status == 0, worker.log_text()[-3000:]  # a clean stop (SIGTERM) over TLS too
    got = sorted(
        (d["subject"], d["type"], d["data"]["seq"], d["data"]["cause"]["event_id"])
        for d in (orjson.loads(r.value) for r in output)
    )
    assert got == [
        ("c1", "segment.entered", 1, "e-1"),
        ("c1", "segment.exited", 2, "e-3"),
        ("c2", "segment.entered", 1, "e-2"),
    ]
    assert all(orjson.loads(r.value)["data"]["segment_id"] == str(sid) for r in output)
    assert [(r.key, r.value) for r in dead] == [(f"{ws_id}:c9".encode(), b"not json")]
    assert tls_broker.proxy.connections > 0


async def test_a_client_without_a_certificate_is_refused(tls_broker: TlsBroker) -> None:
    no_cert = tls_broker.settings(kafka_ssl_certfile=None, kafka_ssl_keyfile=None)
    with pytest.raises(ConfigError) as refused:
        async with kafka.producer(no_cert, request_timeout_ms=3000):
            pass
    print(f"\nwithout a client certificate: {refused.value.message}")
    assert refused.value.message.startswith("kafka start producer failed")
    assert "the broker requires a client certificate: set SEGMENT_WORKER_KAFKA_SSL_CERTFILE" in (
        refused.value.message)
    assert not refused.value.retriable
    # The same settings with the certificate get through (the refusal was the certificate's).
    async with kafka.producer(tls_broker.settings(), request_timeout_ms=3000):
        pass


async def test_a_broker_certificate_from_another_ca_is_refused(tls_broker: TlsBroker) -> None:
    wrong_ca = tls_broker.settings(kafka_ssl_cafile=str(tls_broker.files.other_ca))
    with pytest.raises(ConfigError) as refused:
        await kafka.ensure_topics(wrong_ca)
    print(f"\nbroker certificate not trusted: {refused.value.message}")
    message = refused.value.message
    assert "the broker's TLS certificate is not trusted (" in message
    assert message.endswith("): check SEGMENT_WORKER_KAFKA_SSL_CAFILE")
    assert not refused.value.retriable


async def test_a_plaintext_client_cannot_reach_the_tls_broker(tls_broker: TlsBroker) -> None:
    plaintext = Settings(kafka_bootstrap=tls_broker.bootstrap)
    with pytest.raises(StoreUnavailable):  # no TLS configured: nothing to diagnose, plain unreachable
        async with kafka.producer(plaintext, request_timeout_ms=3000):
            pass


async def test_a_worker_process_that_does_not_trust_the_broker_exits_saying_why(
    tls_broker: TlsBroker, pg_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    settings = tls_broker.settings(database_url=pg_dsn, redis_url=redis_url,
                                   kafka_ssl_cafile=str(tls_broker.files.other_ca))
    env = settings.as_env(os.environ)
    done = await asyncio.to_thread(
        subprocess.run, [*cli_command(), "run"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: kafka connect admin client failed: ")
    assert last.endswith("): check SEGMENT_WORKER_KAFKA_SSL_CAFILE")
