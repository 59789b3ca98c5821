#!/usr/bin/env bash
# The API documentation builds without a warning: every public item documented
# (`missing_docs`), no broken or private intra-doc links.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p virtmem -p virtmem-capi
echo "docs: built without warnings"
