//! A host program playing a hypervisor: guest external interrupt lines per physical
//! hart ([`virq_core::hgei`]) — which vCPU gets a hardware interrupt file where.
//!
//! A RISC-V hart with the AIA has `GEILEN` guest external interrupt lines, one per
//! hardware guest interrupt file of its IMSIC, and harts may differ (seed 003: a
//! big.LITTLE SoC). Each hart thread probes its own `hgeie` at bring-up, then loads its
//! vCPUs: a vCPU that gets a line runs with its interrupts in hardware; one that does
//! not falls back to a software file (trap-and-emulate). A vCPU migrating frees its
//! line on the old hart (only the owner may) and allocates on the new one. When a hart
//! goes offline, the owners of its lines are returned so they can be kicked and move
//! to software files.
//!
//! ```sh
//! cargo run -p virq-core --example hgei
//! ```
//!
//! Caller's duties: every call concerning a hart runs with that hart's interrupts off
//! (the SGEI handler's `owner` lookup takes the same per-hart lock), and lines are
//! allocated on vCPU load, never on a delivery path.
use std::sync::{Arc, Barrier};
use std::thread;

use virq_core::hgei::{guest_files, probe_lines, HgeiAllocator, HgeiError};

const HARTS: usize = 4;

/// What each hart's `hgeie` keeps when all-ones is written (bit 0 never sticks), and
/// its IMSIC's `riscv,guest-index-bits`: hart 0 a big core, hart 3 a core without
/// guest files.
const HGEIE_WIDTH: [u64; HARTS] = [0xfe, 0xfe, 0x0e, 0x00];
const GUEST_INDEX_BITS: [u32; HARTS] = [3, 2, 1, 0];

/// vCPU ids are the allocator's owner ids.
fn vcpus_of(hart: usize) -> impl Iterator<Item = u32> {
    (0..3).map(move |k| (hart * 10 + k) as u32)
}

fn main() {
    let alloc = Arc::new(HgeiAllocator::<HARTS>::new());
    let online = Arc::new(Barrier::new(HARTS));
    let harts: Vec<_> = (0..HARTS)
        .map(|hart| {
            let (alloc, online) = (alloc.clone(), online.clone());
            thread::spawn(move || {
                // Bring-up on the hart itself: probe `hgeie` (a fake CSR here),
                // clamped to the guest files the IMSIC really has.
                let fake_hgeie = |written: u64| written & HGEIE_WIDTH[hart];
                let lines = probe_lines(fake_hgeie, guest_files(GUEST_INDEX_BITS[hart]));
                let n = alloc.online(hart, lines).unwrap();
                online.wait();
                // vCPU load: take a line, or fall back to a software interrupt file.
                let mut placed = Vec::new();
                for vcpu in vcpus_of(hart) {
                    match alloc.alloc(hart, vcpu) {
                        Ok(line) => {
                            // The SGEI handler finds the vCPU from the line.
                            assert_eq!(alloc.owner(hart, line), Some(vcpu));
                            placed.push(format!("vCPU {vcpu}: line {line}"));
                        }
                        Err(HgeiError::NoFreeLine { .. }) => {
                            placed.push(format!("vCPU {vcpu}: software file"));
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                println!("hart {hart}: {n} lines; {}", placed.join(", "));
            })
        })
        .collect();
    for h in harts {
        h.join().unwrap();
    }
    // Heterogeneous harts: the figure every hart can offer is the minimum, and one
    // online hart without lines makes it 0.
    println!(
        "global lines (minimum over online harts): {}",
        alloc.global_lines()
    );
    assert_eq!(alloc.global_lines(), 0);

    // Migration of vCPU 0 from hart 0 to hart 2: free on the old hart (as its owner),
    // allocate on the new one — or go to software if hart 2 is full.
    let line = (1..64).find(|&l| alloc.owner(0, l) == Some(0)).unwrap();
    assert_eq!(
        alloc.free(0, line, 99),
        Err(HgeiError::NotOwner {
            hart: 0,
            line,
            owner: 0
        }),
        "a foreign free is refused, never corrupts"
    );
    alloc.free(0, line, 0).unwrap();
    assert_eq!(
        alloc.free(0, line, 0),
        Err(HgeiError::NotAllocated { hart: 0, line }),
        "a double free is refused"
    );
    match alloc.alloc(2, 0) {
        Ok(l) => println!("vCPU 0 migrated to hart 2, line {l}"),
        Err(e) => println!("vCPU 0 migrated to hart 2, software file ({e})"),
    }

    // Hart 1 goes offline: its owners must be kicked and move to software files.
    let owners: Vec<u32> = alloc.offline(1).unwrap().collect();
    println!("hart 1 offline: kick vCPUs {owners:?}");
    assert_eq!(owners, vec![10, 11, 12]);
    alloc.offline(3).unwrap();
    println!(
        "without hart 3 (no guest files) the global figure is {}",
        alloc.global_lines()
    );
    assert_eq!(alloc.global_lines(), 1);
}
