//! Threaded stress of the pending set: 2 producers x 1,000,000 raise/lower while the
//! consumer takes changes. Final state equals the reference, with zero missed kicks.
//!
//! Both producers work on ids of the *same* word (interleaved: producer p owns ids
//! p, p+2, p+4, …), so one producer's mask RMW regularly continues the release sequence
//! of the other's. The consumer behaves like a vCPU: it only takes changes when kicked
//! (consuming the kick flag with a swap first), so a raise whose kick went missing leaves
//! its id unseen — caught at each of the quiescent checkpoints.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use virq_core::pending::PendingSet;

const OPS: usize = 1_000_000;
const CHECKPOINTS: usize = 50;
const IDS_PER_PRODUCER: usize = 8;

fn id(producer: usize, i: usize) -> u32 {
    (producer + 2 * i) as u32
}

#[test]
fn two_producers_a_million_ops_each() {
    let set = Arc::new(PendingSet::<2>::new());
    let kick = Arc::new(AtomicBool::new(false));
    // Reference state of each producer at the last checkpoint, as a word of ids.
    let expected = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let barrier = Arc::new(Barrier::new(3));

    let producers: Vec<_> = (0..2usize)
        .map(|p| {
            let (set, kick, expected, barrier) =
                (set.clone(), kick.clone(), expected.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut state = 0usize;
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (p as u64 + 1);
                for n in 0..OPS {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let id = id(p, (rng % IDS_PER_PRODUCER as u64) as usize);
                    if rng & 0x100 != 0 {
                        if set.raise(id).unwrap() {
                            kick.swap(true, Ordering::SeqCst);
                        }
                        state |= 1 << id;
                    } else {
                        set.lower(id).unwrap();
                        state &= !(1 << id);
                    }
                    if (n + 1) % (OPS / CHECKPOINTS) == 0 {
                        expected[p].store(state, Ordering::SeqCst);
                        barrier.wait(); // quiescent: consumer checks
                        barrier.wait(); // consumer done checking
                    }
                }
            })
        })
        .collect();

    let mut shadow = [0usize; 2];
    let mut missed = 0;
    let mut takes = 0u64;
    for _ in 0..CHECKPOINTS {
        let waiter = {
            let barrier = barrier.clone();
            std::thread::spawn(move || barrier.wait())
        };
        while !waiter.is_finished() {
            if kick.swap(false, Ordering::SeqCst) {
                set.take_changes().apply(&mut shadow);
                takes += 1;
            } else {
                std::hint::spin_loop();
            }
        }
        waiter.join().unwrap();
        // Quiescent. If no kick is outstanding, every id the reference has pending must
        // already be in the consumer's view (lowered ids may still linger: lowers don't
        // kick).
        let want = expected[0].load(Ordering::SeqCst) | expected[1].load(Ordering::SeqCst);
        if !kick.swap(false, Ordering::SeqCst) && want & !shadow[0] != 0 {
            missed += 1;
        }
        set.take_changes().apply(&mut shadow);
        assert_eq!(shadow, [want, 0], "state at a checkpoint");
        barrier.wait();
    }
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(missed, 0, "missed kicks");
    assert!(takes > 0);
}
