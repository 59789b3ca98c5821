//! The checked-in C header `include/virtmem.h` must be exactly what cbindgen generates
//! from this crate now. Regenerate it with
//! `VIRTMEM_BLESS=1 cargo test --release -p virtmem-capi --test header`.
//!
//! cbindgen's output is taken with one change: the `//` comments it puts after
//! `#endif` and the closing brace of `extern "C"` become `/* */` comments, so that the
//! header also compiles as C89 (where `//` is not a comment and `-Wendif-labels` rejects
//! tokens after `#endif`).

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
    let generated = c89_comments(&String::from_utf8(generated).expect("UTF-8 header"));
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

/// `text` with every line of the form `#endif // X` or `} // X` (any spacing) written
/// `#endif /* X */` / `} /* X */`; other lines unchanged.
fn c89_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let rewritten = ["#endif", "}"].iter().find_map(|head| {
            let rest = body.strip_prefix(head)?;
            let (space, comment) = rest.split_once("//")?;
            let ok = !space.is_empty() && space.chars().all(|c| c == ' ');
            ok.then(|| format!("{head}{space}/* {} */", comment.trim()))
        });
        match rewritten {
            Some(r) => {
                out.push_str(&r);
                out.push_str(&line[body.len()..]);
            }
            None => out.push_str(line),
        }
    }
    out
}

#[test]
fn c89_comments_rewrites_directive_comments_only() {
    let text = "#endif // __cplusplus\n}  // extern \"C\"\n// a comment\nint x; // y\n#endif\n";
    assert_eq!(
        c89_comments(text),
        "#endif /* __cplusplus */\n}  /* extern \"C\" */\n// a comment\nint x; // y\n#endif\n"
    );
}
