//! The memory-map table: one row per region, as a memory-map viewer shows it.

use std::fmt::Write;

use virtmem::win32::MEMORY_BASIC_INFORMATION;
use virtmem::{MemState, MemoryBasicInformation};

use crate::names::{human, state_name, type_name, FlagKind};

/// Append the table of `regions` (a `VirtualQuery` walk) to `out`.
pub fn write_table(out: &mut String, regions: &[MemoryBasicInformation]) {
    let _ = writeln!(
        out,
        "{:<18}  {:>16} {:>10}  {:<11}  {:<28}  {:<11}  {:<18}  AllocationProtect",
        "BaseAddress", "RegionSize", "", "State", "Protect", "Type", "AllocationBase"
    );
    for m in regions {
        let raw = MEMORY_BASIC_INFORMATION::from(*m);
        let (protect, alloc_base, alloc_protect) = if raw.State == 0x1_0000 {
            ("-".to_string(), "-".to_string(), "-".to_string())
        } else {
            (
                if raw.Protect == 0 { "0".into() } else { FlagKind::Protect.format(raw.Protect) },
                format!("{:#018x}", raw.AllocationBase),
                FlagKind::Protect.format(raw.AllocationProtect),
            )
        };
        let _ = writeln!(
            out,
            "{:#018x}  {:>16} {:>10}  {:<11}  {:<28}  {:<11}  {:<18}  {}",
            raw.BaseAddress,
            format!("{:#x}", raw.RegionSize),
            human(raw.RegionSize as u64),
            state_name(raw.State),
            protect,
            if raw.Type == 0 { "-".into() } else { type_name(raw.Type) },
            alloc_base,
            alloc_protect
        );
    }
    let _ = writeln!(out, "({} regions)", regions.len());
}

/// Fragmentation in percent: over the span from the lowest reservation's base to the end
/// of the highest, `1 - largest free gap / all free space` (0 when the span has no free
/// space). The free space below and above the span (most of a 128 TiB space) is left out:
/// counting it would make every figure ~0 %. `replay` and `stats` both report it.
pub fn fragmentation(regions: &[MemoryBasicInformation]) -> f64 {
    let used = |m: &&MemoryBasicInformation| m.state != MemState::Free;
    let (Some(lo), Some(hi)) = (regions.iter().position(|m| used(&m)), regions.iter().rposition(|m| used(&m))) else {
        return 0.0;
    };
    let gaps = regions[lo..=hi].iter().filter(|m| m.state == MemState::Free).map(|m| m.region_size as u128);
    let (free, largest) = gaps.fold((0u128, 0u128), |(f, l), g| (f + g, l.max(g)));
    if free == 0 {
        0.0
    } else {
        100.0 * (1.0 - largest as f64 / free as f64)
    }
}
