//! Drawing an address space as SVG: one row per reservation (its page runs side by side,
//! coloured by protection, hatched when only reserved), a thin row for each free gap, a
//! legend. Widths inside a row grow with the logarithm of a run's size, so a one-page
//! guard page stays visible next to a terabyte of reserved space; the exact sizes are
//! printed and in each shape's tooltip.

use std::fmt::Write;

use virtmem::{MemState, MemType, MemoryBasicInformation, Protection};

use crate::names::{human, FlagKind};

const WIDTH: f64 = 1200.0;
const LABEL: f64 = 330.0;
const BAR_X: f64 = LABEL + 10.0;
const BAR_W: f64 = WIDTH - BAR_X - 20.0;
const ROW_H: f64 = 30.0;
const GAP_H: f64 = 16.0;
/// Rows drawn at most; the rest are counted in a note.
const MAX_ROWS: usize = 600;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The fill colour of a committed page's protection.
fn colour(p: Protection) -> &'static str {
    match p.base().bits() {
        0x01 => "#8c8c8c", // NOACCESS
        0x02 => "#4e79a7", // READONLY
        0x04 => "#59a14f", // READWRITE
        0x08 => "#b07aa1", // WRITECOPY
        0x10 => "#f1ce63", // EXECUTE
        0x20 => "#f28e2b", // EXECUTE_READ
        0x40 => "#e15759", // EXECUTE_READWRITE
        0x80 => "#ff9da7", // EXECUTE_WRITECOPY
        _ => "#000000",
    }
}

const LEGEND: &[(&str, &str)] = &[
    ("PAGE_READONLY", "#4e79a7"),
    ("PAGE_READWRITE", "#59a14f"),
    ("PAGE_EXECUTE", "#f1ce63"),
    ("PAGE_EXECUTE_READ", "#f28e2b"),
    ("PAGE_EXECUTE_READWRITE", "#e15759"),
    ("PAGE_WRITECOPY", "#b07aa1"),
    ("PAGE_NOACCESS (committed)", "#8c8c8c"),
];

fn short_prot(p: Protection) -> String {
    let s = FlagKind::Protect.format(p.bits());
    s.replace("PAGE_", "")
}

enum Row<'a> {
    Reservation(&'a [MemoryBasicInformation]),
    Free(&'a MemoryBasicInformation),
}

/// Group a `VirtualQuery` walk into reservation rows and free-gap rows.
fn rows(regions: &[MemoryBasicInformation]) -> Vec<Row<'_>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < regions.len() {
        let m = &regions[i];
        if m.state == MemState::Free {
            out.push(Row::Free(m));
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < regions.len() && regions[j].state != MemState::Free && regions[j].allocation_base == m.allocation_base
        {
            j += 1;
        }
        out.push(Row::Reservation(&regions[i..j]));
        i = j;
    }
    out
}

fn tooltip(m: &MemoryBasicInformation) -> String {
    let state = match m.state {
        MemState::Commit => "committed",
        MemState::Reserve => "reserved",
        MemState::Free => "free",
    };
    let prot = if m.state == MemState::Commit {
        format!(", {}", FlagKind::Protect.format(m.protect.bits()))
    } else {
        String::new()
    };
    format!(
        "{:#x} - {:#x}: {} {state}{prot}",
        m.base_address,
        m.base_address as u128 + m.region_size as u128,
        human(m.region_size as u64)
    )
}

/// Render `regions` as a standalone SVG document. `title` and each of `notes` become
/// text lines at the top.
pub fn render(regions: &[MemoryBasicInformation], title: &str, notes: &[String]) -> String {
    let all = rows(regions);
    let drawn = all.len().min(MAX_ROWS);
    let mut body = String::new();
    let mut y = 30.0 + 18.0 * (notes.len() as f64 + 1.0);
    let _ = writeln!(
        body,
        r##"<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#f4f4f4"/><line x1="0" y1="0" x2="0" y2="6" stroke="#c8c8c8" stroke-width="2"/></pattern><pattern id="guard" width="8" height="8" patternUnits="userSpaceOnUse" patternTransform="rotate(-45)"><line x1="0" y1="0" x2="0" y2="8" stroke="#222" stroke-width="2.5"/></pattern></defs>"##
    );
    for row in &all[..drawn] {
        match row {
            Row::Free(m) => {
                let _ = writeln!(
                    body,
                    r##"<g class="free"><title>{}</title><line x1="{BAR_X}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#bbbbbb" stroke-dasharray="4 4"/><text x="{BAR_X}" y="{:.1}" font-size="10" fill="#888888">free {} at {:#x}</text></g>"##,
                    esc(&tooltip(m)),
                    y + GAP_H / 2.0,
                    BAR_X + BAR_W,
                    y + GAP_H / 2.0,
                    y + GAP_H / 2.0 - 2.0,
                    human(m.region_size as u64),
                    m.base_address
                );
                y += GAP_H;
            }
            Row::Reservation(runs) => {
                let first = &runs[0];
                let size: u128 = runs.iter().map(|r| r.region_size as u128).sum();
                let kind = match first.mem_type {
                    Some(MemType::Image) => "image",
                    Some(MemType::Mapped) => "mapped",
                    _ => "private",
                };
                let _ = writeln!(
                    body,
                    r##"<text x="10" y="{:.1}" font-size="12" font-family="monospace">{:#014x}</text><text x="140" y="{:.1}" font-size="12">{} {kind}{}</text>"##,
                    y + ROW_H / 2.0 + 4.0,
                    first.allocation_base,
                    y + ROW_H / 2.0 + 4.0,
                    human(size as u64),
                    if runs.len() > 1 { format!(", {} runs", runs.len()) } else { String::new() }
                );
                let weights: Vec<f64> =
                    runs.iter().map(|r| 1.0 + ((r.region_size / 4096).max(1) as f64).log2()).collect();
                let total: f64 = weights.iter().sum();
                let mut x = BAR_X;
                for (r, w) in runs.iter().zip(&weights) {
                    let width = (w / total * BAR_W).max(1.0);
                    let (fill, stroke) = match r.state {
                        MemState::Commit => (colour(r.protect).to_string(), "#333333"),
                        _ => ("url(#hatch)".to_string(), "#999999"),
                    };
                    let _ = write!(
                        body,
                        r##"<g><title>{}</title><rect x="{x:.2}" y="{:.1}" width="{width:.2}" height="{:.1}" fill="{fill}" stroke="{stroke}" stroke-width="0.5"/>"##,
                        esc(&tooltip(r)),
                        y + 3.0,
                        ROW_H - 6.0
                    );
                    if r.state == MemState::Commit && r.protect.contains(Protection::GUARD) {
                        let _ = write!(
                            body,
                            r##"<rect x="{x:.2}" y="{:.1}" width="{width:.2}" height="{:.1}" fill="url(#guard)" opacity="0.55"/>"##,
                            y + 3.0,
                            ROW_H - 6.0
                        );
                    }
                    let label = if r.state == MemState::Commit {
                        format!("{} {}", short_prot(r.protect), human(r.region_size as u64))
                    } else {
                        format!("reserved {}", human(r.region_size as u64))
                    };
                    if width > label.len() as f64 * 6.2 + 6.0 {
                        let _ = write!(
                            body,
                            r##"<text x="{:.2}" y="{:.1}" font-size="10" fill="{}">{}</text>"##,
                            x + 3.0,
                            y + ROW_H / 2.0 + 3.5,
                            if r.state == MemState::Commit { "#ffffff" } else { "#555555" },
                            esc(&label)
                        );
                    }
                    let _ = writeln!(body, "</g>");
                    x += width;
                }
                y += ROW_H;
            }
        }
    }
    if all.len() > drawn {
        let _ = writeln!(
            body,
            r##"<text x="10" y="{:.1}" font-size="12" fill="#aa0000">... {} more rows not drawn</text>"##,
            y + 14.0,
            all.len() - drawn
        );
        y += 20.0;
    }
    // Legend.
    y += 16.0;
    let mut x = 10.0;
    let mut legend = String::new();
    let mut items: Vec<(String, String)> = LEGEND.iter().map(|(n, c)| (n.to_string(), c.to_string())).collect();
    items.push(("reserved".into(), "url(#hatch)".into()));
    items.push(("PAGE_GUARD".into(), "url(#guard)".into()));
    for (name, fill) in &items {
        let w = name.len() as f64 * 7.0 + 30.0;
        if x + w > WIDTH {
            x = 10.0;
            y += 20.0;
        }
        let _ = writeln!(
            legend,
            r##"<rect x="{x:.1}" y="{:.1}" width="16" height="12" fill="{fill}" stroke="#333333" stroke-width="0.5"/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"##,
            y,
            x + 20.0,
            y + 10.5,
            esc(name)
        );
        x += w;
    }
    y += 30.0;
    let mut head = String::new();
    let _ = writeln!(
        head,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{y:.0}" viewBox="0 0 {WIDTH} {y:.0}" font-family="sans-serif">"##
    );
    let _ = writeln!(head, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
    let _ = writeln!(head, r##"<text x="10" y="24" font-size="16" font-weight="bold">{}</text>"##, esc(title));
    for (i, n) in notes.iter().enumerate() {
        let _ = writeln!(
            head,
            r##"<text x="10" y="{:.0}" font-size="12" fill="#444444">{}</text>"##,
            44.0 + 18.0 * i as f64,
            esc(n)
        );
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{head}{body}{legend}<text x=\"10\" y=\"{:.0}\" font-size=\"10\" fill=\"#888888\">widths inside a row grow with log2(size); hover a shape for its exact range</text>\n</svg>\n",
        y - 8.0
    )
}
