//! Fixed-size bitmaps of `u64` words, the storage behind every pending/enable array.
//!
//! Guest-visible registers are 32 bits wide (PLIC, APLIC) or XLEN = 64 bits wide
//! (IMSIC `eip`/`eie` on RV64); [`Bits::word32`] and [`Bits::set_word32`] give the
//! 32-bit view. Out-of-range indices are ignored: callers validate guest numbers
//! first, the bitmap only refuses to panic.

/// A bitmap of `W` 64-bit words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Bits<const W: usize>(pub(crate) [u64; W]);

impl<const W: usize> Bits<W> {
    /// All bits clear.
    pub(crate) const fn new() -> Self {
        Self([0; W])
    }

    /// Bit `i`, false when out of range.
    #[inline]
    pub(crate) fn get(&self, i: u32) -> bool {
        let i = i as usize;
        self.0.get(i / 64).is_some_and(|w| (w >> (i % 64)) & 1 == 1)
    }

    /// Sets bit `i` to `v`; no-op when out of range.
    #[inline]
    pub(crate) fn assign(&mut self, i: u32, v: bool) {
        let i = i as usize;
        if let Some(w) = self.0.get_mut(i / 64) {
            let m = 1u64 << (i % 64);
            if v {
                *w |= m;
            } else {
                *w &= !m;
            }
        }
    }

    /// Sets bit `i`.
    #[inline]
    pub(crate) fn set(&mut self, i: u32) {
        self.assign(i, true);
    }

    /// Clears bit `i`.
    #[inline]
    pub(crate) fn clear(&mut self, i: u32) {
        self.assign(i, false);
    }

    /// 32-bit word `k` (bits `32k .. 32k+31`), zero when out of range.
    #[inline]
    pub(crate) fn word32(&self, k: usize) -> u32 {
        self.0
            .get(k / 2)
            .map_or(0, |w| (w >> ((k % 2) * 32)) as u32)
    }

    /// Replaces 32-bit word `k`; no-op when out of range.
    #[inline]
    pub(crate) fn set_word32(&mut self, k: usize, v: u32) {
        if let Some(w) = self.0.get_mut(k / 2) {
            let shift = (k % 2) * 32;
            *w = (*w & !(0xffff_ffffu64 << shift)) | (u64::from(v) << shift);
        }
    }

    /// The bitmap with bits `0..n` set (bits at or above `W * 64` are ignored).
    pub(crate) fn first_n(n: u32) -> Self {
        let mut b = Self::new();
        for (i, w) in b.0.iter_mut().enumerate() {
            let lo = i as u32 * 64;
            *w = match n.saturating_sub(lo) {
                0 => 0,
                k if k >= 64 => !0,
                k => (1u64 << k) - 1,
            };
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::Bits;

    #[test]
    fn word32_view_round_trips() {
        let mut b = Bits::<2>::new();
        b.set_word32(1, 0xdead_beef);
        b.set_word32(2, 0x1234_5678);
        assert_eq!(b.word32(1), 0xdead_beef);
        assert_eq!(b.word32(2), 0x1234_5678);
        assert_eq!(b.word32(0), 0);
        assert_eq!(b.word32(4), 0, "out of range reads zero");
        b.set_word32(9, 1); // ignored
        assert!(b.get(32 + 5) && b.get(64 + 4));
    }

    #[test]
    fn first_n_and_out_of_range() {
        assert_eq!(Bits::<2>::first_n(70).0, [!0, 0x3f]);
        assert_eq!(Bits::<2>::first_n(0).0, [0, 0]);
        assert_eq!(Bits::<2>::first_n(500).0, [!0, !0]);
        let mut b = Bits::<2>::new();
        b.set(200);
        b.clear(300);
        assert!(!b.get(200) && b.0 == [0, 0]);
    }
}
