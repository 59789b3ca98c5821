#!/usr/bin/env bash
# The API documentation builds without a warning: every public item documented
# (`missing_docs`), no broken or private intra-doc links; and the plumbing the sibling
# crates share (hidden, not covered by semver) is not in it.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p virtmem -p virtmem-capi
doc=target/doc/virtmem
test -f "$doc/win32/fn.VirtualAlloc.html" || { echo "docs: $doc/win32 not where expected" >&2; exit 1; }
for page in fn.process_copy_error fn.check_copy fn.with_code_writable enum.CopyRefusal fn.fail; do
    if test -e "$doc/win32/$page.html"; then
        echo "docs: virtmem::win32 documents internal plumbing ($page)" >&2
        exit 1
    fi
done
echo "docs: built without warnings"
