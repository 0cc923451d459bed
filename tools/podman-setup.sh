#!/usr/bin/env bash
# podman and buildah from Debian's packages, set up to run as root on the CI machines (`make image-test`):
# runc (crun and the systemd cgroup manager do not work there) and default ulimits below the hard limits
# the machines allow (podman's defaults ask for more, and every container fails to start).
set -euo pipefail
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
missing=""
for tool in podman buildah runc debootstrap; do command -v "$tool" > /dev/null || missing="$missing $tool"; done
if [ -n "$missing" ]; then
  echo "podman-setup: apt-get install podman buildah runc debootstrap"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    podman buildah runc debootstrap uidmap fuse-overlayfs slirp4netns netavark aardvark-dns iptables > /dev/null
fi
conf=/etc/containers/containers.conf
want='# Written by bespoke tools/podman-setup.sh for `make image-test`.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"'
if [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
  [ ! -e "$conf" ] || grep -q "bespoke tools/podman-setup.sh" "$conf" || {
    echo "podman-setup: $conf exists and is not ours; fix: add cgroup_manager = \"cgroupfs\", runtime = \"runc\" and default_ulimits (nofile 20000, nproc 32768) to it, or move it away" >&2
    exit 1
  }
  $sudo mkdir -p /etc/containers
  printf '%s\n' "$want" | $sudo tee "$conf" > /dev/null
  echo "podman-setup: wrote $conf"
fi
