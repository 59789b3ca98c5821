#!/usr/bin/env bash
# The core crate as crates.io would get it: the metadata its page shows, a package without
# the repository's other files (the Wine benchmark program), a README of its own, a
# library that builds from the package (`cargo package`'s verification) and doctests
# (the README's examples among them) that pass from the package.
# Offline: it runs after `cargo test --workspace` (scripts/test-all.sh), which has fetched
# every dependency.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo metadata --offline --no-deps --format-version 1 | python3 -c '
import json, sys
pkg = next(p for p in json.load(sys.stdin)["packages"] if p["name"] == "virtmem")
need = {k: pkg.get(k) for k in ("description", "license", "readme", "keywords", "categories")}
need["repository or homepage"] = pkg.get("repository") or pkg.get("homepage")
missing = [k for k, v in need.items() if not v]
if missing:
    sys.exit(f"package: virtmem lacks {missing}")
msrv = pkg.get("rust_version")
if msrv != "1.80":
    sys.exit(f"package: virtmem says rust-version {msrv}, not 1.80")
'
list=$(cargo package -p virtmem --offline --allow-dirty --list 2>/dev/null)
grep -qx README.md <<<"$list" || { echo "package: no README.md in the package" >&2; exit 1; }
if grep -E '\.(c|exe|svg|png)$' <<<"$list"; then
    echo "package: files above do not belong in the crate" >&2
    exit 1
fi
cargo package -p virtmem --offline --allow-dirty
version=$(cargo metadata --offline --no-deps --format-version 1 |
    python3 -c 'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "virtmem"))')
(cd "target/package/virtmem-$version" && cargo test --offline --doc --target-dir ../../package-check)
echo "package: virtmem packages, builds and passes its doctests from the package"
