//! The checked-in C header `include/virtmem.h` must be exactly what cbindgen generates
//! from this crate now. Regenerate it with
//! `VIRTMEM_BLESS=1 cargo test --release -p virtmem-capi --test header`.

use std::path::PathBuf;

#[test]
fn checked_in_header_matches_cbindgen() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let generated = String::from_utf8(generated).expect("UTF-8 header");
    let path = crate_dir.join("../../include/virtmem.h");
    if std::env::var_os("VIRTMEM_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "include/virtmem.h is stale: regenerate it with \
         `VIRTMEM_BLESS=1 cargo test --release -p virtmem-capi --test header` and commit it"
    );
}
