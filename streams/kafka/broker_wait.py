"""Wait for an unreachable Kafka broker at start, with backoff and log lines that say what to check.

Why this exists:
    A worker is often started before its broker (a machine boots, compose starts everything at
    once, the broker restarts). Without waiting, the first admin call fails and the worker exits
    at once. Here a start-up step that needs the broker is retried with exponential backoff while
    the failure is one that time can fix (nothing listening, a host not reachable yet); each retry
    logs ``broker_unreachable`` with the bootstrap servers, the error and what to check. Refused
    credentials and TLS failures are not retried: they are raised at once, as before.

Usage:
    >>> created = await when_reachable(settings, lambda: ensure_topics(settings), settings.broker_wait_seconds)

Notes:
    Past ``give_up_after`` seconds :class:`BrokerUnreachable` is raised with a message that says
    what to do; ``llmops worker`` prints it and exits with :data:`EXIT_BROKER_UNREACHABLE`.
    The clock and the sleep are injected so that tests control time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from aiokafka.errors import KafkaConnectionError

from streams.kafka.admin import probe_connection
from streams.logs import get_logger
from streams.settings import Settings

log = get_logger(__name__)
T = TypeVar("T")
EXIT_BROKER_UNREACHABLE = 69  # EX_UNAVAILABLE (sysexits.h): a service this program needs is not there
HINT = (
    "check that a broker runs there (`llmops kafka status`; `llmops kafka start` runs the embedded one), "
    "that LLMOPS_BOOTSTRAP_SERVERS names it, and that this host can reach it (DNS, firewall, the broker's "
    "advertised.listeners)"
)


class BrokerUnreachable(RuntimeError):
    """No broker answered within the allowed wait; the message says where and what to check."""


@dataclass(frozen=True)
class Backoff:
    """Delays between attempts: ``first``, multiplied by ``factor`` each time, at most ``cap`` seconds."""

    first: float = 0.5
    factor: float = 2.0
    cap: float = 10.0

    def delays(self) -> Iterator[float]:
        delay = self.first
        while True:
            yield delay
            delay = min(self.cap, delay * self.factor)


async def when_reachable(
    settings: Settings,
    step: Callable[[], Awaitable[T]],
    give_up_after: float,
    *,
    backoff: Backoff = Backoff(),
    probe: Callable[[Settings], Awaitable[tuple[bool, str]]] = probe_connection,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Run ``step`` until the broker lets it through; retry connection failures for ``give_up_after`` s.

    Raises:
        BrokerUnreachable: no broker answered within ``give_up_after`` seconds (0: no retry).
        KafkaConnectionError: the broker answers but refuses this client (credentials, TLS);
            ``llmops`` explains those in one line.
    """
    started = clock()
    for attempt, delay in enumerate(backoff.delays(), start=1):
        try:
            result = await step()
        except KafkaConnectionError:
            retry, why = await probe(settings)
            if not retry:
                raise
            waited = clock() - started
            if waited + delay > give_up_after:
                raise BrokerUnreachable(
                    f"no Kafka broker answered at {settings.bootstrap_servers} in {waited:.0f} s "
                    f"({attempt} attempts; last: {why}); {HINT}. A starting worker waits "
                    f"LLMOPS_BROKER_WAIT_SECONDS ({give_up_after:g}) for its broker."
                ) from None
            log.warning(
                "broker_unreachable",
                bootstrap_servers=settings.bootstrap_servers,
                attempt=attempt,
                waited_s=round(waited, 1),
                retry_in_s=delay,
                gives_up_after_s=give_up_after,
                error=why,
                hint=HINT,
            )
            await sleep(delay)
            continue
        if attempt > 1:
            log.info(
                "broker_reachable",
                bootstrap_servers=settings.bootstrap_servers,
                attempts=attempt,
                waited_s=round(clock() - started, 1),
            )
        return result
    raise AssertionError("unreachable: the backoff never ends")
