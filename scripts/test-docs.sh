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
# The crate's README (crates.io's page, run as doctests) stands alone, and the workspace
# README's Rust examples are its own, so that they run as doctests too.
python3 - <<'PY'
import re, sys
def rust_blocks(path):
    text = open(path, encoding="utf-8").read()
    blocks = []
    for indent, body in re.findall(r"^( *)```rust\n(.*?)^\1```", text, re.S | re.M):
        blocks.append("".join(line[len(indent):] if line.startswith(indent) else line for line in body.splitlines(True)))
    return text, blocks
crate_text, crate_blocks = rust_blocks("crates/virtmem/README.md")
_, root_blocks = rust_blocks("README.md")
bad = [link for link in re.findall(r"\]\(([^)]*)\)", crate_text) if not re.match(r"https?://|#", link)]
if bad:
    sys.exit(f"docs: crates/virtmem/README.md has links that break outside the repository: {bad}")
if not root_blocks:
    sys.exit("docs: README.md has no Rust example")
missing = [b.splitlines()[0] for b in root_blocks if b not in crate_blocks]
if missing:
    sys.exit(f"docs: README.md's Rust examples not in crates/virtmem/README.md (its doctests): {missing}")
PY
echo "docs: built without warnings; the READMEs' Rust examples are the crate README's doctests"
