#!/usr/bin/env bash
# The minimum supported Rust version (`rust-version` in the workspace Cargo.toml) really
# builds the workspace: every crate and every target (libraries, the CLI, tests, benches,
# examples) type-checks with that toolchain, and the core crate's unit tests build with it.
#
# The checked-in Cargo.lock follows the newest dependencies (for stable, CI), several of
# which need a newer Rust than the MSRV; this script never touches it. It copies the
# workspace to target/msrv/ws, re-resolves the copy's lockfile there with cargo's
# Rust-version-aware resolver (each dependency at its newest release whose own
# `rust-version` is at most ours), and builds the copy with the MSRV toolchain, which it
# installs with rustup (minimal profile) when missing. Needs network (rustup and the
# crates.io index) and a default cargo of 1.84 or later for the resolution.
#
# Not run by .ci/run or scripts/test-all.sh: a cold run costs several minutes (the
# toolchain and a second build of every dependency). Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
fail() { echo "check-msrv: $*" >&2; exit 1; }

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
CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS=fallback cargo update --quiet \
  || fail "could not resolve the dependencies for Rust $msrv (no network?)"

out=(--locked --target-dir "$root/target/msrv/target")
echo "check-msrv: cargo +$msrv check --workspace --all-targets"
cargo "+$msrv" check "${out[@]}" --workspace --all-targets
echo "check-msrv: cargo +$msrv test -p virtmem --lib --no-run"
cargo "+$msrv" test "${out[@]}" -p virtmem --lib --no-run
echo "check-msrv: the workspace builds with Rust $msrv ($(rustup run "$msrv" rustc --version))"
