//! Software prefetch for the index probes and row gathers.

/// How far ahead of the id being resolved its successors' slots and rows are prefetched:
/// random reads into a table far larger than the caches are latency-bound otherwise.
pub(crate) const AHEAD: usize = 8;

#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch(p as *const i8, core::arch::x86_64::_MM_HINT_T0)
    }
}
