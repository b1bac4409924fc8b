//! The one synchronisation shim: every atomic, spin hint and lock in this crate comes
//! from here, so `RUSTFLAGS="--cfg loom"` swaps them all for loom's model-checked ones.

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize};
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize};

pub(crate) use core::sync::atomic::Ordering;

/// Spin-wait hint; under loom, a yield so the model can schedule the other thread.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    core::hint::spin_loop();
}

/// A mutual-exclusion lock: `spin::Mutex` on hardware, loom's `Mutex` under the model.
pub(crate) struct Mutex<T> {
    #[cfg(loom)]
    inner: loom::sync::Mutex<T>,
    #[cfg(not(loom))]
    inner: spin::Mutex<T>,
}

#[cfg(loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;
#[cfg(not(loom))]
pub(crate) type MutexGuard<'a, T> = spin::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self {
            #[cfg(loom)]
            inner: loom::sync::Mutex::new(value),
            #[cfg(not(loom))]
            inner: spin::Mutex::new(value),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        #[cfg(loom)]
        return self
            .inner
            .lock()
            .expect("loom mutex poisoned by a failed model thread");
        #[cfg(not(loom))]
        return self.inner.lock();
    }
}

/// Build a `[T; N]` from a constructor (atomics are not `Copy`, and loom's are not const).
pub(crate) fn array<T, const N: usize>(f: impl FnMut(usize) -> T) -> [T; N] {
    core::array::from_fn(f)
}
