#!/usr/bin/env bash
# Measure the peak resident memory (VmHWM) of `geoprov serve` and `geoprov worker` under load,
# the figures behind the resource requests and limits in deploy/kubernetes. Not a test: run it
# by hand on a quiet machine after `cargo build --release`.
#
# Usage: deploy/measure-rss.sh [EVENTS]      (default 200000)
# Environment: GEOPROV_BIN (default target/release/geoprov), MEASURE_REDIS
# (default redis://127.0.0.1:6379/0), MEASURE_POSTGRES (default
# postgres://postgres@127.0.0.1:5432/test; a schema of its own is created and dropped).
#
# Scenarios, each fed by 4 concurrent HTTP clients POSTing 5,000-event NDJSON bodies of
# ~500-byte events shaped like `geoprov bench`'s:
#   1. embedded: `serve` (embedded queue, SQLite, 2 workers), the kubernetes "embedded" overlay;
#   2. scaled ingest: `serve --no-workers` on Redis Streams + PostgreSQL;
#   3. scaled worker: `worker` (--concurrency 2) draining that backlog into PostgreSQL;
#   4. the largest request: one ~60 MiB body (the HTTP limit is 64 MiB) to `serve --no-workers`.
# After 1 and 2 the whole log is also read back once as PROV-JSON (GET /v1/export/prov).
set -euo pipefail

die() { printf 'measure-rss: %s\n' "$*" >&2; exit 1; }
log() { printf 'measure-rss: %s\n' "$*" >&2; }

repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${GEOPROV_BIN:-$repo/target/release/geoprov}
events=${1:-200000}
redis=${MEASURE_REDIS:-redis://127.0.0.1:6379/0}
pg=${MEASURE_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}
[ -x "$bin" ] || die "no binary at $bin: run cargo build --release, or set GEOPROV_BIN"
for tool in curl python3 psql redis-cli; do command -v "$tool" >/dev/null || die "$tool not found"; done

work=$(mktemp -d)
pids=()
suffix=$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
schema=geoprov_rss_$suffix
queue=rss-$suffix
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -q "$pg" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
  redis-cli -u "$redis" DEL "geoprov:$queue" "geoprov:$queue:dead" "geoprov:$queue-big" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# Events in chunks of 5,000 lines (2.5 MB bodies, well under the 64 MiB request limit).
python3 - "$events" "$work/chunks" <<'PY'
import json, os, random, sys, uuid
n, out = int(sys.argv[1]), sys.argv[2]
os.makedirs(out)
rnd = random.Random(42)
ops = ["ingest", "reproject", "tile", "mosaic", "validate_topology", "publish"]
crs = [("EPSG:32633", "EPSG:3857"), ("EPSG:4326", "EPSG:3857"), ("EPSG:32632", "EPSG:4326")]
outputs, lines = [], []
for i in range(n):
    ds = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
    a, b = rnd.choice(crs)
    k = rnd.randint(1, 3) if outputs else 0
    lon, lat = rnd.uniform(-180, 170), rnd.uniform(-80, 70)
    secs = i % 86400
    ev = {"dataset_uuid": ds, "operation": rnd.choice(ops), "crs_from": a, "crs_to": b,
          "processor_id": f"etl-worker-{rnd.randint(1, 24):02}",
          "started_at": f"2026-03-01T{secs // 3600:02}:{secs // 60 % 60:02}:{secs % 60:02}.{rnd.randrange(10**6):06}Z",
          "inputs": [outputs[-rnd.randint(1, min(50, len(outputs)))] for _ in range(k)],
          "parameters": {"resampling": "bilinear", "target_resolution": rnd.choice([10.0, 30.0, 250.0, 0.5]), "nodata": -9999},
          "bbox": [round(lon, 6), round(lat, 6), round(lon + rnd.uniform(0.01, 3), 6), round(lat + rnd.uniform(0.01, 3), 6)],
          "output_uri": f"s3://geo-lake-curated/tiles/{ds[:8]}.tif",
          "software": {"gdal": "3.6.2", "pipeline": f"geo-etl/2.4.{rnd.randrange(10)}"}, "sequence": i}
    outputs.append(ds)
    lines.append(json.dumps(ev))
    if len(lines) == 5000 or i == n - 1:
        with open(os.path.join(out, f"{i // 5000:05}.ndjson"), "w") as f:
            f.write("\n".join(lines) + "\n")
        lines = []
PY

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
stored() { curl -sf "http://127.0.0.1:$1/healthz" | python3 -c 'import json,sys; print(json.load(sys.stdin)["events"])'; }

start() { # name port args... ; sets $started to the pid
  local name=$1 port=$2; shift 2
  GEOPROV_LOG=warn "$bin" "$@" >"$work/$name.log" 2>&1 &
  started=$!
  pids+=("$started")
  if [ "$port" != - ]; then
    for _ in $(seq 300); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return 0; sleep 0.1; done
    die "$name did not answer on $port: $(cat "$work/$name.log")"
  fi
}

ingest() { # port: 4 clients, each POSTing every 4th chunk
  local port=$1 c
  for c in 0 1 2 3; do
    (
      i=0
      for f in "$work"/chunks/*.ndjson; do
        if [ $((i % 4)) -eq "$c" ]; then
          curl -sf -o /dev/null -H 'content-type: application/json' --data-binary "@$f" \
            "http://127.0.0.1:$port/v1/events" || { echo "POST $f failed" >&2; exit 1; }
        fi
        i=$((i + 1))
      done
    ) &
  done
  wait_jobs
}
wait_jobs() { local j; for j in $(jobs -p); do case " ${pids[*]} " in *" $j "*) ;; *) wait "$j" ;; esac; done; }

wait_stored() { # port count
  for _ in $(seq 3000); do [ "$(stored "$1")" -ge "$2" ] && return 0; sleep 0.2; done
  die "only $(stored "$1") of $2 events stored"
}

stop() { kill -TERM "$1"; wait "$1" || true; }

log "$events events, $(du -sh "$work/chunks" | cut -f1) of NDJSON; binary $bin"

# 1. embedded
port=$(free_port)
start embedded "$port" serve --data-dir "$work/embedded" --listen "127.0.0.1:$port"
serve=$started
t0=$(date +%s)
ingest "$port"
wait_stored "$port" "$events"
printf 'embedded serve (SQLite, 2 workers): VmHWM %s MiB, %s events in %s s\n' \
  "$(( $(hwm_kib "$serve") / 1024 ))" "$events" "$(( $(date +%s) - t0 ))"
curl -sf -o /dev/null "http://127.0.0.1:$port/v1/export/prov"
printf 'embedded serve after a full PROV export: VmHWM %s MiB\n' "$(( $(hwm_kib "$serve") / 1024 ))"
stop "$serve"

# 2. scaled ingest, then 3. the worker draining it
store="$pg?schema=$schema"
"$bin" migrate --store "$store" >/dev/null
port=$(free_port)
start ingest "$port" serve --no-workers --broker "$redis" --queue "$queue" --store "$store" \
  --data-dir "$work/ingest" --listen "127.0.0.1:$port"
serve=$started
ingest "$port"
printf 'scaled serve --no-workers (Redis Streams, PostgreSQL): VmHWM %s MiB after %s events\n' \
  "$(( $(hwm_kib "$serve") / 1024 ))" "$events"
start worker - worker --broker "$redis" --queue "$queue" --store "$store" --data-dir "$work/worker"
worker=$started
t0=$(date +%s)
wait_stored "$port" "$events"
printf 'scaled worker (--concurrency 2, PostgreSQL): VmHWM %s MiB, %s events in %s s\n' \
  "$(( $(hwm_kib "$worker") / 1024 ))" "$events" "$(( $(date +%s) - t0 ))"
t0=$(date +%s%N)
stop "$worker"
printf 'worker SIGTERM to exit: %s ms\n' "$(( ($(date +%s%N) - t0) / 1000000 ))"
curl -sf -o /dev/null "http://127.0.0.1:$port/v1/export/prov"
printf 'scaled serve --no-workers after a full PROV export: VmHWM %s MiB\n' "$(( $(hwm_kib "$serve") / 1024 ))"
stop "$serve"

# 4. one request of ~60 MiB
: >"$work/big.ndjson"
for f in "$work"/chunks/*.ndjson; do
  [ "$(stat -c %s "$work/big.ndjson")" -lt $((58 << 20)) ] || break
  cat "$f" >>"$work/big.ndjson"
done
port=$(free_port)
start big "$port" serve --no-workers --broker "$redis" --queue "$queue-big" --store "$store" \
  --data-dir "$work/big" --listen "127.0.0.1:$port"
serve=$started
curl -sf -o /dev/null -H 'content-type: application/json' --data-binary "@$work/big.ndjson" \
  "http://127.0.0.1:$port/v1/events" || die "POST of $(du -h "$work/big.ndjson" | cut -f1) failed"
printf 'serve --no-workers after one %s request: VmHWM %s MiB\n' \
  "$(du -h "$work/big.ndjson" | cut -f1)" "$(( $(hwm_kib "$serve") / 1024 ))"
stop "$serve"
