#!/usr/bin/env python3
"""Drive the reference Celery client for geoprov's tests (see lineage_tasks.py for the env).

  celery_tool.py publish N TAG DB_URI [--countdown S] [--rich]
                                                         publish N record_lineage_event.delay()
                                                         calls; print one event id per line.
                                                         --rich: payloads of a derivation chain
                                                         whose key order is far from sorted, with
                                                         non-ASCII text, floats of every repr
                                                         shape and nested objects
  celery_tool.py poison TAG DB_URI                       publish foreign and poison messages
                                                         around 3 valid ones; print the valid ids
  celery_tool.py results N TAG DB_URI                    publish N tasks and wait for their
                                                         results; print one result per line
"""

import sys
import uuid
from datetime import datetime, timedelta, timezone

import lineage_tasks
from lineage_tasks import app, event_id, record_lineage_event


def payload(tag, i):
    return {
        "dataset_uuid": str(uuid.uuid4()),
        "operation": "reproject",
        "crs_from": "EPSG:32633",
        "crs_to": "EPSG:3857",
        "processor_id": "celery-" + tag,
        "sequence": i,
        "parameters": {"resampling": "bilinear", "target_resolution": 10.0, "nodata": -9999},
        "note": "caf\u00e9 \u2713",
    }


def rich_payload(tag, i, previous):
    """A payload whose insertion order differs from sorted order at every level, with non-ASCII
    text (one character outside the BMP), floats of each repr shape, nested objects and, but for
    every fourth, an input: the previous payload's output."""
    out = str(uuid.uuid4())
    p = {
        "processor_id": "celery-" + tag,
        "operation": ["reproject", "tile", "mosaic", "validate_topology"][i % 4],
        "dataset_uuid": out,
        "crs_to": "EPSG:3857",
        "crs_from": "EPSG:32633",
        "outputs": [out],
        "parameters": {
            "zoom": {"max": 14, "min": 3, "levels": [{"z": 3, "a": 0.5}]},
            "target_resolution": 10.0 + i / 8,
            "tolerance": 1e-07,
            "extent_m": 1e16,
            "ratio": 0.1,
            "offset": -0.0,
            "nodata": -9999,
            "resampling": "bilinear",
        },
        "note": "Z\u00fcrich \u6771\u4eac caf\u00e9 \u2713 \U0001F6F0",
        "sequence": i,
    }
    if i % 4 != 0 and previous is not None:
        p["inputs"] = [previous]
    return p, out


def publish(n, tag, db_uri, countdown=None, rich=False):
    previous = None
    with app.producer_or_acquire() as producer:
        for i in range(n):
            if rich:
                p, previous = rich_payload(tag, i, previous)
            else:
                p = payload(tag, i)
            if countdown is None:
                record_lineage_event.apply_async((p, db_uri), producer=producer)
            else:
                record_lineage_event.apply_async((p, db_uri), countdown=countdown, producer=producer)
            print(event_id(p))


def amqp_broker():
    """True when the app's broker is RabbitMQ (amqp:// or amqps://)."""
    return str(app.conf.broker_url).startswith(("amqp://", "amqps://", "pyamqp://"))


def poison(tag, db_uri):
    ids = []
    queue = app.conf.task_default_queue

    def valid(i):
        p = payload(tag, i)
        record_lineage_event.delay(p, db_uri)
        ids.append(event_id(p))

    valid(0)
    # An unknown task name.
    app.send_task("other_app.tasks.resize", args=[{"x": 1}])
    # Pickle content: must never be deserialized.
    record_lineage_event.apply_async((payload(tag, 100), db_uri), serializer="pickle")
    valid(1)
    expired = datetime.now(timezone.utc) - timedelta(minutes=1)
    if amqp_broker():
        # apply_async would also set the AMQP `expiration` property ("0"), and RabbitMQ would
        # drop the message itself before any consumer sees it. Send the task message as a
        # client whose task expired while queued (no `expiration` property) would.
        message = app.amqp.as_task_v2(
            str(uuid.uuid4()), record_lineage_event.name, (payload(tag, 101), db_uri), {},
            expires=expired,
        )
        with app.producer_or_acquire() as producer:
            app.amqp.send_task_message(producer, record_lineage_event.name, message)
    else:
        # Expired a minute ago.
        record_lineage_event.apply_async((payload(tag, 101), db_uri), expires=expired)
    # Protocol v1.
    message = app.amqp.as_task_v1(
        str(uuid.uuid4()), record_lineage_event.name, (payload(tag, 102), db_uri), {}
    )
    with app.producer_or_acquire() as producer:
        app.amqp.send_task_message(producer, record_lineage_event.name, message)
    # A malformed body: not a JSON envelope (Redis) or task body (AMQP), sent raw to the queue.
    with app.connection_for_write() as conn:
        if amqp_broker():
            import amqp

            conn.default_channel.basic_publish(
                amqp.Message(b"{this is not json", content_type="application/json",
                             delivery_mode=2),
                exchange="", routing_key=queue,
            )
        else:
            client = conn.default_channel.client
            client.lpush(queue, b"{this is not json")
    valid(2)
    for i in ids:
        print(i)


def results(n, tag, db_uri):
    handles = []
    for i in range(n):
        p = payload(tag, i)
        handles.append((event_id(p), record_lineage_event.delay(p, db_uri)))
    for eid, h in handles:
        print(eid, h.get(timeout=60), h.id)


def main(argv):
    cmd = argv[1]
    if cmd == "publish":
        countdown = None
        if "--countdown" in argv:
            countdown = float(argv[argv.index("--countdown") + 1])
        publish(int(argv[2]), argv[3], argv[4], countdown, rich="--rich" in argv)
    elif cmd == "poison":
        poison(argv[2], argv[3])
    elif cmd == "results":
        results(int(argv[2]), argv[3], argv[4])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
