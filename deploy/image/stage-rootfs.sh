#!/usr/bin/env bash
# Stage the root filesystem of the geoprov image around one built binary: the binary (stripped
# of its debug info), the shared libraries `ldd` says it loads, the CA bundle, and /etc files
# so the user and host names resolve. Nothing else: no shell, no package manager.
#
# Usage: deploy/image/stage-rootfs.sh BINARY OUTDIR
# Writes OUTDIR/rootfs/ (copied to / in the image) and OUTDIR/data/ (the empty /data volume,
# copied with the image user's ownership). Used by deploy/build-image.sh and deploy/Dockerfile.
set -euo pipefail

die() { printf 'stage-rootfs: %s\n' "$*" >&2; exit 1; }

[ $# -eq 2 ] || die "usage: $0 BINARY OUTDIR"
bin=$1
out=$2
[ -x "$bin" ] || die "$bin is not an executable file"
command -v ldd >/dev/null || die "ldd not found (Debian: apt-get install libc-bin)"
command -v strip >/dev/null || die "strip not found (Debian: apt-get install binutils)"
ca_bundle=/etc/ssl/certs/ca-certificates.crt
[ -r "$ca_bundle" ] || die "$ca_bundle not found (Debian: apt-get install ca-certificates)"

# The image's user: not root, and numeric in the image config so that Kubernetes'
# runAsNonRoot can check it.
uid=65532
gid=65532

rm -rf "$out/rootfs" "$out/data"
mkdir -p "$out/rootfs/etc/ssl/certs" "$out/rootfs/tmp" "$out/data"
root=$out/rootfs

# The binary, without its DWARF debug info (the release profile keeps line tables: ~124 MB).
# Symbols stay, so a panic's backtrace still names functions.
strip --strip-debug -o "$root/geoprov" "$bin"
chmod 0755 "$root/geoprov"

# Shared libraries: exactly what the dynamic loader resolves for this binary, at the same
# paths (the loader looks in its default directories; there is no ld.so.cache in the image).
# A static binary needs none ("not a dynamic executable").
if ldd_out=$(ldd "$root/geoprov" 2>&1); then
  while read -r line; do
    case $line in
      *linux-vdso.so*) continue ;;                                  # provided by the kernel
      *"=> not found"*) die "ldd: a library is missing: $line" ;;
      *" => "/*) lib=${line#* => }; lib=${lib%% (*} ;;              # name => /path (addr)
      /*) lib=${line%% (*} ;;                                       # /lib64/ld-linux-... (addr)
      *) die "ldd: unexpected line: $line" ;;
    esac
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"                                        # the file, not the symlink
    chmod 0755 "$root$lib"
  done <<<"$ldd_out"
else
  case $ldd_out in
    *"not a dynamic executable"*|*"statically linked"*) ;;
    *) die "ldd $bin failed: $ldd_out" ;;
  esac
fi

# CA roots. geoprov's own defaults are compiled in (webpki roots), so this bundle is for
# `--tls-ca`/`sslrootcert=` pointing at the system set, and is where a platform mounts its own.
cp -L "$ca_bundle" "$root$ca_bundle"
chmod 0644 "$root$ca_bundle"

# Users and name resolution. glibc (2.34 and later) has the files and dns NSS backends built
# in, so nsswitch.conf needs no libnss_*.so beside it. /etc/hosts and /etc/resolv.conf are
# the container runtime's to provide.
printf 'root:x:0:0:root:/root:/sbin/nologin\ngeoprov:x:%d:%d:geoprov:/data:/sbin/nologin\n' \
  "$uid" "$gid" >"$root/etc/passwd"
printf 'root:x:0:\ngeoprov:x:%d:\n' "$gid" >"$root/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/nsswitch.conf"

# /tmp for SQLite's temporary files and `geoprov bench`'s data dir; /data is the volume.
chmod 1777 "$root/tmp"
chmod 0755 "$out/data"
