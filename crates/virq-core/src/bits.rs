//! Word/bit index helpers shared by the bitmap-based mechanisms.

/// Bits per `usize` word.
pub(crate) const WORD_BITS: usize = usize::BITS as usize;

/// (word index, bit mask) of bit `n`.
#[inline]
pub(crate) const fn split(n: usize) -> (usize, usize) {
    (n / WORD_BITS, 1usize << (n % WORD_BITS))
}
