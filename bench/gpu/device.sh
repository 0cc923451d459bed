#!/usr/bin/env bash
# The device call: time CONFIGs within a limit, then pack the logs into $OUT/results.tgz (8 files come back).
#   bash bench/gpu/device.sh SECONDS CONFIG...
limit=$1; shift
rm -rf /tmp/bench/out
timeout "$limit" bash bench/gpu/run.sh "$@" 2>&1
tar czf "${OUT:-/tmp}/results.tgz" -C /tmp/bench out
