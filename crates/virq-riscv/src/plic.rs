//! vPLIC: a guest-visible RISC-V PLIC (RISC-V PLIC Specification v1.0.0).
//!
//! # Register map (spec chapter "Memory Map")
//!
//! | offset | register |
//! |---|---|
//! | `0x000000 + 4*id` | source priority, `id` in 1..=sources (id 0 reserved) |
//! | `0x001000 + 4*k` | pending bits of sources `32k..32k+31` (read-only) |
//! | `0x002000 + 0x80*ctx + 4*k` | enable bits of context `ctx` |
//! | `0x200000 + 0x1000*ctx` | priority threshold of context `ctx` |
//! | `0x200004 + 0x1000*ctx` | claim (read) / complete (write) of context `ctx` |
//!
//! Priorities and thresholds are 3 bits wide (0..=7, like QEMU's `virt`), WARL: higher
//! bits are dropped. Priority 0 means "never interrupt".
//!
//! # Gateways
//!
//! Each source has a gateway that is *closed* from its claim until its completion.
//! - **Level** sources: while the gateway is open, an asserted line forwards a request
//!   (sets the pending bit). A request once forwarded is **not retracted** when the
//!   line falls before the claim (PLIC spec 1.0.0, "Interrupt Gateways": the request
//!   stays in the IP bit and the handler finds the device needs nothing) — unlike
//!   QEMU's `sifive_plic`, whose pending bit follows the line. On completion a
//!   still-asserted line pends again.
//! - **Edge** sources: an edge while the gateway is open sets the pending bit (edges
//!   coalesce while pending); an edge while it is closed is latched (one) and pends
//!   the source when it completes.
//!
//! Claim returns the highest-priority pending source enabled for the context whose
//! priority exceeds the threshold, ties to the lowest id, clears its pending bit and
//! closes its gateway. A completion is honoured only if the source is enabled for the
//! completing context and its gateway is closed; otherwise it is ignored (spec) and
//! counted in [`ErrorCounters::ignored_value`].
//!
//! # Cost
//!
//! Claim and the output update scan `pending & enable & by_prio[p]` a 64-bit word at a
//! time, highest priority first: `O(levels * words)`, independent of how many sources
//! are pending. `by_prio[p]` holds the sources whose priority is `p`.
//!
//! # Outputs
//!
//! Contexts are mapped to vCPUs at construction. A context's output is "a claim would
//! return non-zero"; on every change the vCPU's VS external interrupt is raised or
//! lowered through [`VcpuIrqSink`]. Completions of sources marked passthrough are
//! reported through [`EoiSink`] so hyp can complete the physical interrupt (for level
//! passthrough that is exactly the "physical complete waits for the guest" rule).

use crate::bits::Bits;
use crate::mmio::{ConfigError, EoiSink, ErrorCounters, MmioDevice, VcpuIrqSink};

/// Highest source id a PLIC can have.
pub const MAX_SOURCES: u32 = 1023;
/// Highest priority (and threshold) value.
pub const MAX_PRIORITY: u32 = 7;

const WORDS: usize = 16; // 1024 bits: ids 0..=1023
const LEVELS: usize = MAX_PRIORITY as usize + 1;

const PENDING_BASE: u32 = 0x1000;
const ENABLE_BASE: u32 = 0x2000;
const ENABLE_STRIDE: u32 = 0x80;
const CONTEXT_BASE: u32 = 0x20_0000;
const CONTEXT_STRIDE: u32 = 0x1000;

/// Size of a PLIC window with `contexts` contexts (threshold and claim/complete of the
/// last one end at `0x20_0000 + 0x1000 * contexts`).
pub fn window_size(contexts: u32) -> u64 {
    u64::from(CONTEXT_BASE) + u64::from(CONTEXT_STRIDE) * u64::from(contexts)
}

/// How a source's input line is interpreted by its gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sense {
    /// Level-triggered (the default).
    Level,
    /// Edge-triggered.
    Edge,
}

#[derive(Clone, Copy, Debug)]
struct Context {
    enable: Bits<WORDS>,
    threshold: u8,
    vcpu: Option<u32>,
    output: bool,
}

/// A guest PLIC with up to `CONTEXTS` contexts and up to 1023 sources.
///
/// **Guarantees:** follows the PLIC specification 1.0.0 as the module docs describe;
/// no guest access panics (see [`crate::mmio`]); the sink is called only when a
/// context's output changes, and the [`EoiSink`] once per honoured completion of a
/// passthrough source. **The caller must:** serialise all calls (one `&mut self`:
/// hold the device's lock around an MMIO access or a line change), and pass MMIO
/// values already in host byte order.
///
/// # Example
///
/// See the [crate-level example](crate); edge sources and claim priority:
///
/// ```
/// use virq_riscv::plic::{Sense, VPlic};
/// use virq_riscv::{MmioDevice, NoEoi, VcpuIrqSink};
///
/// struct Ignore;
/// impl VcpuIrqSink for Ignore {
///     fn set_vseip(&self, _vcpu: u32, _level: bool) {}
/// }
/// let mut plic: VPlic<_, _, 1> = VPlic::new(8, &[Some(0)], Ignore, NoEoi).unwrap();
/// plic.write(4 * 2, 4, 3); // source 2: priority 3
/// plic.write(4 * 6, 4, 1); // source 6: priority 1
/// plic.write(0x2000, 4, (1 << 2) | (1 << 6));
/// plic.set_sense(6, Sense::Edge);
/// plic.pulse(6);
/// plic.set_input(2, true);
/// assert_eq!(plic.claim(0), 2, "highest priority first");
/// assert_eq!(plic.claim(0), 6);
/// assert_eq!(plic.claim(0), 0);
/// ```
pub struct VPlic<S, E, const CONTEXTS: usize> {
    sources: u32,
    contexts: usize,
    /// Number of 64-bit words covering ids 0..=sources.
    words: usize,
    priority: [u8; WORDS * 64],
    by_prio: [Bits<WORDS>; LEVELS],
    pending: Bits<WORDS>,
    /// Gateway closed: claimed and not yet completed.
    claimed: Bits<WORDS>,
    edge: Bits<WORDS>,
    latched: Bits<WORDS>,
    input: Bits<WORDS>,
    passthrough: Bits<WORDS>,
    ctx: [Context; CONTEXTS],
    sink: S,
    eoi: E,
    errors: ErrorCounters,
}

impl<S: VcpuIrqSink, E: EoiSink, const CONTEXTS: usize> VPlic<S, E, CONTEXTS> {
    /// A PLIC with sources `1..=sources` and one context per entry of `context_vcpu`:
    /// `Some(v)` drives vCPU `v`'s VS external interrupt, `None` is a context with no
    /// output (for example a guest-visible M-mode context). All sources start level
    /// triggered, priority 0, not passthrough.
    pub fn new(
        sources: u32,
        context_vcpu: &[Option<u32>],
        sink: S,
        eoi: E,
    ) -> Result<Self, ConfigError> {
        if sources == 0 || sources > MAX_SOURCES {
            return Err(ConfigError::Sources);
        }
        if context_vcpu.is_empty() || context_vcpu.len() > CONTEXTS {
            return Err(ConfigError::Targets);
        }
        for (i, v) in context_vcpu.iter().enumerate() {
            if v.is_some() && context_vcpu[..i].contains(v) {
                return Err(ConfigError::DuplicateVcpu);
            }
        }
        let mut ctx = [Context {
            enable: Bits::new(),
            threshold: 0,
            vcpu: None,
            output: false,
        }; CONTEXTS];
        for (c, v) in ctx.iter_mut().zip(context_vcpu) {
            c.vcpu = *v;
        }
        let mut by_prio = [Bits::new(); LEVELS];
        by_prio[0] = Bits::first_n(sources + 1);
        by_prio[0].clear(0);
        Ok(Self {
            sources,
            contexts: context_vcpu.len(),
            words: (sources as usize + 1).div_ceil(64),
            priority: [0; WORDS * 64],
            by_prio,
            pending: Bits::new(),
            claimed: Bits::new(),
            edge: Bits::new(),
            latched: Bits::new(),
            input: Bits::new(),
            passthrough: Bits::new(),
            ctx,
            sink,
            eoi,
            errors: ErrorCounters::default(),
        })
    }

    /// Number of sources (ids `1..=sources()`).
    pub fn sources(&self) -> u32 {
        self.sources
    }

    /// Number of contexts.
    pub fn contexts(&self) -> usize {
        self.contexts
    }

    fn valid_source(&self, id: u32) -> bool {
        (1..=self.sources).contains(&id)
    }

    /// Sets how `source`'s gateway reads its line. Returns false for a bad id.
    pub fn set_sense(&mut self, source: u32, sense: Sense) -> bool {
        if !self.valid_source(source) {
            return false;
        }
        self.edge.assign(source, sense == Sense::Edge);
        self.latched.clear(source);
        true
    }

    /// Marks `source` as passed through: its completions go to the [`EoiSink`].
    pub fn set_passthrough(&mut self, source: u32, on: bool) -> bool {
        if !self.valid_source(source) {
            return false;
        }
        self.passthrough.assign(source, on);
        true
    }

    /// Drives `source`'s input line. For an edge source a low-to-high transition is an
    /// edge. Returns false for a bad id.
    pub fn set_input(&mut self, source: u32, level: bool) -> bool {
        if !self.valid_source(source) {
            return false;
        }
        let was = self.input.get(source);
        self.input.assign(source, level);
        if self.edge.get(source) {
            if level && !was {
                self.edge_event(source);
            }
        } else if level && !self.claimed.get(source) {
            // Forward a request; a falling line never retracts one (see the module docs).
            self.set_pending(source, true);
        }
        true
    }

    /// One edge on an edge source (for example a passthrough edge interrupt or an
    /// MSI-like doorbell), independent of the line state. Ignored for level sources.
    pub fn pulse(&mut self, source: u32) -> bool {
        if !self.valid_source(source) || !self.edge.get(source) {
            return false;
        }
        self.edge_event(source);
        true
    }

    fn edge_event(&mut self, source: u32) {
        if self.claimed.get(source) {
            self.latched.set(source);
        } else {
            self.set_pending(source, true);
        }
    }

    fn set_pending(&mut self, source: u32, level: bool) {
        if self.pending.get(source) != level {
            self.pending.assign(source, level);
            self.update_source_contexts(source);
        }
    }

    /// Is `source` pending? (For tests and debugging.)
    pub fn is_pending(&self, source: u32) -> bool {
        self.pending.get(source)
    }

    /// Current output level of context `ctx` (false for a bad context).
    pub fn output(&self, ctx: usize) -> bool {
        self.ctx.get(ctx).is_some_and(|c| c.output)
    }

    /// Source a claim by `ctx` would return now (0 if none); no side effect.
    pub fn top(&self, ctx: usize) -> u32 {
        let Some(c) = self.ctx.get(ctx) else { return 0 };
        let mut cand = [0u64; WORDS];
        let mut any = 0;
        for (w, slot) in cand.iter_mut().enumerate().take(self.words) {
            *slot = self.pending.0[w] & c.enable.0[w];
            any |= *slot;
        }
        if any == 0 {
            return 0;
        }
        for p in (usize::from(c.threshold) + 1..LEVELS).rev() {
            let prio = &self.by_prio[p].0;
            for w in 0..self.words {
                let x = cand[w] & prio[w];
                if x != 0 {
                    return w as u32 * 64 + x.trailing_zeros();
                }
            }
        }
        0
    }

    /// Claim by context `ctx` (what a read of its claim register does).
    pub fn claim(&mut self, ctx: usize) -> u32 {
        let id = self.top(ctx);
        if id != 0 {
            self.claimed.set(id);
            self.pending.clear(id);
            self.update_source_contexts(id);
        }
        id
    }

    /// Completion of `source` by context `ctx` (a write to its complete register).
    /// Returns whether the completion was honoured.
    pub fn complete(&mut self, ctx: usize, source: u32) -> bool {
        let enabled = self.ctx.get(ctx).is_some_and(|c| c.enable.get(source));
        if !self.valid_source(source) || !enabled || !self.claimed.get(source) {
            ErrorCounters::bump(&mut self.errors.ignored_value);
            return false;
        }
        self.claimed.clear(source);
        let again = if self.edge.get(source) {
            let l = self.latched.get(source);
            self.latched.clear(source);
            l
        } else {
            self.input.get(source)
        };
        if again {
            self.set_pending(source, true);
        }
        if self.passthrough.get(source) {
            self.eoi.guest_completed(source);
        }
        true
    }

    fn set_priority(&mut self, source: u32, value: u32) {
        let new = (value & MAX_PRIORITY) as u8;
        let old = self.priority[source as usize];
        if new != old {
            self.by_prio[usize::from(old)].clear(source);
            self.by_prio[usize::from(new)].set(source);
            self.priority[source as usize] = new;
            self.update_source_contexts(source);
        }
    }

    fn update_source_contexts(&mut self, source: u32) {
        for c in 0..self.contexts {
            if self.ctx[c].enable.get(source) {
                self.update_context(c);
            }
        }
    }

    fn update_context(&mut self, c: usize) {
        let level = self.top(c) != 0;
        let ctx = &mut self.ctx[c];
        if ctx.output != level {
            ctx.output = level;
            if let Some(v) = ctx.vcpu {
                self.sink.set_vseip(v, level);
            }
        }
    }

    /// Mask of the implemented source bits in 32-bit word `k`.
    fn source_mask32(&self, k: usize) -> u32 {
        let mut m = Bits::<WORDS>::first_n(self.sources + 1).word32(k);
        if k == 0 {
            m &= !1;
        }
        m
    }

    /// Which register `offset` names, if any.
    fn decode(&self, offset: u32) -> Option<Reg> {
        let words32 = (self.sources as usize + 1).div_ceil(32);
        match offset {
            0..PENDING_BASE => {
                let id = offset / 4;
                self.valid_source(id).then_some(Reg::Priority(id))
            }
            PENDING_BASE..ENABLE_BASE => {
                let k = ((offset - PENDING_BASE) / 4) as usize;
                (k < words32).then_some(Reg::Pending(k))
            }
            ENABLE_BASE..CONTEXT_BASE => {
                let rel = offset - ENABLE_BASE;
                let (c, k) = (
                    (rel / ENABLE_STRIDE) as usize,
                    ((rel % ENABLE_STRIDE) / 4) as usize,
                );
                (c < self.contexts && k < words32).then_some(Reg::Enable(c, k))
            }
            _ => {
                let rel = offset - CONTEXT_BASE;
                let c = (rel / CONTEXT_STRIDE) as usize;
                if c >= self.contexts {
                    return None;
                }
                match rel % CONTEXT_STRIDE {
                    0 => Some(Reg::Threshold(c)),
                    4 => Some(Reg::Claim(c)),
                    _ => None,
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Reg {
    Priority(u32),
    Pending(usize),
    Enable(usize, usize),
    Threshold(usize),
    Claim(usize),
}

impl<S: VcpuIrqSink, E: EoiSink, const CONTEXTS: usize> MmioDevice for VPlic<S, E, CONTEXTS> {
    fn region_size(&self) -> u64 {
        window_size(self.contexts as u32)
    }

    fn read(&mut self, offset: u64, size: u8) -> u64 {
        let region = self.region_size();
        let Some(off) = self.errors.check32(offset, size, region) else {
            return 0;
        };
        let Some(reg) = self.decode(off) else {
            ErrorCounters::bump(&mut self.errors.unmapped);
            return 0;
        };
        let v = match reg {
            Reg::Priority(id) => u32::from(self.priority[id as usize]),
            Reg::Pending(k) => self.pending.word32(k) & self.source_mask32(k),
            Reg::Enable(c, k) => self.ctx[c].enable.word32(k),
            Reg::Threshold(c) => u32::from(self.ctx[c].threshold),
            Reg::Claim(c) => self.claim(c),
        };
        u64::from(v)
    }

    fn write(&mut self, offset: u64, size: u8, value: u64) {
        let region = self.region_size();
        let Some(off) = self.errors.check32(offset, size, region) else {
            return;
        };
        let Some(reg) = self.decode(off) else {
            ErrorCounters::bump(&mut self.errors.unmapped);
            return;
        };
        let value = value as u32;
        match reg {
            Reg::Priority(id) => self.set_priority(id, value),
            Reg::Pending(_) => ErrorCounters::bump(&mut self.errors.read_only),
            Reg::Enable(c, k) => {
                let v = value & self.source_mask32(k);
                if self.ctx[c].enable.word32(k) != v {
                    self.ctx[c].enable.set_word32(k, v);
                    self.update_context(c);
                }
            }
            Reg::Threshold(c) => {
                self.ctx[c].threshold = (value & MAX_PRIORITY) as u8;
                self.update_context(c);
            }
            Reg::Claim(c) => {
                self.complete(c, value);
            }
        }
    }

    fn errors(&self) -> ErrorCounters {
        self.errors
    }
}
