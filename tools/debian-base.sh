#!/usr/bin/env bash
# The base of `make image-test`'s image: a Debian root file system made by debootstrap from Debian's
# archive (the CUDA base is on Docker Hub, out of reach of the CI machines), imported into podman.
# Cached outside the clone, keyed by suite and mirror: only the first run on a machine pays (~3 min).
#   tools/debian-base.sh CACHE_DIR SUITE MIRROR   -> prints the image name
set -euo pipefail
cache="${1:?cache dir}" suite="${2:?suite}" mirror="${3:?mirror}"
key="$(printf '%s %s minbase\n' "$suite" "$mirror" | sha256sum | cut -c1-12)"
image="localhost/bespoke-debian:$suite-$key"
tarball="$cache/debian-$suite-$key.tar"
if ! podman image exists "$image"; then
  if [ ! -s "$tarball" ]; then
    rm -rf "$cache/rootfs-$key"
    mkdir -p "$cache"
    echo "debian-base: debootstrap $suite from $mirror" >&2
    debootstrap --variant=minbase "$suite" "$cache/rootfs-$key" "$mirror" > "$cache/debootstrap-$key.log" 2>&1 \
      || { tail -20 "$cache/debootstrap-$key.log" >&2; exit 1; }
    rm -rf "$cache/rootfs-$key/var/cache/apt/archives/"*.deb "$cache/rootfs-$key/var/lib/apt/lists/"*
    tar -C "$cache/rootfs-$key" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$cache/rootfs-$key"
  fi
  podman import --quiet "$tarball" "$image" > /dev/null
fi
echo "$image"
