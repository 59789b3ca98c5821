//! The memory-map table: one row per region, as a memory-map viewer shows it.

use std::fmt::Write;

use virtmem::win32::MEMORY_BASIC_INFORMATION;
use virtmem::MemoryBasicInformation;

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
