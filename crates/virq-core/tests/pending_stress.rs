//! Threaded stress of the pending set: 2 producers x 1,000,000 raise/lower while the
//! consumer takes changes. Final state equals the reference, with zero missed kicks.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use virq_core::pending::PendingSet;

const OPS: usize = 1_000_000;
const CHECKPOINTS: usize = 20;

#[test]
fn two_producers_a_million_ops_each() {
    let set = Arc::new(PendingSet::<2>::new());
    let kick = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    // Each producer owns 8 ids (distinct), so the reference state is its own last ops.
    let expected = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let barrier = Arc::new(Barrier::new(3));

    let producers: Vec<_> = (0..2usize)
        .map(|p| {
            let (set, kick, expected, barrier) =
                (set.clone(), kick.clone(), expected.clone(), barrier.clone());
            let done = done.clone();
            std::thread::spawn(move || {
                let mut state = 0usize; // bit i = id (p * 64 + 8 + i) pending
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ p as u64;
                for n in 0..OPS {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let i = (rng % 8) as usize;
                    let id = (p * 64 + 8 + i) as u32;
                    if rng & 0x100 != 0 {
                        if set.raise(id).unwrap() {
                            kick.swap(true, Ordering::SeqCst);
                        }
                        state |= 1 << i;
                    } else {
                        set.lower(id).unwrap();
                        state &= !(1 << i);
                    }
                    if (n + 1) % (OPS / CHECKPOINTS) == 0 {
                        expected[p].store(state, Ordering::SeqCst);
                        barrier.wait(); // quiescent: consumer checks
                        barrier.wait(); // consumer done checking
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();

    let mut shadow = [0usize; 2];
    let mut missed = 0;
    let mut takes = 0u64;
    for _ in 0..CHECKPOINTS {
        // Run until both producers reach the checkpoint barrier.
        let waiter = {
            let barrier = barrier.clone();
            std::thread::spawn(move || barrier.wait())
        };
        while !waiter.is_finished() {
            kick.swap(false, Ordering::SeqCst);
            set.take_changes().apply(&mut shadow);
            takes += 1;
        }
        waiter.join().unwrap();
        // Quiescent. If no kick is outstanding, every id the reference has pending must
        // already be in the consumer's view.
        let kicked = kick.swap(false, Ordering::SeqCst);
        for (p, word) in shadow.iter().enumerate() {
            let want = expected[p].load(Ordering::SeqCst) << 8;
            if !kicked && want & !word != 0 {
                missed += 1;
            }
        }
        set.take_changes().apply(&mut shadow);
        for (p, word) in shadow.iter().enumerate() {
            assert_eq!(
                *word,
                expected[p].load(Ordering::SeqCst) << 8,
                "producer {p} state"
            );
        }
        barrier.wait();
    }
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), 2);
    assert_eq!(missed, 0, "missed kicks");
    assert!(takes > 0);
}
