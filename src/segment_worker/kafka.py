"""Kafka at our boundary: topic creation, producer/consumer factories, error translation.

Producers use ``acks='all'`` without idempotence (the embedded Tansu broker refuses
InitProducerId; ordering per partition is kept by the one-writer-per-partition design, and
duplicates are harmless because enter/exit ids are deterministic). Keys and values are bytes.

Size limits (CONTRACT §10): events over 1 MB are bad input, and their DLQ copy must stay whole.
So the input topic accepts records up to ``MAX_INPUT_RECORD_BYTES`` (they reach the worker, which
dead-letters them), the DLQ topic a little more (room for our headers), producers may send that
much, and consumers fetch that much per partition — aiokafka *skips* a record larger than
``max_partition_fetch_bytes`` when a broker truncates it, which would silently lose input.

Security (CONTRACT §1): every client takes ``Settings`` and gets its bootstrap servers and the
``SEGMENT_WORKER_KAFKA_SECURITY_PROTOCOL`` / ``_SSL_*`` / ``_SASL_*`` options from
``client_options`` — there is no way to make a client of ours that skips them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import errors as kerr
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import CloseReason
from aiokafka.helpers import create_ssl_context

from .config import Settings
from .errors import (
    ConfigError,
    FencedError,
    NotFound,
    RecordTooLarge,
    SegmentWorkerError,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

MAX_INPUT_RECORD_BYTES = 16 * 1024 * 1024
MAX_DLQ_RECORD_BYTES = MAX_INPUT_RECORD_BYTES + 1024 * 1024
_TOPIC_ALREADY_EXISTS = 36
_CREATE_TIMEOUT_MS = 30_000


def map_kafka_error(exc: BaseException, operation: str, **context: Any) -> SegmentWorkerError:
    """Translate an aiokafka exception into ours, keeping it as ``__cause__`` at the raise site."""
    ctx = {"system": "kafka", "operation": operation, "kafka_error": type(exc).__name__, **context}
    detail = str(exc)
    if not detail.startswith(type(exc).__name__):  # aiokafka's errors name themselves already
        detail = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    msg = f"kafka {operation} failed: {detail}"
    if isinstance(exc, kerr.MessageSizeTooLargeError | kerr.RecordTooLargeError
                  | kerr.RecordListTooLargeError):
        return RecordTooLarge(msg, context=ctx)
    if isinstance(exc, kerr.CommitFailedError | kerr.IllegalGenerationError | kerr.UnknownMemberIdError
                  | kerr.RebalanceInProgressError | kerr.ProducerFenced):
        return FencedError(msg, context=ctx)
    if isinstance(exc, kerr.UnknownTopicOrPartitionError):
        return NotFound(msg, retriable=True, context=ctx)  # may appear shortly after creation
    if isinstance(exc, kerr.TopicAuthorizationFailedError | kerr.GroupAuthorizationFailedError
                  | kerr.ClusterAuthorizationFailedError | kerr.KafkaConfigurationError
                  | kerr.AuthenticationFailedError | kerr.SaslAuthenticationFailed):
        return ConfigError(msg, context=ctx)
    if isinstance(exc, kerr.KafkaTimeoutError | kerr.KafkaUnavailableError | kerr.KafkaConnectionError
                  | OSError) or getattr(exc, "retriable", False):
        return StoreUnavailable(msg, context=ctx)
    return SegmentWorkerError(msg, retriable=False, context=ctx)


def client_security(settings: Settings) -> dict[str, Any]:
    """The aiokafka options of the configured security protocol: ``security_protocol``, and an
    ``ssl_context`` (the CA to trust, or the system's; a client certificate for mutual TLS) and/or
    the SASL mechanism and credentials. The combinations were checked when ``settings`` were made."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        try:
            options["ssl_context"] = create_ssl_context(
                cafile=settings.kafka_ssl_cafile,
                certfile=settings.kafka_ssl_certfile,
                keyfile=settings.kafka_ssl_keyfile,
            )
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"cannot load the Kafka TLS files: {exc}",
                context={"cafile": settings.kafka_ssl_cafile, "certfile": settings.kafka_ssl_certfile,
                         "keyfile": settings.kafka_ssl_keyfile},
            ) from exc
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        password = settings.kafka_sasl_password
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=password.get_secret_value() if password is not None else None,
        )
    return options


def client_options(settings: Settings) -> dict[str, Any]:
    """``bootstrap_servers`` and ``client_security``: what every Kafka client of ours is made with."""
    return {"bootstrap_servers": settings.kafka_bootstrap, **client_security(settings)}


@contextmanager
def kafka_errors(operation: str, **context: Any) -> Iterator[None]:
    """Run a block, re-raising aiokafka (and socket) errors as ours."""
    try:
        yield
    except SegmentWorkerError:
        raise
    except (kerr.KafkaError, OSError) as exc:  # TimeoutError is an OSError
        raise map_kafka_error(exc, operation, **context) from exc


async def start_client(client: Any, settings: Settings, operation: str, **context: Any) -> None:
    """``client.start()`` with its errors mapped. When the connection fails under TLS, one probe says
    why (aiokafka only says it could not bootstrap): that is a ``ConfigError``, since retrying with
    the same certificates cannot help."""
    try:
        with kafka_errors(operation, bootstrap=settings.kafka_bootstrap, **context):
            await client.start()
    except StoreUnavailable as exc:
        why = await tls_failure(settings)
        if why is None:
            raise
        raise ConfigError(f"{exc.message}; {why}", context=exc.context) from exc


async def tls_failure(settings: Settings, *, wait_s: float = 3.0) -> str | None:
    """Why a TLS session with the first bootstrap server fails, in OpenSSL's words and with the
    setting to check; ``None`` when TLS is not configured, the server does not answer, or TLS works."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    host, _, port = settings.kafka_bootstrap.split(",")[0].strip().rpartition(":")
    context = client_security(settings)["ssl_context"]
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, int(port), ssl=context, server_hostname=host), wait_s)
    except ssl.SSLCertVerificationError as exc:
        return (f"the broker's TLS certificate is not trusted ({exc.verify_message}): check "
                "SEGMENT_WORKER_KAFKA_SSL_CAFILE")
    except ssl.SSLError as exc:
        return f"the TLS handshake with {host}:{port} failed ({exc.reason or exc})"
    except (OSError, TimeoutError, ValueError):
        return None
    try:
        # Under TLS 1.3 a server refuses a client certificate (or its absence) after the client's
        # side of the handshake is done: the alert arrives on the first read.
        await asyncio.wait_for(reader.read(1), 0.5)
    except ssl.SSLError as exc:
        if "CERTIFICATE_REQUIRED" in str(exc.reason):
            return ("the broker requires a client certificate: set SEGMENT_WORKER_KAFKA_SSL_CERTFILE and "
                    "SEGMENT_WORKER_KAFKA_SSL_KEYFILE")
        return f"the broker ended the TLS session ({exc.reason or exc}): check the client certificate"
    except (OSError, TimeoutError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    return None


def create_producer(
    settings: Settings, *, client_id: str = "segment-worker", **overrides: Any
) -> AIOKafkaProducer:
    """An unstarted producer: acks=all, no idempotence, bytes in, big enough for a whole DLQ copy.

    Must be called with an event loop running (aiokafka binds to it)."""
    options: dict[str, Any] = {
        **client_options(settings),
        "client_id": client_id,
        "acks": "all",
        "enable_idempotence": False,
        "max_request_size": MAX_DLQ_RECORD_BYTES,
        "max_batch_size": 256 * 1024,  # measured: big batches cut per-send overhead (notes/limits.md)
        "linger_ms": 5,
        **overrides,
    }
    if options["enable_idempotence"]:
        raise ConfigError("idempotent producers are not supported here (Tansu refuses InitProducerId)",
                          context={"bootstrap": settings.kafka_bootstrap})
    return AIOKafkaProducer(**options)


def create_consumer(
    settings: Settings, *topics: str, group_id: str | None, client_id: str = "segment-worker",
    **overrides: Any,
) -> AIOKafkaConsumer:
    """An unstarted consumer of bytes: no auto-commit (positions live in PostgreSQL), earliest reset,
    per-partition fetch large enough that no accepted input record is ever skipped."""
    options: dict[str, Any] = {
        **client_options(settings),
        "client_id": client_id,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": MAX_DLQ_RECORD_BYTES,
        **overrides,
    }
    return AIOKafkaConsumer(*topics, **options)


_BROKEN = (CloseReason.CONNECTION_BROKEN, CloseReason.CONNECTION_TIMEOUT)


def on_connection_broken(client: AIOKafkaConsumer | AIOKafkaProducer, callback: Callable[[], None]) -> None:
    """Call ``callback`` whenever a connection of the unstarted ``client`` to a broker breaks (not
    when one is closed as idle or on shutdown), synchronously, before aiokafka opens another.

    A broken connection is what a broker restart looks like from here, and the broker may have come
    back without its logs (the embedded broker keeps them in memory only): the worker then checks
    its positions and topics before it applies or sends anything more (``worker.topics``).
    aiokafka has no public hook for it; its client's ``_on_connection_closed``, bound by each
    connection it opens, is wrapped (``tests/boundaries/test_kafka_connection_broken.py`` goes red
    if aiokafka changes that)."""
    inner = client._client if isinstance(client, AIOKafkaConsumer) else client.client
    wrapped = inner._on_connection_closed

    def closed(conn: Any, reason: Any) -> None:
        wrapped(conn, reason)
        if reason in _BROKEN:
            callback()

    inner._on_connection_closed = closed


@asynccontextmanager
async def producer(settings: Settings, **overrides: Any) -> AsyncIterator[AIOKafkaProducer]:
    """A started ``create_producer`` producer, stopped (flushed) on exit; start errors mapped."""
    prod = create_producer(settings, **overrides)
    try:
        await start_client(prod, settings, "start producer")
    except BaseException:
        await prod.stop()  # releases what a failed start opened
        raise
    try:
        yield prod
    finally:
        await prod.stop()


@asynccontextmanager
async def consumer(
    settings: Settings, *topics: str, group_id: str | None, **overrides: Any
) -> AsyncIterator[AIOKafkaConsumer]:
    """A started ``create_consumer`` consumer, stopped on exit; start errors mapped."""
    cons = create_consumer(settings, *topics, group_id=group_id, **overrides)
    try:
        await start_client(cons, settings, "start consumer", topics=list(topics))
    except BaseException:
        await cons.stop()
        raise
    try:
        yield cons
    finally:
        await cons.stop()


@asynccontextmanager
async def _admin(settings: Settings) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(**client_options(settings), client_id="segment-worker-admin")
    try:
        await start_client(client, settings, "connect admin client")
        yield client
    finally:
        await client.close()


async def _partition_counts(admin: AIOKafkaAdminClient) -> dict[str, int]:
    # All topics: a metadata request naming topics may auto-create them on Apache Kafka
    # (auto.create.topics.enable), with the broker's default partition count.
    with kafka_errors("describe topics"):
        topics = await admin.describe_topics()
    return {t["topic"]: len(t["partitions"]) for t in topics if t["error_code"] == 0 and t["partitions"]}


def topic_specs(settings: Settings) -> dict[str, tuple[int, dict[str, str]]]:
    """The topics the project owns: name → (partitions when created, topic configs)."""
    return {
        settings.topic_events: (
            settings.input_partitions, {"max.message.bytes": str(MAX_INPUT_RECORD_BYTES)}),
        settings.topic_membership: (settings.input_partitions, {}),
        settings.topic_dlq: (settings.input_partitions, {"max.message.bytes": str(MAX_DLQ_RECORD_BYTES)}),
    }


async def ensure_topics(
    settings: Settings, *, replication_factor: int | None = None, missing_out: list[str] | None = None
) -> dict[str, int]:
    """Create the input, output and DLQ topics if missing; answer each topic's partition count.

    An existing topic is left as it is (its partition count wins over ``input_partitions``);
    a topic created concurrently by another worker counts as existing. The replication factor
    defaults to min(3, brokers in the cluster). The names found missing are appended to
    ``missing_out`` (a running worker calls this again to recreate topics a broker lost)."""
    specs = topic_specs(settings)
    bootstrap = settings.kafka_bootstrap
    async with _admin(settings) as admin:
        counts = await _partition_counts(admin)
        missing = [name for name in specs if name not in counts]
        if missing_out is not None:
            missing_out.extend(missing)
        if missing:
            if replication_factor is None:
                with kafka_errors("describe cluster", bootstrap=bootstrap):
                    cluster = await admin.describe_cluster()
                replication_factor = max(1, min(3, len(cluster.get("brokers") or [])))
            new = [NewTopic(n, specs[n][0], replication_factor, topic_configs=specs[n][1]) for n in missing]
            with kafka_errors("create topics", bootstrap=bootstrap, topics=missing):
                response = await admin.create_topics(new, timeout_ms=_CREATE_TIMEOUT_MS)
            for entry in response.topic_errors:
                name, code = entry[0], entry[1]
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    err = kerr.for_code(code)(entry[2] if len(entry) > 2 else "")
                    raise map_kafka_error(err, "create topics", bootstrap=bootstrap, topic=name)
            log.info("created Kafka topics %s (replication factor %d)", missing, replication_factor)
            counts = await _await_topics(admin, list(specs))
    wanted = settings.input_partitions
    if counts[settings.topic_events] != wanted:
        log.warning(
            "input topic %s has %d partitions (SEGMENT_WORKER_INPUT_PARTITIONS=%d applies only when the "
            "project creates it)", settings.topic_events, counts[settings.topic_events], wanted,
        )
    return {name: counts[name] for name in specs}


async def _await_topics(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    # Creation is asynchronous on a real cluster: metadata may lag the CreateTopics answer.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _CREATE_TIMEOUT_MS / 1000
    while True:
        counts = await _partition_counts(admin)
        if all(n in counts for n in names):
            return counts
        if loop.time() > deadline:
            late = [n for n in names if n not in counts]
            raise StoreUnavailable("created topics did not appear in the cluster metadata",
                                   context={"system": "kafka", "topics": late})
        await asyncio.sleep(0.2)


async def topic_partition_count(settings: Settings, topic: str) -> int:
    """Partitions of ``topic``; ``NotFound`` if it does not exist."""
    async with _admin(settings) as admin:
        counts = await _partition_counts(admin)
    if topic not in counts:
        raise NotFound(f"Kafka topic {topic!r} does not exist",
                       context={"topic": topic, "bootstrap": settings.kafka_bootstrap})
    return counts[topic]


async def input_partition_count(settings: Settings) -> int:
    """Partitions of the input topic (the partition space customers are owned by, CONTRACT §10)."""
    return await topic_partition_count(settings, settings.topic_events)

