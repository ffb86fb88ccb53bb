"""The reference Celery application of the seed system, for geoprov's interoperability tests.

``record_lineage_event(payload, db_uri)`` is the task a pipeline calls with ``.delay``. Its
event id is the seed's scheme: sha256 of ``json.dumps(payload, sort_keys=True)``; the text it
stores is ``json.dumps(payload)``, in the payload's insertion order (the seed hashes one text and
stores another).

- ``postgresql://...``: the seed's own write, through SQLAlchemy and psycopg2, into the table
  ``lineage_events`` (``event_id`` text primary key, ``dataset_uuid``, ``operation``,
  ``crs_from``, ``crs_to``, ``processor_id``, ``"timestamp"`` timestamptz, ``payload_json``),
  ``ON CONFLICT (event_id) DO NOTHING``. The table must exist (the seed's schema is created by
  its operators, not by the task). A ``?options=-csearch_path%3DS`` parameter picks a schema.
- ``sqlite:///PATH``: INSERT OR IGNORE into the table ``seed_lineage_events`` of that file, for
  tests that need no PostgreSQL.
- Any other ``db_uri`` is not connected to.

Configuration comes from the environment:
LINEAGE_BROKER (default redis://127.0.0.1:6379/0), LINEAGE_RESULT_BACKEND (default none),
LINEAGE_QUEUE (default celery), LINEAGE_KEYPREFIX (kombu's global_keyprefix, default none),
LINEAGE_VISIBILITY_TIMEOUT (seconds, default kombu's).
"""

import hashlib
import json
import os
import sqlite3
import threading
from datetime import datetime, timezone

from celery import Celery

app = Celery(
    "lineage_tasks",
    broker=os.environ.get("LINEAGE_BROKER", "redis://127.0.0.1:6379/0"),
    backend=os.environ.get("LINEAGE_RESULT_BACKEND") or None,
)
_options = {}
if os.environ.get("LINEAGE_KEYPREFIX"):
    _options["global_keyprefix"] = os.environ["LINEAGE_KEYPREFIX"]
if os.environ.get("LINEAGE_VISIBILITY_TIMEOUT"):
    _options["visibility_timeout"] = float(os.environ["LINEAGE_VISIBILITY_TIMEOUT"])
if os.environ.get("LINEAGE_BROKER", "").startswith(("amqp://", "amqps://", "pyamqp://")):
    # Publisher confirms: each publish returns once RabbitMQ holds the message. Without them a
    # publisher that exits right after its last publish can lose the messages still in flight
    # (seen under load: 4,331 of 5,000 reached the queue).
    _options["confirm_publish"] = True
app.conf.broker_transport_options = _options
app.conf.task_default_queue = os.environ.get("LINEAGE_QUEUE", "celery")
app.conf.task_acks_late = True
app.conf.worker_prefetch_multiplier = 4
app.conf.broker_connection_retry_on_startup = True


def event_id(payload):
    """The seed's event id: sha256 hex of json.dumps(payload, sort_keys=True)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


_engines = {}
_engines_lock = threading.Lock()


def _engine(db_uri):
    """One SQLAlchemy engine (connection pool) per database URI, as the seed kept one."""
    from sqlalchemy import create_engine

    with _engines_lock:
        if db_uri not in _engines:
            _engines[db_uri] = create_engine(db_uri, pool_pre_ping=True)
        return _engines[db_uri]


def _store_postgres(db_uri, eid, payload):
    from sqlalchemy import text

    with _engine(db_uri).begin() as conn:
        conn.execute(
            text(
                'INSERT INTO lineage_events (event_id, dataset_uuid, operation, crs_from, '
                'crs_to, processor_id, "timestamp", payload_json) VALUES (:event_id, '
                ':dataset_uuid, :operation, :crs_from, :crs_to, :processor_id, :timestamp, '
                ':payload_json) ON CONFLICT (event_id) DO NOTHING'
            ),
            {
                "event_id": eid,
                "dataset_uuid": payload.get("dataset_uuid"),
                "operation": payload.get("operation"),
                "crs_from": payload.get("crs_from"),
                "crs_to": payload.get("crs_to"),
                "processor_id": payload.get("processor_id"),
                "timestamp": datetime.now(timezone.utc),
                "payload_json": json.dumps(payload),
            },
        )


@app.task(name="lineage_tasks.record_lineage_event")
def record_lineage_event(payload, db_uri):
    """Store one lineage event; returns SUCCESS:<event_id>."""
    eid = event_id(payload)
    if db_uri.startswith(("postgresql://", "postgres://")):
        # The seed's driver, psycopg2, named explicitly (SQLAlchemy 2.1 defaults to psycopg 3).
        _store_postgres("postgresql+psycopg2://" + db_uri.split("://", 1)[1], eid, payload)
    elif db_uri.startswith("sqlite:///"):
        with sqlite3.connect(db_uri[len("sqlite:///"):], timeout=60) as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS seed_lineage_events ("
                "event_id TEXT PRIMARY KEY, dataset_uuid TEXT, operation TEXT, "
                "payload_json TEXT)"
            )
            conn.execute(
                "INSERT OR IGNORE INTO seed_lineage_events VALUES (?, ?, ?, ?)",
                (eid, payload.get("dataset_uuid"), payload.get("operation"),
                 json.dumps(payload)),
            )
    return "SUCCESS:" + eid
