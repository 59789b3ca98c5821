#!/usr/bin/env bash
# The minimum supported Rust version (`rust-version` in the workspace Cargo.toml) really
# builds the workspace: the two libraries (virtmem, virtmem-capi) type-check with that
# toolchain on the checked-in Cargo.lock as it is; every crate and every target (the CLI,
# tests, benches, examples too) type-checks on dependencies resolved for it; and the core
# crate's unit tests build.
#
# The checked-in Cargo.lock follows the newest dependencies (for stable, CI), several of
# which need a newer Rust than the MSRV; this script never touches it. It installs the
# MSRV toolchain with rustup (minimal profile) when missing, copies the workspace to
# target/msrv/ws, checks the libraries there on the copied lockfile, then re-resolves the
# copy's lockfile with cargo's Rust-version-aware resolver (each dependency at its newest
# release whose own `rust-version` is at most ours) and checks everything on that. Needs
# network (rustup, the crates.io index) and a default cargo of 1.84 or later.
#
# `--check-only` skips the unit-test build, which keeps a cold run (the
# toolchain, the index and every dependency downloaded and checked again) near two minutes
# on a 2-core machine (2 min 12 s measured, under load), where the whole script took
# 3 min 54 s; a warm run, 3 s. The check covers the unit
# tests' code too (`--all-targets`), so what the flag leaves out is code generation and
# linking. Its warnings are expected: the MSRV resolution picks assert_cmd 2.1, which
# deprecates a function the CLI's tests call (2.2, in Cargo.lock, does not); lints are
# stable clippy's job (`cargo clippy ... -D warnings`), not this check's.
# Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
fail() { echo "check-msrv: $*" >&2; exit 1; }
build_tests=1
case "${1-}" in
  "") ;;
  --check-only) build_tests=0 ;;
  *) fail "usage: scripts/check-msrv.sh [--check-only]" ;;
esac

msrv=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml)
[ -n "$msrv" ] || fail "no rust-version in the workspace Cargo.toml"

command -v rustup >/dev/null || fail "needs rustup to install Rust $msrv (https://rustup.rs)"
if ! rustup run "$msrv" rustc --version >/dev/null 2>&1; then
  echo "check-msrv: installing Rust $msrv (rustup, minimal profile)"
  rustup toolchain install "$msrv" --profile minimal \
    || fail "could not install Rust $msrv with rustup (no network?)"
fi

# The resolution needs cargo 1.84+ (resolver.incompatible-rust-versions); older cargo
# would ignore the setting and keep the stable lockfile's versions.
cargo_minor=$(cargo --version | sed -n 's/^cargo 1\.\([0-9]*\)\..*/\1/p')
[ -n "$cargo_minor" ] && [ "$cargo_minor" -ge 84 ] \
  || fail "resolving for Rust $msrv needs a default cargo 1.84 or later, not '$(cargo --version)'"

# A scratch copy of the sources (a fixed path, so that re-runs are incremental; tar keeps
# the files' times), without the build output and git's data.
ws=target/msrv/ws
rm -rf "$ws"
mkdir -p "$ws"
tar -cf - --exclude=./target --exclude=./.git . | tar -C "$ws" -xf -
cd "$ws"
out=(--locked --target-dir "$root/target/msrv/target")

# The two libraries need no re-resolution: their dependencies in the checked-in Cargo.lock
# build on the MSRV as they are (the CLI's clap and the tests' proptest do not).
echo "check-msrv: cargo +$msrv check -p virtmem -p virtmem-capi, on Cargo.lock as checked in"
cargo "+$msrv" check "${out[@]}" -p virtmem -p virtmem-capi \
  || fail "the libraries do not build with Rust $msrv on Cargo.lock as checked in: see the
  errors above (our code using a newer Rust feature, or a dependency now needing a newer Rust:
  pin it with cargo update -p <it> --precise <older version>, or raise the MSRV)"

CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS=fallback cargo update --quiet \
  || fail "could not resolve the dependencies for Rust $msrv (no network?)"
echo "check-msrv: cargo +$msrv check --workspace --all-targets"
cargo "+$msrv" check "${out[@]}" --workspace --all-targets
what="every crate and target type-checks"
if [ "$build_tests" = 1 ]; then
  echo "check-msrv: cargo +$msrv test -p virtmem --lib --no-run"
  cargo "+$msrv" test "${out[@]}" -p virtmem --lib --no-run
  what="$what, virtmem's unit tests build"
fi
echo "check-msrv: $what with $(rustup run "$msrv" rustc --version)"
