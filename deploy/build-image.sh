#!/usr/bin/env bash
# Build the geoprov OCI image FROM scratch around a release binary built on this machine, with
# podman (preferred) or docker, whichever is present; nothing is pulled from a registry.
#
# Usage: deploy/build-image.sh [TAG]            (default TAG: geoprov:<version>)
# Environment:
#   GEOPROV_BIN           binary to package (default: target/release/geoprov, built with
#                         `cargo build --release --locked` first when cargo is present)
#   CONTAINER_ENGINE      podman or docker (default: podman if installed, else docker)
#   GEOPROV_IMAGE_SOURCE  value of the org.opencontainers.image.source label
#                         (default: the git remote "origin")
#   GEOPROV_IMAGE_MAX_BYTES  fail if the image is larger (default: 60000000)
# Podman reads its storage and engine settings from CONTAINERS_STORAGE_CONF / CONTAINERS_CONF.
set -euo pipefail

die() { printf 'build-image: %s\n' "$*" >&2; exit 1; }
log() { printf 'build-image: %s\n' "$*" >&2; }

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
[ $# -le 1 ] || die "usage: $0 [TAG]"

engine=${CONTAINER_ENGINE:-}
if [ -z "$engine" ]; then
  if command -v podman >/dev/null; then engine=podman
  elif command -v docker >/dev/null; then engine=docker
  else die "neither podman nor docker is installed (Debian: apt-get install podman)"
  fi
fi
command -v "$engine" >/dev/null || die "$engine is not installed"
if [ "$engine" = docker ] && ! docker info >/dev/null 2>&1; then
  die "docker is installed but no Docker engine answers; start one or install podman"
fi

if [ -n "${GEOPROV_BIN:-}" ]; then
  bin=$GEOPROV_BIN
else
  bin=${CARGO_TARGET_DIR:-$repo/target}/release/geoprov
  if command -v cargo >/dev/null; then
    log "cargo build --release --locked"
    (cd "$repo" && cargo build --release --locked)
  fi
fi
[ -x "$bin" ] || die "no binary at $bin: run cargo build --release, or set GEOPROV_BIN"

version=$("$bin" --version) || die "$bin --version failed"
version=${version#geoprov }
licenses=$(sed -n 's/^license *= *"\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n1)
[ -n "$licenses" ] || die "no license field in $repo/Cargo.toml"
source_url=${GEOPROV_IMAGE_SOURCE:-$(git -C "$repo" remote get-url origin 2>/dev/null || true)}
if [ -z "$source_url" ]; then
  source_url=unknown
  log "no git remote \"origin\": set GEOPROV_IMAGE_SOURCE for the source label"
fi
revision=$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)
if [ "$revision" != unknown ] && [ -n "$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  revision="$revision-dirty"
fi
tag=${1:-geoprov:$version}

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
"$here/image/stage-rootfs.sh" "$bin" "$context"
cp "$here/image/Containerfile" "$context/Containerfile"

log "building $tag with $engine (geoprov $version, $(du -sh "$context/rootfs" | cut -f1) staged)"
"$engine" build \
  --file "$context/Containerfile" \
  --tag "$tag" \
  --build-arg "VERSION=$version" \
  --build-arg "SOURCE=$source_url" \
  --build-arg "REVISION=$revision" \
  --build-arg "LICENSES=$licenses" \
  --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  "$context" >&2

size=$("$engine" image inspect --format '{{.Size}}' "$tag")
max=${GEOPROV_IMAGE_MAX_BYTES:-60000000}
[ "$size" -lt "$max" ] || die "image $tag is $size bytes, over the $max-byte limit"
log "built $tag: $size bytes"
printf '%s\n' "$tag"
