"""Kafka administration: create our topics explicitly, count what is on them, read them back.

Why this exists:
    Topics are created with explicit partition counts and configs (``models.control``
    compacted), never auto-created with broker defaults. The CLI, the demo and the tests also
    need to count records per topic and read a topic range, with the same security settings as
    the agents.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    GroupCoordinatorNotAvailableError,
    KafkaConnectionError,
    KafkaError,
    NotCoordinatorError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    for_code,
)

from streams.kafka.client_security import aiokafka_security
from streams.kafka.topics import Topics, TopicSpec
from streams.settings import Settings


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Bootstrap servers and security options for any aiokafka client."""
    return {"bootstrap_servers": settings.bootstrap_servers, **aiokafka_security(settings)}


def producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """An idempotent, acks=all producer (what every publisher in the project uses)."""
    options: dict[str, Any] = {
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "compression_type": None,
        **overrides,
    }
    return AIOKafkaProducer(**client_kwargs(settings), **options)


async def ensure_topics(settings: Settings, specs: Iterable[TopicSpec] | None = None, attempts: int = 10) -> list[str]:
    """Create missing topics; return the names that were created.

    A retriable error (a request sent to a broker that just went down, a leader moving) is
    retried, once a second: with one broker of three down, publishing must still work.
    """
    specs = list(specs or Topics(settings.namespace).specs(settings.partitions, settings.replication_factor))
    for _ in range(attempts - 1):
        try:
            return await _ensure_topics(settings, specs)
        except KafkaError as error:
            # Not a failed bootstrap: no broker answering, or refused credentials, is said at once.
            if not error.retriable or isinstance(error, KafkaConnectionError):
                raise
            await asyncio.sleep(1.0)
    return await _ensure_topics(settings, specs)


async def _ensure_topics(settings: Settings, specs: list[TopicSpec]) -> list[str]:
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        created = []
        for spec in missing:
            try:
                response = await admin.create_topics(
                    [NewTopic(spec.name, spec.partitions, spec.replication_factor, topic_configs=spec.config)]
                )
            except TopicAlreadyExistsError:
                continue
            for _, error_code, *_ in response.topic_errors:
                error = for_code(error_code) if error_code else None
                # Already there (made meanwhile), or not this principal's to see or create: with ACLs
                # enforced a worker sees only its own topics, and an operator creates the rest.
                if error in (TopicAlreadyExistsError, TopicAuthorizationFailedError):
                    continue
                if error is not None:
                    raise error(f"creating topic {spec.name}: {response.topic_errors}")
                created.append(spec.name)
        if created:
            await _wait_for_metadata(settings, created)
        return created
    finally:
        await admin.close()


async def _wait_for_metadata(settings: Settings, names: list[str], timeout: float = 30.0) -> None:
    """Poll until every created topic reports its partitions (its leaders are elected)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        known = {tp.topic for tp in await topic_partitions(settings, names)}
        if known >= set(names):
            return
        await asyncio.sleep(0.2)


async def response_topics(settings: Settings) -> list[str]:
    """The shared responses topic and every tenant's reply topic of this namespace that exists."""
    topics = Topics(settings.namespace)
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        names = await admin.list_topics()
    finally:
        await admin.close()
    return sorted(name for name in names if topics.is_response_topic(name))


async def topic_partitions(settings: Settings, names: Iterable[str]) -> list[TopicPartition]:
    """Partitions of the named topics that exist, in order."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        described = await admin.describe_topics(list(names))
    finally:
        await admin.close()
    return [
        TopicPartition(topic["topic"], partition["partition"])
        for topic in described
        if topic["error_code"] == 0
        for partition in sorted(topic["partitions"], key=lambda p: p["partition"])
    ]


async def offsets(
    settings: Settings, names: Iterable[str]
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """(beginning, end) offsets of every partition of the named topics that exist."""
    partitions = await topic_partitions(settings, names)
    if not partitions:
        return {}, {}
    consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        return dict(await consumer.beginning_offsets(partitions)), dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def committed_offsets(settings: Settings, group: str) -> dict[TopicPartition, int]:
    """Offsets consumer group ``group`` has committed, per partition (empty for an unknown group)."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        return {tp: meta.offset for tp, meta in committed.items()}
    except GroupCoordinatorNotAvailableError:
        return {}  # the offsets topic is still being created: nothing committed yet
    finally:
        await admin.close()


@dataclass(frozen=True)
class TopicCount:
    """Records currently retained on a topic (end minus beginning offsets)."""

    topic: str
    partitions: int
    records: int


async def count_records(settings: Settings, names: Iterable[str]) -> list[TopicCount]:
    """Retained record count of each existing topic (compaction and retention aside)."""
    names = list(names)
    begin, end = await offsets(settings, names)
    return [
        TopicCount(
            name, sum(tp.topic == name for tp in end), sum(end[tp] - begin[tp] for tp in end if tp.topic == name)
        )
        for name in names
        if any(tp.topic == name for tp in end)
    ]


async def read_range(
    settings: Settings, start: dict[TopicPartition, int], end: dict[TopicPartition, int], idle_timeout: float = 3.0
) -> AsyncIterator[Any]:
    """Records between two offset maps, start inclusive and end exclusive, partition by partition."""
    wanted = {tp: (start.get(tp, 0), stop) for tp, stop in end.items() if stop > start.get(tp, 0)}
    if not wanted:
        return
    consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(wanted))
        for tp, (first, _) in wanted.items():
            consumer.seek(tp, first)
        remaining = set(wanted)
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=int(idle_timeout * 1000))
            if not batch:
                break  # compaction or transaction markers can leave the last offsets empty
            for tp, messages in batch.items():
                stop = wanted[tp][1]
                for message in messages:
                    if message.offset < stop:
                        yield message
                if messages and messages[-1].offset >= stop - 1:
                    remaining.discard(tp)
    finally:
        await consumer.stop()


async def read_topic(settings: Settings, name: str) -> AsyncIterator[Any]:
    """Every record currently on ``name``, from its beginning to its end at call time."""
    begin, end = await offsets(settings, [name])
    async for message in read_range(settings, begin, end):
        yield message


async def group_is_stable(settings: Settings, group: str) -> bool:
    """Whether consumer group ``group`` has members and has finished rebalancing.

    On a new cluster the group coordinator does not exist until ``__consumer_offsets`` has been
    created (the first group lookup creates it), so "no coordinator yet" is "not stable yet".
    """
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        (described,) = (await admin.describe_consumer_groups([group]))[0].groups
    except (GroupCoordinatorNotAvailableError, CoordinatorLoadInProgressError, NotCoordinatorError):
        return False
    finally:
        await admin.close()
    state, members = described[2], described[5]  # (error_code, group, state, protocol_type, protocol, members)
    return bool(state == "Stable" and members)


async def wait_for_group(settings: Settings, group: str, timeout: float = 90.0) -> bool:
    """Poll until ``group`` is stable (its workers joined and got partitions); False on timeout."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await group_is_stable(settings, group):
            return True
        await asyncio.sleep(0.5)
    return False


async def probe_connection(settings: Settings) -> tuple[bool, str]:
    """One direct connection to the first bootstrap server: (worth retrying, what happened in words).

    A refused login, a mechanism the broker does not offer and a failed TLS handshake will not
    get better by waiting (False); a broker that is down or unreachable may (True).
    """
    from aiokafka.conn import create_conn
    from aiokafka.errors import SaslAuthenticationFailed, UnsupportedSaslMechanismError

    first = settings.bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    try:
        connection = await create_conn(host, int(port), request_timeout_ms=10_000, **aiokafka_security(settings))
    except SaslAuthenticationFailed:
        if settings.sasl_mechanism == "OAUTHBEARER":
            where = "LLMOPS_SASL_OAUTHBEARER_TOKEN_FILE or LLMOPS_SASL_OAUTHBEARER_SUB"
        else:
            where = "LLMOPS_SASL_USERNAME and LLMOPS_SASL_PASSWORD"
        return False, (
            f"Kafka at {first} refused the credentials of user "
            f"{settings.sasl_username or settings.sasl_oauthbearer_sub!r} ({settings.sasl_mechanism}): check "
            f"{where} (or sasl.jaas.config in --command-config)"
        )
    except UnsupportedSaslMechanismError as error:
        return False, f"Kafka at {first} does not offer {settings.sasl_mechanism}: {error} (LLMOPS_SASL_MECHANISM)"
    except ssl.SSLError as error:
        return False, (
            f"the TLS handshake with Kafka at {first} failed: {error.reason or error}; check LLMOPS_SSL_CAFILE "
            "(the CA that signed the broker's certificate), LLMOPS_SSL_CERTFILE and LLMOPS_SSL_KEYFILE (a client "
            f"certificate, if the broker asks for one) and LLMOPS_SECURITY_PROTOCOL ({settings.security_protocol})"
        )
    except KafkaConnectionError as error:
        if (
            settings.security_protocol in ("SSL", "SASL_SSL")
            and settings.ssl_certfile is None
            and "closed" in str(error)
        ):
            # TLS 1.3: a broker that requires a client certificate finds none only after the client's
            # side of the handshake is done, and then closes the connection.
            return False, (
                f"Kafka at {first} closed the TLS connection without a word: it may require a client certificate "
                "(mutual TLS): set LLMOPS_SSL_CERTFILE and LLMOPS_SSL_KEYFILE (or ssl.certificate.location and "
                "ssl.key.location, or a PEM ssl.keystore.location, in --command-config)"
            )
        return True, _unreachable(first, settings, error)
    except (TimeoutError, OSError, KafkaError) as error:
        return True, _unreachable(first, settings, error)
    try:
        if settings.sasl_mechanism == "OAUTHBEARER" and not await _login_held(connection):
            return False, (
                f"Kafka at {first} did not accept the OAUTHBEARER token (expired, or not meant for this broker?): "
                "check LLMOPS_SASL_OAUTHBEARER_TOKEN_FILE (or LLMOPS_SASL_OAUTHBEARER_SUB)"
            )
    finally:
        connection.close()
    return True, f"Kafka at {first} accepts a connection now; the earlier failure was transient or from another broker"


async def consumer_lag(settings: Settings, group: str, names: Iterable[str]) -> dict[tuple[str, int], int]:
    """Records past ``group``'s committed offset on every partition of the named topics.

    A partition the group never committed starts at its beginning (the workers' earliest reset):
    its lag is all it holds. Topics the group committed on count too, also when not named.
    """
    committed = await committed_offsets(settings, group)
    topics = {*names, *(tp.topic for tp in committed)}
    if not topics:  # (an empty list would describe every topic of the cluster)
        return {}
    begin, end = await offsets(settings, topics)
    lag = {}
    for tp, last in end.items():
        done = committed.get(tp, -1)
        lag[(tp.topic, tp.partition)] = max(0, last - (done if done >= 0 else begin[tp]))
    return lag


async def _login_held(connection: Any) -> bool:
    """Whether a connection just signed in with OAUTHBEARER may ask for metadata.

    aiokafka sends the token and takes the login as done: it does not read the error challenge
    (RFC 7628) by which a broker refuses a token, so a refusal shows only in the next answer.
    """
    from aiokafka.protocol.metadata import MetadataRequest

    try:
        metadata = await asyncio.wait_for(connection.send(MetadataRequest([])), 10)
    except (TimeoutError, OSError, KafkaError):
        return False
    return bool(metadata.brokers)


def _unreachable(address: str, settings: Settings, error: BaseException) -> str:
    return (
        f"cannot connect to Kafka at {address} with {settings.security_protocol}: {error!r} "
        "(is the broker running, e.g. `llmops kafka start`, and does it expect this security protocol? "
        "-b/--bootstrap-server or LLMOPS_BOOTSTRAP_SERVERS names the brokers)"
    )
