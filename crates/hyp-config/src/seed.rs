//! Each guest's `/chosen/rng-seed`: boot entropy derived from the host's.
//!
//! QEMU `virt` puts 32 random bytes into the host DTB's `/chosen/rng-seed` (the
//! Devicetree Specification's `rng-seed`, which Linux credits to its random pool at
//! boot: "random: crng init done" before the first initcall). A guest without one
//! starts with an unseeded pool, and until enough interrupts have been mixed in,
//! every `get_random_u32()` of its early boot takes the unbatched path (an entropy
//! extraction and a ChaCha block each) — in Debian 6.12 that is, among others, the
//! freelist shuffle of every slab cache created (`init_user_buckets`,
//! `init_msg_buckets`: 30–36 M instructions each under `-icount`; docs/benchmarks.md,
//! op 7).
//!
//! hyp never hands the host's seed itself to a guest: guest `index` gets the first
//! [`GUEST_SEED_LEN`] bytes of the ChaCha20 block (RFC 8439 §2.3) keyed with the
//! host's seed, block counter 0 and nonce `"virq" ‖ index ‖ 0`. ChaCha20 is a PRF, so
//! no guest learns the host's seed or another guest's from its own.

/// Bytes of `rng-seed` each guest gets (QEMU's own seed is 32 bytes).
pub const GUEST_SEED_LEN: usize = 32;

/// The ChaCha20 block function, RFC 8439 §2.3: 64 bytes of key stream for `key`,
/// `counter` and `nonce`.
pub fn chacha20_block(key: &[u8; 32], counter: u32, nonce: &[u8; 12]) -> [u8; 64] {
    let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let mut init = [0u32; 16];
    init[..4].copy_from_slice(&[0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574]);
    for (i, k) in key.chunks_exact(4).enumerate() {
        init[4 + i] = word(k);
    }
    init[12] = counter;
    for (i, n) in nonce.chunks_exact(4).enumerate() {
        init[13 + i] = word(n);
    }
    let mut s = init;
    let qr = |s: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize| {
        s[a] = s[a].wrapping_add(s[b]);
        s[d] = (s[d] ^ s[a]).rotate_left(16);
        s[c] = s[c].wrapping_add(s[d]);
        s[b] = (s[b] ^ s[c]).rotate_left(12);
        s[a] = s[a].wrapping_add(s[b]);
        s[d] = (s[d] ^ s[a]).rotate_left(8);
        s[c] = s[c].wrapping_add(s[d]);
        s[b] = (s[b] ^ s[c]).rotate_left(7);
    };
    for _ in 0..10 {
        qr(&mut s, 0, 4, 8, 12);
        qr(&mut s, 1, 5, 9, 13);
        qr(&mut s, 2, 6, 10, 14);
        qr(&mut s, 3, 7, 11, 15);
        qr(&mut s, 0, 5, 10, 15);
        qr(&mut s, 1, 6, 11, 12);
        qr(&mut s, 2, 7, 8, 13);
        qr(&mut s, 3, 4, 9, 14);
    }
    let mut out = [0u8; 64];
    for (i, o) in out.chunks_exact_mut(4).enumerate() {
        o.copy_from_slice(&s[i].wrapping_add(init[i]).to_le_bytes());
    }
    out
}

/// Guest `index`'s `rng-seed` from the host's `/chosen/rng-seed` (`host`; a shorter
/// one is zero-padded to the 32-byte key, a longer one cut). `None` when the host
/// gave no seed (or an empty one): the guest then gets none either.
pub fn guest_rng_seed(host: &[u8], index: u16) -> Option<[u8; GUEST_SEED_LEN]> {
    if host.is_empty() {
        return None;
    }
    let mut key = [0u8; 32];
    let n = host.len().min(32);
    key[..n].copy_from_slice(&host[..n]);
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(b"virq");
    nonce[4..6].copy_from_slice(&index.to_le_bytes());
    let block = chacha20_block(&key, 0, &nonce);
    let mut seed = [0u8; GUEST_SEED_LEN];
    seed.copy_from_slice(&block[..GUEST_SEED_LEN]);
    Some(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8439 §2.3.2, the block function's test vector.
    #[test]
    fn rfc8439_2_3_2_block_test_vector() {
        let key: [u8; 32] = core::array::from_fn(|i| i as u8);
        let nonce = [0, 0, 0, 0x09, 0, 0, 0, 0x4a, 0, 0, 0, 0];
        let out = chacha20_block(&key, 1, &nonce);
        let expect: [u8; 64] = [
            0x10, 0xf1, 0xe7, 0xe4, 0xd1, 0x3b, 0x59, 0x15, 0x50, 0x0f, 0xdd, 0x1f, 0xa3, 0x20,
            0x71, 0xc4, 0xc7, 0xd1, 0xf4, 0xc7, 0x33, 0xc0, 0x68, 0x03, 0x04, 0x22, 0xaa, 0x9a,
            0xc3, 0xd4, 0x6c, 0x4e, 0xd2, 0x82, 0x64, 0x46, 0x07, 0x9f, 0xaa, 0x09, 0x14, 0xc2,
            0xd7, 0x05, 0xd9, 0x8b, 0x02, 0xa2, 0xb5, 0x12, 0x9c, 0xd1, 0xde, 0x16, 0x4e, 0xb9,
            0xcb, 0xd0, 0x83, 0xe8, 0xa2, 0x50, 0x3c, 0x4e,
        ];
        assert_eq!(out, expect);
    }

    #[test]
    fn each_guest_gets_its_own_seed_never_the_hosts() {
        let host: [u8; 32] = core::array::from_fn(|i| (i * 7 + 3) as u8);
        let a = guest_rng_seed(&host, 0).unwrap();
        let b = guest_rng_seed(&host, 1).unwrap();
        assert_ne!(a, b);
        assert_ne!(a[..], host[..]);
        assert_ne!(b[..], host[..]);
        // Deterministic in the host's seed, and it depends on all of it.
        assert_eq!(guest_rng_seed(&host, 0).unwrap(), a);
        let mut other = host;
        other[31] ^= 1;
        assert_ne!(guest_rng_seed(&other, 0).unwrap(), a);
    }

    #[test]
    fn no_host_seed_no_guest_seed() {
        assert_eq!(guest_rng_seed(&[], 0), None);
        assert!(guest_rng_seed(&[1, 2, 3], 0).is_some());
    }
}
