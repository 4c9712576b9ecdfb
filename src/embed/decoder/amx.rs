//! AMX tiles for the bfloat16 products (Intel Xeon since Sapphire Rapids): one
//! `tdpbf16ps` multiplies a 16 x 32 tile of bfloat16 inputs by a 32 x 16 tile of
//! bfloat16 weights into 16 x 16 f32 sums, 8,192 multiply-adds an instruction, against
//! 32 for `vdpbf16ps` (measured from registers on the development machine: about 1,000
//! G multiply-adds/s a core). The numbers are bf16.rs's: bfloat16 factors, f32 sums; only
//! the order of the sums differs, and it is the same for every row, so a document's
//! vector still does not depend on its batch.
//!
//! [`super::bf16::Bf16Weight`]'s panels are already what a B tile wants (an input pair
//! side by side, 16 columns a 64-byte row): a tile is 16 consecutive pair rows of a
//! panel, loaded with the panel's stride. Inputs are the same pairs, row-major.
//!
//! Chosen at run time: the CPU must have AMX-TILE and AMX-BF16, and Linux must grant this
//! process the tile state (`arch_prctl(ARCH_REQ_XCOMP_PERM)`); `DUETDB_AMX=0` turns it
//! off (for measuring it against the AVX-512 kernel in one run).

/// Rows of a tile.
const ROWS: usize = 16;
/// Rows and columns of a block: two tiles each way (four C tiles).
pub(super) const BLOCK: usize = 2 * ROWS;
/// Input pairs of a tile (32 inputs, 64 bytes a row).
pub(super) const PAIRS: usize = 16;

/// Whether the products may use AMX here (see the module's text); asked once a process.
pub fn available() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        let off = std::env::var("DUETDB_AMX").is_ok_and(|v| v == "0" || v.eq_ignore_ascii_case("off"));
        let ok = !off && cpu_has_amx() && os_grants_tiles();
        tracing::debug!("AMX bfloat16 tiles: {}", if ok { "on" } else { "off" });
        ok
    })
}

/// CPUID leaf 7: AMX-BF16 (EDX bit 22) and AMX-TILE (EDX bit 24).
#[cfg(target_arch = "x86_64")]
fn cpu_has_amx() -> bool {
    // CPUID is always there on x86_64; leaf 7 is read only when leaf 0 says it exists.
    let leaf7 = std::arch::x86_64::__cpuid(0).eax >= 7;
    leaf7 && std::arch::x86_64::__cpuid_count(7, 0).edx & (1 << 22 | 1 << 24) == (1 << 22 | 1 << 24)
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has_amx() -> bool {
    false
}

/// Linux hands the 8 KB of tile registers to a process only when it asks first.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn os_grants_tiles() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a request for a permission; it reads and writes no memory of ours.
    unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn os_grants_tiles() -> bool {
    false
}

/// The tile shapes (`ldtilecfg`'s 64 bytes, palette 1): eight tiles of 64-byte rows (C:
/// up to 16 x 16 f32; A: up to 16 rows x 16 pairs; B: 16 pairs x 16 columns).
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

/// The shapes for a block of `first` + `second` rows: C tiles 0 and 1 and A tile 4 hold
/// the first rows, C tiles 2 and 3 and A tile 5 the second ones; B tiles 6 and 7 are
/// whole. A tile multiply takes time by its rows, so a block of few rows is cheaper with
/// tiles of those rows than with zeros.
fn config(first: usize, second: usize) -> TileConfig {
    let (f, s) = (first.clamp(1, ROWS) as u8, second.clamp(1, ROWS) as u8);
    TileConfig {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        colsb: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
        rows: [f, f, s, s, f, s, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
    }
}

/// `out = a @ panels` for `rows` rows of input pairs `a` (padded to [`padded_rows`]; `kp`
/// pairs a row, a multiple of [`PAIRS`]) and a weight's panels of `nr` = [`BLOCK`] columns
/// (`kp` pair rows each): the block of rows `r0..` and panel `j` goes to `out(r0, j,
/// block)`, whose rows past `rows` are not written.
///
/// # Safety
/// [`available`] must be true, and `a` and `panels` hold what the shapes say.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn blocks(a: &[u32], rows: usize, kp: usize, panels: &[u32], nr: usize, mut out: impl FnMut(usize, usize, &[f32; BLOCK * BLOCK])) {
    debug_assert!(nr == BLOCK && kp.is_multiple_of(PAIRS) && a.len() >= padded_rows(rows) * kp && panels.len().is_multiple_of(kp * nr));
    let mut c = Block([0f32; BLOCK * BLOCK]);
    let whole = rows / BLOCK * BLOCK;
    let set = |cfg: &TileConfig| {
        // SAFETY: `available` checked the CPU and the OS; the configuration is per
        // thread, so each call sets it, and releases the tiles after.
        unsafe { std::arch::asm!("ldtilecfg [{}]", in(reg) cfg as *const TileConfig, options(nostack, readonly)) };
    };
    // SAFETY: the shapes checked above; each panel is `kp * nr` u32s, each block of rows
    // `BLOCK * kp` (the last one `padded_rows` of what is left).
    unsafe {
        // Whole blocks first, each panel for all of them while it is in the cache;
        // then the rest of the rows in tiles of their own height.
        if whole > 0 {
            set(&config(ROWS, ROWS));
            for j in 0..panels.len() / (kp * nr) {
                let panel = panels.as_ptr().add(j * kp * nr);
                for r0 in (0..whole).step_by(BLOCK) {
                    block(a.as_ptr().add(r0 * kp), kp, panel, c.0.as_mut_ptr());
                    out(r0, j, &c.0);
                }
            }
        }
        let rest = rows - whole;
        if rest > 0 {
            set(&config(rest.min(ROWS), rest.saturating_sub(ROWS)));
            let at = a.as_ptr().add(whole * kp);
            for j in 0..panels.len() / (kp * nr) {
                let panel = panels.as_ptr().add(j * kp * nr);
                if rest <= ROWS {
                    half_block(at, kp, panel, c.0.as_mut_ptr());
                } else {
                    block(at, kp, panel, c.0.as_mut_ptr());
                }
                out(whole, j, &c.0);
            }
        }
        std::arch::asm!("tilerelease", options(nostack, nomem));
    }
}

/// 64-byte aligned room for one 32 x 32 block of sums.
#[repr(C, align(64))]
struct Block([f32; BLOCK * BLOCK]);

/// Rows of input pairs for [`blocks`]: whole blocks, or one tile's for a few. (The tiles
/// of the last block read only its rows; the padding keeps every pointer in bounds.)
pub(super) fn padded_rows(rows: usize) -> usize {
    if rows <= ROWS {
        ROWS
    } else {
        rows.next_multiple_of(BLOCK)
    }
}

/// [`block`] for up to 16 rows (one A tile, two C tiles): the rows of a short query. Half
/// the tile products of a 32-row block: measured 1.2-1.8x faster a product than
/// [`block`] with half its rows zero. Each row's sums are in the same order as there, so
/// a row's numbers do not change.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn half_block(a: *const u32, kp: usize, panel: *const u32, c: *mut f32) {
    // SAFETY: the caller's shapes: up to 16 rows of `kp` pairs at `a`, `kp` pair rows of
    // 32 columns at `panel`, 16 x 32 f32 at `c`. The tile registers are not the compiler's.
    unsafe {
        std::arch::asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "2:",
            "tileloadd tmm4, [{a0} + {sa} * 1]",
            "tileloadd tmm6, [{b} + {sb} * 1]",
            "tileloadd tmm7, [{b} + {sb} * 1 + 64]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "add {a0}, 64",
            "add {b}, 2048",
            "dec {n}",
            "jnz 2b",
            "tilestored [{c0} + {sb} * 1], tmm0",
            "tilestored [{c0} + {sb} * 1 + 64], tmm1",
            a0 = inout(reg) a => _,
            b = inout(reg) panel => _,
            n = inout(reg) kp / PAIRS => _,
            sa = in(reg) kp * 4,
            sb = in(reg) 128usize,
            c0 = in(reg) c,
            options(nostack),
        );
    }
}

/// One 32 x 32 block: rows `a..a + 32 * kp` (two A tiles) times one panel's 32 columns
/// (two B tiles), summed over all `kp` pairs in four C tiles, then stored to `c` (row
/// stride 128 bytes).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn block(a: *const u32, kp: usize, panel: *const u32, c: *mut f32) {
    // SAFETY: the caller's shapes: 32 rows of `kp` pairs at `a`, `kp` pair rows of 32
    // columns at `panel`, 32 x 32 f32 at `c`. The tile registers are not the compiler's.
    unsafe {
        std::arch::asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "2:",
            "tileloadd tmm4, [{a0} + {sa} * 1]",
            "tileloadd tmm5, [{a1} + {sa} * 1]",
            "tileloadd tmm6, [{b} + {sb} * 1]",
            "tileloadd tmm7, [{b} + {sb} * 1 + 64]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {a0}, 64",
            "add {a1}, 64",
            "add {b}, 2048",
            "dec {n}",
            "jnz 2b",
            "tilestored [{c0} + {sb} * 1], tmm0",
            "tilestored [{c0} + {sb} * 1 + 64], tmm1",
            "tilestored [{c1} + {sb} * 1], tmm2",
            "tilestored [{c1} + {sb} * 1 + 64], tmm3",
            a0 = inout(reg) a => _,
            a1 = inout(reg) a.add(ROWS * kp) => _,
            b = inout(reg) panel => _,
            n = inout(reg) kp / PAIRS => _,
            sa = in(reg) kp * 4,
            // A panel's pair row and a block's row are both 32 x 4 bytes.
            sb = in(reg) 128usize,
            c0 = in(reg) c,
            c1 = in(reg) c.add(ROWS * BLOCK),
            options(nostack),
        );
    }
}
