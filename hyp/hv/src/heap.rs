//! A bump allocator over the heap region of `hyp.ld`, for boot-time structures only
//! (guest tables, page tables, DTBs). Nothing on an interrupt or exit path allocates;
//! freed memory is never reused.
use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicUsize, Ordering};

/// The allocator: `next` moves up from the heap start, never down.
pub struct Bump {
    next: AtomicUsize,
    end: AtomicUsize,
}

impl Bump {
    const fn new() -> Self {
        Bump {
            next: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
        }
    }

    /// Bytes handed out so far and the total.
    pub fn usage(&self) -> (usize, usize) {
        let (start, end) = crate::arch::heap_range();
        (
            self.next.load(Ordering::Relaxed).saturating_sub(start),
            end - start,
        )
    }
}

#[global_allocator]
static HEAP: Bump = Bump::new();

/// Give the allocator the heap region (boot hart, before any allocation).
pub fn init() {
    let (start, end) = crate::arch::heap_range();
    HEAP.end.store(end, Ordering::Relaxed);
    HEAP.next.store(start, Ordering::Release);
}

/// Usage of the heap: `(used, total)` bytes.
pub fn usage() -> (usize, usize) {
    HEAP.usage()
}

// SAFETY: `alloc` hands out disjoint, suitably aligned ranges of the heap region that
// no other code uses (reserved by the linker script), or null when exhausted;
// `dealloc` never reuses memory, so no range is handed out twice.
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let end = self.end.load(Ordering::Relaxed);
        let mut cur = self.next.load(Ordering::Relaxed);
        loop {
            let start = (cur + layout.align() - 1) & !(layout.align() - 1);
            let Some(new) = start.checked_add(layout.size()) else {
                return core::ptr::null_mut();
            };
            if cur == 0 || new > end {
                return core::ptr::null_mut();
            }
            match self
                .next
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return start as *mut u8,
                Err(now) => cur = now,
            }
        }
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}
