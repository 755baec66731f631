"""Send a batch's table writes to Kafka together, instead of one per event-loop turn.

Why this exists:
    A Faust table write (``table[key] = value``) is synchronous, so Faust queues its changelog
    record in the producer's buffer (``ProducerBuffer.pending``) and a task of its own hands them
    to the producer one at a time, one per turn of the event loop. The ingest agent writes one
    dedup state per document, so those records trickled out between everything else the loop did
    and reached the broker as about 2,000 produce batches of 3 records for 6,000 documents
    (``bench/ingest_throughput.py``; the outputs of the same documents took 400 batches): the
    broker's CPU per document was 3-9x the plain loop's, most of it for those requests.

    Each hand-off also yielded to the event loop (see :func:`send_table_writes`), so even a
    batch's 256 writes took 70-290 ms to reach the producer, a few per linger window.

The fix:
    Right after a batch's synchronous table writes, with no ``await`` in between, take every
    queued write out of the buffer (so Faust's task finds it empty and takes none of them) and
    hand them to the producer in order, without yielding: they land in the producer's batches
    within one linger window. Order per key is kept (one taker, first in first out), and each write's future is
    returned, to be awaited with the batch's other outputs before the batch is acknowledged.

Notes:
    :func:`take_table_writes` takes every message queued in the buffer, whoever queued it; in
    this project only the ingest agent's dedup table queues any (``send_soon``), so those are
    its writes. A future table or ``send_soon`` caller in the same worker would have its records
    sent, and awaited, with the ingest batch that took them.

Usage:
    >>> results = pipeline.process_batch(records, table, lookups)   # writes the table
    >>> writes = take_table_writes(app)                            # before any await
    >>> pending = await send_table_writes(app, writes)            # futures, acked by the broker
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from functools import partial
from typing import Any


def take_table_writes(app: Any) -> list[Any]:
    """The changelog records queued by table writes, in order, taken out of Faust's producer buffer.

    None with a threaded producer (``producer_threaded``): its queue lives in another thread.
    """
    if app.conf.producer_threaded:
        return []
    pending: asyncio.Queue[Any] = app.producer.buffer.pending
    writes = []
    while not pending.empty():
        writes.append(pending.get_nowait())
    return writes


async def send_table_writes(app: Any, writes: list[Any]) -> list[Awaitable[Any]]:
    """Hand ``writes`` (from :func:`take_table_writes`) to the producer in order; futures of their delivery.

    What Faust's ``Topic.publish_message`` does, less its wait for the producer to be started
    (a ``stampede`` wrapper that yields to the event loop on every call, which let the producer
    send each linger window's two or three records as a batch of their own): the producer runs
    by the time a batch is processed. Each write still settles as Faust settles it (its
    ``FutureMessage``, the table's callback and the sensors), in ``Topic._on_published``.
    """
    producer = app.producer
    for write in writes:
        message = write.message
        topic = message.channel.get_topic_name()
        state = app.sensors.on_send_initiated(
            producer, topic, message=message, keysize=len(message.key or b""), valsize=len(message.value or b"")
        )
        delivery = await producer.send(
            topic, message.key, message.value, message.partition, message.timestamp, message.headers
        )
        delivery.add_done_callback(
            partial(message.channel._on_published, message=write, state=state, producer=producer)
        )
    if writes:
        producer.buffer.message_sent.set()  # what Faust's own task signals after each send
    return list(writes)
