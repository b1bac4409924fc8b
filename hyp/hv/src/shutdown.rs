//! A guest's shutdown (SBI SRST): its vCPUs stop, its passthrough routes are released,
//! and the last guest to stop prints the accounting and ends the machine.
use core::sync::atomic::Ordering;

use crate::platform::exit_machine;
use crate::world::world;

/// A guest asked to shut down (SBI SRST) with `status`. Its vCPUs stop; when it is
/// the last guest, hyp prints the accounting and ends the machine with `status`.
pub fn shutdown_guest(guest: usize, status: u32) {
    let w = world();
    let g = &w.guests[guest];
    if !g.alive.swap(false, Ordering::AcqRel) {
        return;
    }
    g.exit_status.store(status, Ordering::Relaxed);
    crate::println!(
        "hyp: guest {} \"{}\" shut down, status {}",
        g.index,
        g.cfg.name,
        status
    );
    for v in g.vcpu_slice() {
        v.kick();
    }
    crate::irq::release_routes(g);
    if w.alive_guests.fetch_sub(1, Ordering::AcqRel) == 1 {
        for g in &w.guests {
            if let Some((_, v)) = &g.vuart {
                v.lock().print_deferred();
            }
        }
        crate::acct::print(w);
        crate::println!("hyp: last guest stopped, exiting with status {status}");
        exit_machine(status.min(0xffff) as u16);
    }
}
