//! Moving a vCPU's interrupt file while devices keep sending it MSIs: no MSI lost.
//!
//! Seed: none of the five threads directly; it is seed 000's "no lost kick" for the
//! other producer, the device. A vCPU's interrupt file lives either in hardware (a
//! guest interrupt file of the hart it runs on) or in software (the hypervisor's copy,
//! while the vCPU has no hardware line). A passed-through device sends its MSIs to the
//! file through an IOMMU entry (on RISC-V, the MSI page-table entry of the vCPU's
//! IMSIC page): a *flat* entry naming the hardware file, or, while the file is in
//! software, an *MRIF* entry — the IOMMU sets the identity's bit in a memory-resident
//! interrupt file and sends a notice. The device runs concurrently with every step of
//! a move, and an MSI must land in the file that is read afterwards, or in the MRIF,
//! which is drained into the file.
//!
//! # Protocol
//!
//! The hypervisor provides the steps ([`FileMove`]); this module fixes their order.
//!
//! | move | steps |
//! |---|---|
//! | hardware → software ([`to_software`]) | `retarget` (the entry names the MRIF); `fence` (every MSI translated through the old entry has landed); `move_state` (save the hardware file into the software one; the line is then scrubbed and given away) |
//! | software → hardware ([`to_hardware`]) | `move_state` (restore into the hardware file); `retarget` (the entry names it); `fence`; `drain` (the MRIF's bits into the file, now in hardware) |
//!
//! **Hardware → software, no MSI lost.** An MSI translated through the flat entry is in
//! the hardware file when `fence` returns (the IOMMU's IOFENCE.C: every earlier request
//! complete); `move_state` comes after, so it saves that bit. An MSI translated after
//! `retarget` goes to the MRIF. Saving before the fence could miss an MSI in flight,
//! which would then land in a file that is about to be scrubbed (`loom-mutants`:
//! `msimove-save-before-fence`).
//!
//! **Software → hardware, no MSI lost.** The state moves first; MSIs then still go to
//! the MRIF until `retarget` + `fence`, and `drain` after the fence finds every one
//! of them. (The notice the IOMMU sends for each MRIF bit also drains, wherever the file
//! is at that moment, so the order here is also kept by the notices; `drain` makes the
//! move complete without waiting for one.)
//!
//! **MRIF words.** [`take_mrif_word`] empties a pending word with one atomic swap. A
//! device model that sets MRIF bits with a plain read and write (QEMU 10.0.2's IOMMU
//! does: "non atomic pending bit update") can write back bits a swap already took, so
//! an MSI may be delivered twice (a spurious edge interrupt); it is never lost: the
//! device's write always holds its own bit. The loom model below checks both claims
//! with the device written that way.
use crate::sync::{AtomicU64, Ordering};

/// The steps of a file move, provided by the hypervisor (see the
/// [module docs](self)).
pub trait FileMove {
    /// Point the device's MSIs for this vCPU at the file's new place (the hardware
    /// file, or the MRIF), without waiting.
    fn retarget(&mut self);
    /// Wait until every MSI translated through an earlier entry has landed.
    fn fence(&mut self);
    /// Move the file's state from its old place to its new one.
    fn move_state(&mut self);
    /// Deliver the MRIF's recorded MSIs into the file where it is now.
    fn drain(&mut self);
}

/// Move a file from hardware to software: `retarget`, `fence`, `move_state`.
pub fn to_software(m: &mut impl FileMove) {
    m.retarget();
    m.fence();
    m.move_state();
}

/// Move a file from software to hardware: `move_state`, `retarget`, `fence`, `drain`.
pub fn to_hardware(m: &mut impl FileMove) {
    m.move_state();
    m.retarget();
    m.fence();
    m.drain();
}

/// Take one MRIF pending word, leaving 0: one atomic swap (see the module docs for a
/// device that is not atomic).
pub fn take_mrif_word(w: &AtomicU64) -> u64 {
    w.swap(0, Ordering::AcqRel)
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::{spin_hint, AtomicBool};
    use loom::sync::Arc;
    use loom::thread;

    /// A store that ignores what is there: the device's write of an MRIF word (the
    /// second half of its non-atomic read-modify-write), a restore of the hardware
    /// file's registers. Written as a swap whose result is dropped — the same effect — because loom 0.7 lets a later RMW read a value
    /// older than a plain store it is ordered after (see `remote`'s notes), which
    /// would show a loss that the C++ model does not allow.
    fn plain_store(w: &AtomicU64, v: u64) {
        let _ = w.swap(v, Ordering::SeqCst);
    }

    /// The world of one vCPU's file: the hardware file's pending bits, the software
    /// file's, the MRIF's, the IOMMU entry (true: the MRIF) and the MSIs the device has
    /// translated and not yet written.
    struct World {
        hw: AtomicU64,
        sw: AtomicU64,
        mrif: AtomicU64,
        to_mrif: AtomicBool,
        in_flight: AtomicU64,
    }

    impl World {
        /// The device sends MSI `bit`: translate through the entry, then write — the
        /// MRIF with a plain read and write, as QEMU's IOMMU does.
        fn send(&self, bit: u64) {
            // Reads are RMWs: loom approximates a SeqCst load as an acquire load
            // (tokio-rs/loom#180) and would let the device translate through an entry
            // the fence already retired; an RMW reads the newest value.
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            if self.to_mrif.fetch_or(false, Ordering::SeqCst) {
                let v = self.mrif.load(Ordering::SeqCst);
                plain_store(&self.mrif, v | bit);
            } else {
                self.hw.fetch_or(bit, Ordering::SeqCst);
            }
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// The hypervisor's steps for one move.
    struct Move<'a> {
        w: &'a World,
        to_software: bool,
    }

    impl FileMove for Move<'_> {
        fn retarget(&mut self) {
            // A swap, not a store: see `plain_store`.
            let _ = self.w.to_mrif.swap(self.to_software, Ordering::SeqCst);
        }
        fn fence(&mut self) {
            while self.w.in_flight.fetch_add(0, Ordering::SeqCst) != 0 {
                spin_hint();
            }
        }
        fn move_state(&mut self) {
            if self.to_software {
                // Save, then the line is scrubbed and given away.
                let bits = self.w.hw.swap(0, Ordering::SeqCst);
                self.w.sw.fetch_or(bits, Ordering::SeqCst);
            } else {
                // Restore: the hardware file's registers are written with the saved
                // state (whatever the line held is overwritten).
                let bits = self.w.sw.swap(0, Ordering::SeqCst);
                plain_store(&self.w.hw, bits);
            }
        }
        fn drain(&mut self) {
            let bits = take_mrif_word(&self.w.mrif);
            self.w.hw.fetch_or(bits, Ordering::SeqCst);
        }
    }

    /// A device sends two MSIs while the file moves from hardware to software and
    /// back (a flip, or a migration's two halves). Afterwards the file, in hardware,
    /// holds both (with the MRIF drained once more, as the notice would).
    #[test]
    fn loom_msimove_no_msi_is_lost_across_a_round_trip() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let w = Arc::new(World {
                hw: AtomicU64::new(0),
                sw: AtomicU64::new(0),
                mrif: AtomicU64::new(0),
                to_mrif: AtomicBool::new(false),
                in_flight: AtomicU64::new(0),
            });
            let d = w.clone();
            let device = thread::spawn(move || {
                d.send(0b01);
                d.send(0b10);
            });
            to_software(&mut Move {
                w: &w,
                to_software: true,
            });
            to_hardware(&mut Move {
                w: &w,
                to_software: false,
            });
            device.join().unwrap();
            // The notice of an MSI the MRIF took after the move's drain.
            let late = take_mrif_word(&w.mrif);
            let got = w.hw.load(Ordering::SeqCst) | late;
            assert_eq!(got, 0b11, "an MSI was lost across the move");
        });
    }

    /// The device's non-atomic MRIF update racing the drain: the bit is delivered at
    /// least once (a repeat is allowed), never lost.
    #[test]
    fn loom_msimove_mrif_drain_never_loses_a_bit() {
        loom::model(|| {
            let mrif = Arc::new(AtomicU64::new(0b01));
            let m = mrif.clone();
            let device = thread::spawn(move || {
                let v = m.load(Ordering::SeqCst);
                plain_store(&m, v | 0b10);
            });
            let first = take_mrif_word(&mrif);
            device.join().unwrap();
            let second = take_mrif_word(&mrif);
            assert_eq!(first | second, 0b11, "a bit was lost");
        });
    }
}
