//! Win32 flag names: parsing the words scripts use and printing values the way the
//! Win32 headers spell them.

use virtmem::error::code_name;
use virtmem::Error;

/// The kinds of flag a script parameter takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagKind {
    /// `flAllocationType` (`MEM_*`).
    Alloc,
    /// `dwFreeType` (`MEM_DECOMMIT` / `MEM_RELEASE`).
    Free,
    /// A page protection (`PAGE_*`).
    Protect,
    /// `GetWriteWatch` flags.
    WriteWatch,
}

const ALLOC: &[(&str, u32)] = &[
    ("COMMIT", 0x1000),
    ("RESERVE", 0x2000),
    ("RESET", 0x8_0000),
    ("TOP_DOWN", 0x10_0000),
    ("WRITE_WATCH", 0x20_0000),
    ("PHYSICAL", 0x40_0000),
    ("RESET_UNDO", 0x100_0000),
    ("LARGE_PAGES", 0x2000_0000),
    ("DECOMMIT", 0x4000),
    ("RELEASE", 0x8000),
];

const FREE: &[(&str, u32)] = &[("DECOMMIT", 0x4000), ("RELEASE", 0x8000), ("FREE", 0x1_0000)];

const PROTECT: &[(&str, u32)] = &[
    ("NOACCESS", 0x01),
    ("READONLY", 0x02),
    ("READWRITE", 0x04),
    ("WRITECOPY", 0x08),
    ("EXECUTE", 0x10),
    ("EXECUTE_READ", 0x20),
    ("EXECUTE_READWRITE", 0x40),
    ("EXECUTE_WRITECOPY", 0x80),
    ("GUARD", 0x100),
    ("NOCACHE", 0x200),
    ("WRITECOMBINE", 0x400),
];

/// Short protection aliases accepted by scripts: exactly the ones docs/script.md lists,
/// since every flag word is a name no variable may have.
const PROTECT_ALIASES: &[(&str, u32)] =
    &[("NA", 0x01), ("RO", 0x02), ("RW", 0x04), ("X", 0x10), ("RX", 0x20), ("RWX", 0x40)];

impl FlagKind {
    fn table(self) -> &'static [(&'static str, u32)] {
        match self {
            FlagKind::Alloc => ALLOC,
            FlagKind::Free => FREE,
            FlagKind::Protect => PROTECT,
            FlagKind::WriteWatch => &[("RESET", 1), ("WRITE_WATCH_FLAG_RESET", 1)],
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            FlagKind::Alloc | FlagKind::Free => "MEM_",
            FlagKind::Protect => "PAGE_",
            FlagKind::WriteWatch => "",
        }
    }

    /// The value of flag word `word` (case-insensitive, with or without the `MEM_` /
    /// `PAGE_` prefix), if it names a flag of this kind.
    pub fn lookup(self, word: &str) -> Option<u32> {
        let up = word.to_ascii_uppercase();
        let bare = up.strip_prefix(self.prefix()).filter(|_| !self.prefix().is_empty()).unwrap_or(&up);
        if let Some(&(_, v)) = self.table().iter().find(|(n, _)| *n == bare) {
            return Some(v);
        }
        if self == FlagKind::Protect && bare.len() == up.len() {
            return PROTECT_ALIASES.iter().find(|(n, _)| *n == bare).map(|&(_, v)| v);
        }
        None
    }

    /// A short list of the words this kind accepts, for error messages.
    pub fn expected(self) -> &'static str {
        match self {
            FlagKind::Alloc => "reserve, commit, reset, reset_undo, top_down, write_watch, physical, large_pages",
            FlagKind::Free => "decommit, release",
            FlagKind::Protect => {
                "noaccess, readonly, readwrite, execute, execute_read, execute_readwrite, writecopy, \
                 execute_writecopy (or na, ro, rw, x, rx, rwx), with guard, nocache, writecombine"
            }
            FlagKind::WriteWatch => "reset (WRITE_WATCH_FLAG_RESET) or 0",
        }
    }

    /// `value` spelled as Win32 flags, e.g. `MEM_RESERVE|MEM_COMMIT`; unknown bits in hex.
    pub fn format(self, value: u32) -> String {
        if value == 0 {
            return "0".into();
        }
        let mut parts = Vec::new();
        let mut rest = value;
        let table: &[(&str, u32)] = match self {
            FlagKind::Alloc => &ALLOC[..8],
            FlagKind::WriteWatch => &[("WRITE_WATCH_FLAG_RESET", 1)],
            other => other.table(),
        };
        if self == FlagKind::Protect {
            // One base protection (low byte) then the modifiers.
            if let Some(&(n, v)) = PROTECT.iter().find(|&&(_, v)| v == value & 0xFF) {
                parts.push(format!("PAGE_{n}"));
                rest &= !v;
            }
            for &(n, v) in &PROTECT[8..] {
                if rest & v != 0 {
                    parts.push(format!("PAGE_{n}"));
                    rest &= !v;
                }
            }
        } else {
            for &(n, v) in table {
                if rest & v == v {
                    parts.push(format!("{}{n}", self.prefix()));
                    rest &= !v;
                }
            }
        }
        if rest != 0 {
            parts.push(format!("{rest:#x}"));
        }
        parts.join("|")
    }
}

/// A `MEMORY_BASIC_INFORMATION::State` value spelled out.
pub fn state_name(state: u32) -> String {
    match state {
        0x1000 => "MEM_COMMIT".into(),
        0x2000 => "MEM_RESERVE".into(),
        0x1_0000 => "MEM_FREE".into(),
        other => format!("{other:#x}"),
    }
}

/// A `MEMORY_BASIC_INFORMATION::Type` value spelled out.
pub fn type_name(ty: u32) -> String {
    match ty {
        0 => "0".into(),
        0x2_0000 => "MEM_PRIVATE".into(),
        0x4_0000 => "MEM_MAPPED".into(),
        0x100_0000 => "MEM_IMAGE".into(),
        other => format!("{other:#x}"),
    }
}

/// `NAME (code)` for a Win32 error code.
pub fn error_text(code: u32) -> String {
    format!("{} ({code})", code_name(code))
}

/// How an error is shown: `ERROR_INVALID_ADDRESS (487)`, or for an access exception
/// `STATUS_ACCESS_VIOLATION (0xC0000005): write at 0x…`.
pub fn describe(e: &Error) -> String {
    match e {
        Error::AccessViolation { address, access } | Error::GuardPage { address, access } => {
            format!("{} ({:#010X}): {access} at {address:#x}", e.name(), e.exception_code().unwrap_or(0))
        }
        other => error_text(other.code()),
    }
}

/// The error code for an error name (`ERROR_INVALID_ADDRESS`, `INVALID_ADDRESS`,
/// `STATUS_ACCESS_VIOLATION`...), case-insensitive. Exceptions return their NTSTATUS.
pub fn error_code_of(name: &str) -> Option<u32> {
    let up = name.to_ascii_uppercase();
    match up.as_str() {
        "STATUS_ACCESS_VIOLATION" | "ACCESS_VIOLATION" => return Some(virtmem::error::STATUS_ACCESS_VIOLATION),
        "STATUS_GUARD_PAGE_VIOLATION" | "GUARD_PAGE_VIOLATION" => {
            return Some(virtmem::error::STATUS_GUARD_PAGE_VIOLATION)
        }
        _ => {}
    }
    let bare = up.strip_prefix("ERROR_").unwrap_or(&up);
    (0..2000u32).find(|&c| code_name(c).strip_prefix("ERROR_") == Some(bare) && code_name(c) != "ERROR_UNKNOWN")
}

/// Bytes in binary units: `64 KiB`, `1 TiB`, `1.5 MiB`, `12 B`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else if (v - v.round()).abs() < 0.005 {
        format!("{} {}", v.round() as u64, UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `text` with its control characters (other than tab) escaped as Rust writes them
/// (`\u{1b}`, `\0`, `\r`), for a message quoting its input: an escape sequence in a
/// script or trace is shown, not played by the terminal.
pub fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\t' || !c.is_control() {
            out.push(c);
        } else {
            out.extend(c.escape_debug());
        }
    }
    out
}

/// `text` with its control characters (other than tab) replaced by U+FFFD, one for one,
/// for an input line shown under an error with a caret at a column.
pub fn shown(text: &str) -> String {
    text.chars().map(|c| if c == '\t' || !c.is_control() { c } else { '\u{FFFD}' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_print() {
        assert_eq!(FlagKind::Alloc.lookup("mem_reserve"), Some(0x2000));
        assert_eq!(FlagKind::Alloc.lookup("Commit"), Some(0x1000));
        assert_eq!(FlagKind::Protect.lookup("rw"), Some(4));
        assert_eq!(FlagKind::Protect.lookup("PAGE_rw"), None);
        assert_eq!(FlagKind::Protect.lookup("page_guard"), Some(0x100));
        assert_eq!(FlagKind::Free.lookup("release"), Some(0x8000));
        assert_eq!(FlagKind::Alloc.format(0x3000), "MEM_COMMIT|MEM_RESERVE");
        assert_eq!(FlagKind::Alloc.format(0x4000_2000), "MEM_RESERVE|0x40000000");
        assert_eq!(FlagKind::Protect.format(0x104), "PAGE_READWRITE|PAGE_GUARD");
        assert_eq!(FlagKind::Protect.format(0x6), "0x6");
        assert_eq!(FlagKind::Free.format(0x8000), "MEM_RELEASE");
        assert_eq!(error_code_of("ERROR_INVALID_ADDRESS"), Some(487));
        assert_eq!(error_code_of("invalid_parameter"), Some(87));
        assert_eq!(error_code_of("ERROR_NOPE"), None);
        assert_eq!(human(1 << 40), "1 TiB");
        assert_eq!(human(0x1800), "6 KiB");
        assert_eq!(human(0x1c00), "7 KiB");
        assert_eq!(human(1536 * 1024), "1.5 MiB");
    }
}
