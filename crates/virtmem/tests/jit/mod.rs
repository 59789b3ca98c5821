//! Machine code the JIT-shaped tests write, run and patch.

/// Machine code for `extern "C" fn() -> u32 { n }` on this processor (x86-64 or AArch64).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn returns(n: u16) -> Vec<u8> {
    if cfg!(target_arch = "x86_64") {
        // mov eax, imm32; ret
        let [lo, hi] = n.to_le_bytes();
        vec![0xB8, lo, hi, 0, 0, 0xC3]
    } else {
        // movz w0, #n; ret
        let movz = 0x5280_0000u32 | (u32::from(n) << 5);
        [movz.to_le_bytes(), 0xD65F_03C0u32.to_le_bytes()].concat()
    }
}
