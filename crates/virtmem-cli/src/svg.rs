//! Drawing an address space as SVG: a to-scale overview strip of the whole used span, then
//! one row per reservation (its page runs side by side,
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
/// Rows drawn at most; beyond that consecutive rows share one (all are drawn).
const MAX_ROWS: usize = 1500;
/// The height the rows may take in all; rows shrink (down to `MIN_ROW_H`) to fit it.
const ROWS_H: f64 = 9000.0;
const MIN_ROW_H: f64 = 4.0;
/// Narrowest shape drawn for a region; narrower neighbours are merged into a "mixed" one.
const MIN_W: f64 = 3.0;
/// The same inside a row standing for several rows (keeps the picture small).
const GROUP_MIN_W: f64 = 24.0;
const OVERVIEW_H: f64 = 22.0;
const FREE_FILL: &str = "#ffffff";

/// Escape `s` for XML text and attribute values; characters XML 1.0 does not allow
/// (controls other than tab, newline and carriage return; U+FFFE, U+FFFF) become U+FFFD.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
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
    /// Several consecutive rows drawn as one, when there are too many rows to draw apart.
    Group(&'a [MemoryBasicInformation], usize),
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

/// At most `MAX_ROWS` rows: beyond that, consecutive rows are drawn together.
fn grouped<'a>(regions: &'a [MemoryBasicInformation], all: Vec<Row<'a>>) -> Vec<Row<'a>> {
    if all.len() <= MAX_ROWS {
        return all;
    }
    let per = all.len().div_ceil(MAX_ROWS);
    let mut out = Vec::new();
    let mut idx = 0; // index into `regions` of the next row's first region
    for chunk in all.chunks(per) {
        let n: usize = chunk
            .iter()
            .map(|r| match r {
                Row::Reservation(runs) | Row::Group(runs, _) => runs.len(),
                Row::Free(_) => 1,
            })
            .sum();
        out.push(Row::Group(&regions[idx..idx + n], chunk.len()));
        idx += n;
    }
    out
}

/// One shape of a row: a region, or a cluster of regions each too narrow to draw apart.
struct Piece<'a> {
    members: &'a [MemoryBasicInformation],
    weight: f64,
}

/// Lay `regions` out in `width` pixels, widths growing with log2 of each region's size;
/// consecutive regions narrower than `MIN_W` are merged into one "mixed" piece. Returns
/// each piece with its width; the widths add up to at most `width`.
fn layout(regions: &[MemoryBasicInformation], width: f64, min_w: f64) -> Vec<(Piece<'_>, f64)> {
    let weight = |r: &MemoryBasicInformation| 1.0 + ((r.region_size / 4096).max(1) as f64).log2();
    let total: f64 = regions.iter().map(weight).sum();
    let mut pieces: Vec<Piece<'_>> = Vec::new();
    let mut i = 0;
    while i < regions.len() {
        let w = weight(&regions[i]);
        if w / total * width >= min_w {
            pieces.push(Piece { members: &regions[i..=i], weight: w });
            i += 1;
            continue;
        }
        // A run of narrow regions becomes one piece (at least min_w wide).
        let mut j = i;
        let mut sum = 0.0;
        while j < regions.len()
            && weight(&regions[j]) / total * width < min_w
            && (j == i || sum / total * width < min_w * 4.0)
        {
            sum += weight(&regions[j]);
            j += 1;
        }
        pieces.push(Piece { members: &regions[i..j], weight: sum.max(min_w * total / width) });
        i = j;
    }
    let sum: f64 = pieces.iter().map(|p| p.weight).sum();
    pieces
        .into_iter()
        .map(|p| {
            let w = p.weight / sum * width;
            (p, w)
        })
        .collect()
}

/// The colour a cluster of regions is drawn in: the protection (or reserved/free state)
/// holding most of its bytes.
fn dominant_fill(members: &[MemoryBasicInformation]) -> String {
    let mut best: Vec<(String, u128)> = Vec::new();
    for m in members {
        let key = match m.state {
            MemState::Commit => colour(m.protect).to_string(),
            MemState::Reserve => "url(#hatch)".to_string(),
            MemState::Free => FREE_FILL.to_string(),
        };
        match best.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += m.region_size as u128,
            None => best.push((key, m.region_size as u128)),
        }
    }
    best.into_iter().max_by_key(|(_, n)| *n).map_or_else(|| FREE_FILL.to_string(), |(k, _)| k)
}

fn cluster_tooltip(members: &[MemoryBasicInformation]) -> String {
    let (first, last) = (&members[0], &members[members.len() - 1]);
    let end = last.base_address as u128 + last.region_size as u128;
    let sum = |st: MemState| members.iter().filter(|m| m.state == st).map(|m| m.region_size as u64).sum::<u64>();
    format!(
        "{:#x} - {end:#x}: {} regions too small to draw apart (committed {}, reserved {}, free {})",
        first.base_address,
        members.len(),
        human(sum(MemState::Commit)),
        human(sum(MemState::Reserve)),
        human(sum(MemState::Free))
    )
}

/// Draw `regions` side by side in the bar at `y`, `height` high; no shape narrower than
/// `min_w` (narrower neighbours are merged).
fn draw_row(body: &mut String, regions: &[MemoryBasicInformation], y: f64, height: f64, min_w: f64) {
    let mut x = BAR_X;
    for (piece, width) in layout(regions, BAR_W, min_w) {
        let width = width.min(BAR_X + BAR_W - x);
        if width < 0.01 {
            break;
        }
        let stroke = if width >= 4.0 && height >= 6.0 { r##" stroke="#333333" stroke-width="0.5""## } else { "" };
        if piece.members.len() > 1 {
            let _ = writeln!(
                body,
                r##"<g class="mixed"><title>{}</title><rect x="{x:.3}" y="{y:.2}" width="{width:.3}" height="{height:.2}" fill="{}"{stroke}/><rect x="{x:.3}" y="{y:.2}" width="{width:.3}" height="{height:.2}" fill="url(#mixed)"/></g>"##,
                esc(&cluster_tooltip(piece.members)),
                dominant_fill(piece.members)
            );
            x += width;
            continue;
        }
        let r = &piece.members[0];
        let fill = match r.state {
            MemState::Commit => colour(r.protect).to_string(),
            MemState::Reserve => "url(#hatch)".to_string(),
            MemState::Free => FREE_FILL.to_string(),
        };
        let _ = write!(
            body,
            r##"<g><title>{}</title><rect x="{x:.3}" y="{y:.2}" width="{width:.3}" height="{height:.2}" fill="{fill}"{stroke}/>"##,
            esc(&tooltip(r))
        );
        if r.state == MemState::Commit && r.protect.contains(Protection::GUARD) {
            let _ = write!(
                body,
                r##"<rect x="{x:.3}" y="{y:.2}" width="{width:.3}" height="{height:.2}" fill="url(#guard)" opacity="0.55"/>"##
            );
        }
        let label = match r.state {
            MemState::Commit => format!("{} {}", short_prot(r.protect), human(r.region_size as u64)),
            MemState::Reserve => format!("reserved {}", human(r.region_size as u64)),
            MemState::Free => format!("free {}", human(r.region_size as u64)),
        };
        if height >= 12.0 && width > label.len() as f64 * 6.2 + 6.0 {
            let _ = write!(
                body,
                r##"<text x="{:.2}" y="{:.2}" font-size="10" fill="{}">{}</text>"##,
                x + 3.0,
                y + height / 2.0 + 3.5,
                if r.state == MemState::Commit { "#ffffff" } else { "#555555" },
                esc(&label)
            );
        }
        let _ = writeln!(body, "</g>");
        x += width;
    }
}

/// The whole-space overview: every region from the lowest reservation to the end of the
/// highest, on a linear scale, regions narrower than a pixel merged into clusters.
fn overview(body: &mut String, regions: &[MemoryBasicInformation], y: f64) {
    let used: Vec<&MemoryBasicInformation> = regions.iter().filter(|m| m.state != MemState::Free).collect();
    let (Some(lo), Some(hi)) = (used.first(), used.last()) else { return };
    let (lo, hi) = (lo.base_address as u128, hi.base_address as u128 + hi.region_size as u128);
    let span = (hi - lo).max(1) as f64;
    let (x0, w) = (10.0, WIDTH - 30.0);
    let _ = writeln!(
        body,
        r##"<text x="10" y="{:.1}" font-size="11" fill="#444444">whole space, {lo:#x} - {hi:#x} ({}), to scale:</text>"##,
        y - 4.0,
        human((hi - lo) as u64)
    );
    let _ = writeln!(
        body,
        r##"<rect x="{x0}" y="{y:.1}" width="{w}" height="{OVERVIEW_H}" fill="{FREE_FILL}" stroke="#999999" stroke-width="0.5"/>"##
    );
    let inside: Vec<MemoryBasicInformation> = regions
        .iter()
        .filter(|m| m.base_address as u128 + m.region_size as u128 > lo && (m.base_address as u128) < hi)
        .copied()
        .collect();
    let px = |a: u128| x0 + ((a.clamp(lo, hi) - lo) as f64 / span * w);
    let mut i = 0;
    while i < inside.len() {
        let start = px(inside[i].base_address as u128);
        let mut j = i;
        let mut end = start;
        // Extend the piece until it is at least a pixel wide.
        while j < inside.len() && (j == i || end - start < 1.0) {
            end = px(inside[j].base_address as u128 + inside[j].region_size as u128);
            j += 1;
        }
        let members = &inside[i..j];
        let fill = dominant_fill(members);
        let tip = if members.len() == 1 { tooltip(&members[0]) } else { cluster_tooltip(members) };
        let width = (end - start).max(0.01).min(x0 + w - start);
        if fill != FREE_FILL && width >= 0.01 {
            let _ = writeln!(
                body,
                r##"<g><title>{}</title><rect x="{start:.3}" y="{y:.1}" width="{width:.3}" height="{OVERVIEW_H}" fill="{fill}"/></g>"##,
                esc(&tip)
            );
        }
        i = j;
    }
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
    let ungrouped = rows(regions);
    let row_count = ungrouped.len();
    let all = grouped(regions, ungrouped);
    // Rows shrink to fit ROWS_H; free-gap rows keep their proportion to reservation rows.
    let units: f64 = all.iter().map(|r| if matches!(r, Row::Free(_)) { GAP_H / ROW_H } else { 1.0 }).sum();
    let scale = (ROWS_H / (units * ROW_H)).min(1.0);
    let row_h = (ROW_H * scale).max(MIN_ROW_H);
    let gap_h = (GAP_H * scale).max(MIN_ROW_H / 2.0);
    let mut body = String::new();
    let mut y = 30.0 + 18.0 * (notes.len() as f64 + 1.0);
    let _ = writeln!(
        body,
        r##"<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#f4f4f4"/><line x1="0" y1="0" x2="0" y2="6" stroke="#c8c8c8" stroke-width="2"/></pattern><pattern id="guard" width="8" height="8" patternUnits="userSpaceOnUse" patternTransform="rotate(-45)"><line x1="0" y1="0" x2="0" y2="8" stroke="#222" stroke-width="2.5"/></pattern><pattern id="mixed" width="4" height="4" patternUnits="userSpaceOnUse"><rect width="1" height="4" fill="#ffffff" opacity="0.8"/></pattern></defs>"##
    );
    y += 14.0;
    overview(&mut body, regions, y);
    y += OVERVIEW_H + 14.0;
    let text_ok = row_h >= 12.0;
    for row in &all {
        match row {
            Row::Free(m) => {
                let mid = y + gap_h / 2.0;
                let _ = write!(
                    body,
                    r##"<g class="free"><title>{}</title><line x1="{BAR_X}" y1="{mid:.2}" x2="{:.1}" y2="{mid:.2}" stroke="#bbbbbb" stroke-dasharray="4 4"/>"##,
                    esc(&tooltip(m)),
                    BAR_X + BAR_W,
                );
                if text_ok {
                    let _ = write!(
                        body,
                        r##"<text x="{BAR_X}" y="{:.2}" font-size="10" fill="#888888">free {} at {:#x}</text>"##,
                        mid - 2.0,
                        human(m.region_size as u64),
                        m.base_address
                    );
                }
                let _ = writeln!(body, "</g>");
                y += gap_h;
            }
            Row::Reservation(runs) | Row::Group(runs, _) => {
                let first = &runs[0];
                let size: u128 = runs.iter().map(|r| r.region_size as u128).sum();
                let label = match row {
                    Row::Group(_, n) => format!("{n} rows"),
                    _ => {
                        let kind = match first.mem_type {
                            Some(MemType::Image) => "image",
                            Some(MemType::Mapped) => "mapped",
                            _ => "private",
                        };
                        let n = if runs.len() > 1 { format!(", {} runs", runs.len()) } else { String::new() };
                        format!("{} {kind}{n}", human(size as u64))
                    }
                };
                if text_ok {
                    let _ = writeln!(
                        body,
                        r##"<text x="10" y="{:.1}" font-size="12" font-family="monospace">{:#014x}</text><text x="140" y="{:.1}" font-size="12">{}</text>"##,
                        y + row_h / 2.0 + 4.0,
                        first.base_address,
                        y + row_h / 2.0 + 4.0,
                        esc(&label)
                    );
                }
                let pad = if row_h >= 12.0 { 3.0 } else { 0.5 };
                let min_w = if matches!(row, Row::Group(..)) { GROUP_MIN_W } else { MIN_W };
                draw_row(&mut body, runs, y + pad, row_h - 2.0 * pad, min_w);
                y += row_h;
            }
        }
    }
    if !text_ok {
        let _ = writeln!(
            body,
            r##"<text x="10" y="{:.1}" font-size="11" fill="#444444">{row_count} rows drawn in {} lines (labels omitted at this size; hover a shape for its range)</text>"##,
            y + 14.0,
            all.len()
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
    items.push(("mixed: runs too small to draw apart (main colour)".into(), "url(#mixed)".into()));
    for (name, fill) in &items {
        let w = name.len() as f64 * 7.0 + 30.0;
        if x + w > WIDTH {
            x = 10.0;
            y += 20.0;
        }
        if fill == "url(#mixed)" {
            let _ = write!(legend, r##"<rect x="{x:.1}" y="{y:.1}" width="16" height="12" fill="#59a14f"/>"##);
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
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{head}{body}{legend}<text x=\"10\" y=\"{:.0}\" font-size=\"10\" fill=\"#888888\">widths inside a row grow with log2(size), narrow neighbours merge into striped mixed shapes; the top strip is to scale; hover a shape for its exact range</text>\n</svg>\n",
        y - 8.0
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn esc_drops_what_xml_forbids() {
        assert_eq!(super::esc("a\x01b\x1f<&>\"\u{FFFE}\tc"), "a\u{FFFD}b\u{FFFD}&lt;&amp;&gt;&quot;\u{FFFD}\tc");
    }
}
