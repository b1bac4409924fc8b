//! The physical harts as the layers below the world see them: [`Hart`], the table of
//! all harts and their guest external interrupt line allocator (published by
//! `world::set_world`), making a hart look at its vCPUs ([`poke_hart`]), remote fences
//! and the hart's own S-mode timer.
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use spin::Once;
use virq_core::hgei::HgeiAllocator;
use virq_core::remote::{ServeCounter, Sleepers};

use crate::arch::{self, csr, entry::MAX_HARTS};
use crate::ids::HartId;

/// One physical hart.
pub struct Hart {
    /// Index in `World::harts` (hyp's hart numbering; every "hart" parameter and
    /// vCPU home in hyp is this index).
    pub index: usize,
    /// Hart id (`mhartid`, what SBI calls and the DTB use).
    pub hartid: HartId,
    /// Host PLIC S-mode context.
    pub plic_ctx: Option<u32>,
    /// Remote-fence requests to this hart and the ones it served (virq-core `remote`).
    pub fence: ServeCounter,
    /// Running hyp's scheduler.
    pub online: AtomicBool,
    /// Guest external interrupt lines probed on this hart.
    pub hgei_lines: AtomicU64,
    /// This hart poked itself ([`poke_hart`] of its own index: a kick of a vCPU homed
    /// here, made by the hart itself, needs no IPI). The scheduler's lean path
    /// (`sched::run_vcpu`) returns to the guest only while this is clear; the full path
    /// clears it before it looks at the hart's vCPUs. Only this hart touches it. (A
    /// kick of the vCPU the hart is running sets nothing: `Vcpu::kick`.)
    pub resched: AtomicBool,
}

static HARTS: Once<&'static [Hart]> = Once::new();
static HGEI: Once<&'static HgeiAllocator<MAX_HARTS>> = Once::new();

/// Publish the harts and their line allocator (`world::set_world`, boot hart, once).
pub fn publish(harts: &'static [Hart], hgei: &'static HgeiAllocator<MAX_HARTS>) {
    HARTS.call_once(|| harts);
    HGEI.call_once(|| hgei);
}

/// All harts (`World::harts`), by index.
pub fn harts() -> &'static [Hart] {
    HARTS.get().expect("world built before use")
}

/// The guest external interrupt lines of every hart (`World::hgei`).
pub fn hgei() -> &'static HgeiAllocator<MAX_HARTS> {
    HGEI.get().expect("world built before use")
}

/// The hart hyp is running on (from `tp`).
pub fn this_hart() -> &'static Hart {
    &harts()[arch::hart_local()]
}

/// Make hart `index` re-evaluate: IPI it, or, if it is the current hart, mark it
/// ([`Hart::resched`]): it re-evaluates before entering any guest.
pub fn poke_hart(index: usize) {
    let here = arch::hart_local();
    if let Some(h) = harts().get(index) {
        if index != here {
            arch::send_ipi(h.hartid);
        } else {
            h.resched.store(true, Ordering::Relaxed);
        }
    }
}

/// Program this hart's S-mode timer for `when` (u64::MAX = off).
pub fn set_host_timer(when: u64) {
    if crate::platform::platform().sstc {
        csr::stimecmp::write(when as usize);
    } else {
        arch::sbi::set_timer(when);
    }
}

/// Harts asleep in [`remote_fence`] until another hart serves them (bit = index).
static FENCE_SLEEPERS: Once<Sleepers> = Once::new();

fn fence_sleepers() -> &'static Sleepers {
    FENCE_SLEEPERS.call_once(Sleepers::new)
}

/// How long a hart waiting for a remote fence sleeps at most before it looks again
/// (0.1 ms at 10 MHz): the bound if an IPI back were lost.
const FENCE_NAP_TICKS: u64 = 1_000;

/// Serve remote-fence requests addressed to this hart, then wake the harts asleep
/// waiting for one (virq-core `remote`: `ServeCounter::serve`).
pub fn serve_fences(hart: &Hart) {
    hart.fence.serve(
        fence_sleepers(),
        hart.index,
        || {
            arch::hfence_vvma_all();
            arch::hfence_gvma_all();
            arch::fence_i();
        },
        |i| {
            if let Some(h) = harts().get(i) {
                arch::send_ipi(h.hartid);
            }
        },
    );
}

/// Ask every hart in `mask` (bit = hart index) to flush its guest TLBs and
/// instruction fetch, and wait until they did (serving our own requests meanwhile).
///
/// The wait sleeps in `wfi` rather than spinning: the serving hart IPIs every waiter
/// after it served ([`serve_fences`]; the protocol and its loom model are virq-core's
/// `remote`), and a short host timer bounds each nap. A spin
/// is correct but can starve the hart it waits for when harts share a host CPU — QEMU
/// single-threaded TCG (`-icount`: a spinning hart keeps the only TCG thread until the
/// next timer deadline, 5–50 ms per fence; issue 12), or a nested host that
/// deschedules vCPUs. A notification (`arch::take_ipi`) consumed by the nap is raised again
/// on the way out: it belongs to the scheduler.
pub fn remote_fence(mask: u64) {
    let harts = harts();
    let here = arch::hart_local();
    let mut want = [0u64; MAX_HARTS];
    for (i, h) in harts.iter().enumerate() {
        if mask & (1 << i) == 0 || !h.online.load(Ordering::Acquire) {
            continue;
        }
        if i == here {
            arch::hfence_vvma_all();
            arch::fence_i();
            continue;
        }
        want[i] = h.fence.request();
        arch::send_ipi(h.hartid);
    }
    let mut took_ssi = false;
    for (i, h) in harts.iter().enumerate() {
        if want[i] == 0 {
            continue;
        }
        let mut naps = 0u64;
        loop {
            serve_fences(&harts[here]);
            if h.fence.is_served(want[i]) {
                break;
            }
            // virq-core `remote`: take the pending IPI, announce, look again.
            let sleep = h.fence.prepare_sleep(want[i], fence_sleepers(), here, || {
                took_ssi |= arch::take_ipi();
            });
            if sleep {
                // A request to this hart may have come with the IPI just taken.
                serve_fences(&harts[here]);
                if !h.fence.is_served(want[i]) {
                    set_host_timer(arch::time().saturating_add(FENCE_NAP_TICKS));
                    arch::wait_for_interrupt();
                }
            }
            fence_sleepers().withdraw(here);
            naps += 1;
            if naps == 100_000 {
                // Keep waiting: callers free interrupt-file lines after the fence, and
                // a hart that still maps the old page must not see it reused.
                crate::println!(
                    "hyp: remote fence to hart {} is slow; still waiting",
                    h.hartid
                );
            }
        }
    }
    if took_ssi {
        arch::raise_ipi_self();
    }
}
