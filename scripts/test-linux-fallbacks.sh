#!/usr/bin/env bash
# The Linux backend's suites again, as on a kernel without MAP_FIXED_NOREPLACE (before
# 4.17), PROCMAP_QUERY (before 6.11) and guard markers (before 6.13): the backend is made
# to do without them (VIRTMEM_LINUX_WITHOUT, see `LinuxBackend::missing_features`; a name
# it does not know makes every backend fail, so a typo here cannot pass unnoticed), so
# every fallback it takes there runs here, on a kernel that has them all. The differential
# test runs 1000 sequences of each kind (parsing /proc/self/maps makes each query of memory
# that is not the backend's slower). Without PAGEMAP_SCAN (before 6.7) there is no write
# watch, which most of these suites use: tests/linux_without.rs covers that fallback.
# Needs: cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
export VIRTMEM_LINUX_WITHOUT=fixed_noreplace,procmap_query,guard
# Two tests check the guard-marker path itself (a kernel without markers takes the one
# `a_release_the_kernel_refuses_to_unmap_is_pooled_instead` checks with a plain backend).
cargo test --release -q -p virtmem \
  --test linux_backend --test linux_edges --test linux_failure --test linux_faults \
  --test linux_map_count --test linux_pool_limit --test linux_watch --test spec_rules \
  --test host_linux --test linux_without --test linux_races --test runtime_review -- \
  --skip a_write_watched_release_the_kernel_refuses_is_parked_with_guard_markers \
  --skip a_parked_release_whose_markers_are_refused_fails_and_keeps_the_reservation
PROPTEST_CASES=1000 cargo test --release -q -p virtmem --test differential
echo "linux fallbacks: the Linux suites pass without $VIRTMEM_LINUX_WITHOUT"
