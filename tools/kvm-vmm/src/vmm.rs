//! The VM itself (riscv64 Linux only): memory, vCPUs, KVM's AIA device, the run loops.
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    kvm_create_device, kvm_device_attr, kvm_device_type_KVM_DEV_TYPE_RISCV_AIA,
    kvm_userspace_memory_region, user_regs_struct, KVM_DEV_RISCV_AIA_ADDR_APLIC,
    KVM_DEV_RISCV_AIA_CONFIG_HART_BITS, KVM_DEV_RISCV_AIA_CONFIG_IDS,
    KVM_DEV_RISCV_AIA_CONFIG_MODE, KVM_DEV_RISCV_AIA_CONFIG_SRCS, KVM_DEV_RISCV_AIA_CTRL_INIT,
    KVM_DEV_RISCV_AIA_GRP_ADDR, KVM_DEV_RISCV_AIA_GRP_CONFIG, KVM_DEV_RISCV_AIA_GRP_CTRL,
    KVM_DEV_RISCV_AIA_MODE_AUTO, KVM_DEV_RISCV_AIA_MODE_EMUL, KVM_DEV_RISCV_AIA_MODE_HWACCEL,
    KVM_EXIT_RISCV_CSR, KVM_EXIT_RISCV_SBI, KVM_REG_RISCV, KVM_REG_RISCV_CONFIG,
    KVM_REG_RISCV_CORE, KVM_REG_RISCV_ISA_EXT, KVM_REG_RISCV_ISA_SINGLE, KVM_REG_RISCV_SBI_EXT,
    KVM_REG_RISCV_SBI_SINGLE, KVM_REG_RISCV_TIMER, KVM_REG_SIZE_U64,
    KVM_RISCV_ISA_EXT_ID_KVM_RISCV_ISA_EXT_MAX, KVM_RISCV_SBI_EXT_ID_KVM_RISCV_SBI_EXT_DBCN,
    KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{DeviceFd, Kvm, VcpuExit, VcpuFd, VmFd};

use crate::console::{self, Call, Lines};
use crate::fdt::{self, Machine};
use crate::stats::{self, Stats};
use crate::{AiaMode, Args};

/// Guest RAM.
const RAM_BASE: u64 = 0x8000_0000;
/// The device tree: this far below the end of RAM (and at most this long).
const DTB_SPACE: u64 = 64 << 10;
/// KVM's AIA in guest physical space: where QEMU's `virt` machine has its S-level
/// IMSIC and APLIC.
const IMSIC_BASE: u64 = 0x2800_0000;
const APLIC_BASE: u64 = 0x0d00_0000;
/// APLIC sources (as QEMU `virt`); the payload uses none, only reads `domaincfg`.
const APLIC_SOURCES: u32 = 96;
/// `KVM_GET_STATS_FD`: `_IO(KVMIO, 0xce)` (include/uapi/linux/kvm.h).
const KVM_GET_STATS_FD: libc::c_ulong = 0xae << 8 | 0xce;
/// Multi-letter ISA extensions by `KVM_RISCV_ISA_EXT_*` id (include/uapi asm/kvm.h,
/// `enum KVM_RISCV_ISA_EXT_ID`); ids 0-6 and 15 are single letters (from the config
/// register instead).
const ISA_EXT_NAMES: [&str; KVM_RISCV_ISA_EXT_ID_KVM_RISCV_ISA_EXT_MAX as usize] = [
    "a",
    "c",
    "d",
    "f",
    "h",
    "i",
    "m",
    "svpbmt",
    "sstc",
    "svinval",
    "zihintpause",
    "zicbom",
    "zicboz",
    "zbb",
    "ssaia",
    "v",
    "svnapot",
    "zba",
    "zbs",
    "zicntr",
    "zicsr",
    "zifencei",
    "zihpm",
    "smstateen",
    "zicond",
    "zbc",
    "zbkb",
    "zbkc",
    "zbkx",
    "zknd",
    "zkne",
    "zknh",
    "zkr",
    "zksed",
    "zksh",
    "zkt",
    "zvbb",
    "zvbc",
    "zvkb",
    "zvkg",
    "zvkned",
    "zvknha",
    "zvknhb",
    "zvksed",
    "zvksh",
    "zvkt",
    "zfh",
    "zfhmin",
    "zihintntl",
    "zvfh",
    "zvfhmin",
    "zfa",
    "ztso",
    "zacas",
    "sscofpmf",
    "zimop",
    "zca",
    "zcb",
    "zcd",
    "zcf",
    "zcmop",
    "zawrs",
    "smnpm",
    "ssnpm",
    "svade",
    "svadu",
    "svvptc",
    "zabha",
    "ziccrse",
    "zaamo",
    "zalrsc",
];

/// A VMM failure: printed as `VIRQ-KVM-VMM error=…`, status 2.
type Result<T> = std::result::Result<T, String>;

fn kvm_err<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Run the VM; the process's exit status.
pub fn run(args: &Args) -> i32 {
    match setup_and_run(args) {
        Ok(status) => status,
        Err(e) => {
            println!("VIRQ-KVM-VMM error={e}");
            2
        }
    }
}

/// Guest RAM, mapped into this process (shared by the vCPU threads: the DBCN console
/// reads from it).
struct GuestRam {
    ptr: *mut u8,
    size: u64,
}

// SAFETY: the mapping lives as long as the process (never unmapped) and is only read or
// written through `read`/`write`, which copy bytes; the guest writing the same bytes
// concurrently at most garbles console text, it cannot make an access unsound.
unsafe impl Send for GuestRam {}
// SAFETY: as for `Send`.
unsafe impl Sync for GuestRam {}

impl GuestRam {
    fn new(size: u64) -> Result<GuestRam> {
        // SAFETY: a new private anonymous mapping; no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!(
                "mmap of {size} bytes: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(GuestRam {
            ptr: ptr.cast(),
            size,
        })
    }

    /// The offset of `[gpa, gpa + len)` in RAM, if it lies inside.
    fn offset(&self, gpa: u64, len: u64) -> Option<usize> {
        let off = gpa.checked_sub(RAM_BASE)?;
        (off.checked_add(len)? <= self.size).then_some(off as usize)
    }

    fn write(&self, gpa: u64, bytes: &[u8]) -> Result<()> {
        let off = self
            .offset(gpa, bytes.len() as u64)
            .ok_or_else(|| format!("{} bytes at {gpa:#x}: outside guest RAM", bytes.len()))?;
        // SAFETY: `offset` checked that the range lies inside the mapping.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(off), bytes.len()) };
        Ok(())
    }

    /// `len` bytes at `gpa` (a guest's allegation: `None` outside RAM).
    fn read(&self, gpa: u64, len: u64) -> Option<Vec<u8>> {
        let off = self.offset(gpa, len)?;
        let mut v = vec![0u8; len as usize];
        // SAFETY: `offset` checked that the range lies inside the mapping.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(off), v.as_mut_ptr(), v.len()) };
        Some(v)
    }
}

/// A 64-bit ONE_REG id of register `index` in class `class`.
fn reg_id(class: u32, index: u64) -> u64 {
    KVM_REG_RISCV as u64 | KVM_REG_SIZE_U64 | u64::from(class) | index
}

/// The core register at byte offset `off` of `struct user_regs_struct` (`pc`, `a0`, …).
fn core_reg(off: usize) -> u64 {
    reg_id(KVM_REG_RISCV_CORE, (off / 8) as u64)
}

fn get_reg(vcpu: &VcpuFd, id: u64) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    vcpu.get_one_reg(id, &mut b)
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
    Ok(u64::from_le_bytes(b))
}

fn set_reg(vcpu: &VcpuFd, id: u64, v: u64) -> std::io::Result<()> {
    vcpu.set_one_reg(id, &v.to_le_bytes())
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
    Ok(())
}

/// `riscv,isa`, `riscv,isa-extensions` and `mmu-type` as KVM reports them for `vcpu`.
fn isa_of(vcpu: &VcpuFd) -> Result<(String, Vec<String>, Option<&'static str>)> {
    // `struct kvm_riscv_config`: isa (0), …, satp_mode (6).
    let letters = get_reg(vcpu, reg_id(KVM_REG_RISCV_CONFIG, 0)).map_err(kvm_err("config.isa"))?;
    let mut exts: Vec<String> = "imafdqcbkjpvh"
        .chars()
        .filter(|c| letters & 1 << (*c as u8 - b'a') != 0)
        .map(String::from)
        .collect();
    let mut multi: Vec<&str> = Vec::new();
    for (id, name) in ISA_EXT_NAMES.iter().enumerate() {
        if name.len() == 1 {
            continue;
        }
        let r = reg_id(
            KVM_REG_RISCV_ISA_EXT,
            u64::from(KVM_REG_RISCV_ISA_SINGLE) | id as u64,
        );
        // Unknown to this kernel: ENOENT; not enabled: 0.
        if get_reg(vcpu, r).is_ok_and(|v| v != 0) {
            multi.push(name);
        }
    }
    // Canonical order: the Z extensions, then the S ones (each alphabetically).
    multi.sort_by_key(|n| (!n.starts_with('z'), *n));
    let isa = std::iter::once(format!("rv64{}", exts.concat()))
        .chain(multi.iter().map(|s| s.to_string()))
        .collect::<Vec<_>>()
        .join("_");
    exts.extend(multi.iter().map(|s| s.to_string()));
    let mmu = match get_reg(vcpu, reg_id(KVM_REG_RISCV_CONFIG, 6)) {
        Ok(8) => Some("riscv,sv39"),
        Ok(9) => Some("riscv,sv48"),
        Ok(10) => Some("riscv,sv57"),
        _ => None,
    };
    Ok((isa, exts, mmu))
}

fn set_attr<T>(dev: &DeviceFd, group: u32, attr: u64, v: &T, what: &str) -> Result<()> {
    let a = kvm_device_attr {
        flags: 0,
        group,
        attr,
        addr: v as *const T as u64,
    };
    dev.set_device_attr(&a).map_err(kvm_err(what))
}

fn get_attr_u32(dev: &DeviceFd, group: u32, attr: u64, what: &str) -> Result<u32> {
    let mut v = 0u32;
    let mut a = kvm_device_attr {
        flags: 0,
        group,
        attr,
        addr: &mut v as *mut u32 as u64,
    };
    // SAFETY: `addr` points at a `u32`, the size of every CONFIG attribute of the AIA
    // device; the kernel writes only that.
    unsafe { dev.get_device_attr(&mut a) }.map_err(kvm_err(what))?;
    Ok(v)
}

/// KVM's in-kernel AIA for `vcpus` vCPUs (created already): configure, place, init.
fn create_aia(vm: &VmFd, vcpus: u32, mode: AiaMode) -> Result<(DeviceFd, u32, u32)> {
    let mut cd = kvm_create_device {
        type_: kvm_device_type_KVM_DEV_TYPE_RISCV_AIA,
        fd: 0,
        flags: 0,
    };
    let dev = vm
        .create_device(&mut cd)
        .map_err(kvm_err("KVM_CREATE_DEVICE(RISCV_AIA)"))?;
    let cfg = KVM_DEV_RISCV_AIA_GRP_CONFIG;
    let mode = match mode {
        AiaMode::Emul => KVM_DEV_RISCV_AIA_MODE_EMUL,
        AiaMode::HwAccel => KVM_DEV_RISCV_AIA_MODE_HWACCEL,
        AiaMode::Auto => KVM_DEV_RISCV_AIA_MODE_AUTO,
    };
    set_attr(
        &dev,
        cfg,
        KVM_DEV_RISCV_AIA_CONFIG_MODE.into(),
        &mode,
        "AIA mode",
    )?;
    // KVM's default is the host's IMSIC identities (255 under QEMU): keep it, set it.
    let ids = get_attr_u32(&dev, cfg, KVM_DEV_RISCV_AIA_CONFIG_IDS.into(), "AIA ids")?;
    set_attr(
        &dev,
        cfg,
        KVM_DEV_RISCV_AIA_CONFIG_IDS.into(),
        &ids,
        "AIA ids",
    )?;
    set_attr(
        &dev,
        cfg,
        KVM_DEV_RISCV_AIA_CONFIG_SRCS.into(),
        &APLIC_SOURCES,
        "AIA sources",
    )?;
    // vCPU i's IMSIC at IMSIC_BASE + i pages: the hart index takes these many bits.
    let hart_bits = 32 - (vcpus - 1).leading_zeros();
    set_attr(
        &dev,
        cfg,
        KVM_DEV_RISCV_AIA_CONFIG_HART_BITS.into(),
        &hart_bits,
        "AIA hart bits",
    )?;
    let addr = KVM_DEV_RISCV_AIA_GRP_ADDR;
    set_attr(
        &dev,
        addr,
        KVM_DEV_RISCV_AIA_ADDR_APLIC.into(),
        &APLIC_BASE,
        "APLIC address",
    )?;
    for i in 0..vcpus {
        let a = IMSIC_BASE + u64::from(i) * fdt::IMSIC_FILE_SIZE;
        // KVM_DEV_RISCV_AIA_ADDR_IMSIC(i) = 1 + i.
        set_attr(&dev, addr, 1 + u64::from(i), &a, "IMSIC address")?;
    }
    set_attr(
        &dev,
        KVM_DEV_RISCV_AIA_GRP_CTRL,
        KVM_DEV_RISCV_AIA_CTRL_INIT.into(),
        &0u64,
        "AIA init",
    )?;
    Ok((dev, ids, hart_bits))
}

/// The payload's load address from its RISC-V `Image` header (`text_offset` at 8,
/// `image_size` at 16, magic "RSC\x05" at 56), checked to fit below `limit`.
fn load_payload(ram: &GuestRam, path: &str, limit: u64) -> Result<u64> {
    let img = std::fs::read(path).map_err(kvm_err(path))?;
    let u64_at = |o: usize| u64::from_le_bytes(img[o..o + 8].try_into().expect("8 bytes"));
    if img.len() < 64 || img[56..60] != *b"RSC\x05" {
        return Err(format!("{path}: no RISC-V Image header"));
    }
    let (text_offset, image_size) = (u64_at(8), u64_at(16).max(img.len() as u64));
    let at = RAM_BASE + text_offset;
    if at + image_size > limit {
        return Err(format!(
            "{path}: {image_size} bytes at {at:#x} do not fit below {limit:#x}"
        ));
    }
    ram.write(at, &img)?;
    Ok(at)
}

/// The console and the stats windows, shared by the vCPU threads.
struct Console {
    lines: Lines,
    /// Per vCPU: its counters at the end of the last window, and its console calls since.
    last: Vec<Vec<u64>>,
    calls: Vec<u64>,
    /// The host's interrupt counts at the end of the last window.
    host_irqs: Vec<(String, u64)>,
}

struct Shared {
    ram: GuestRam,
    stats: Vec<Stats>,
    stats_at: String,
    console: Mutex<Console>,
}

impl Shared {
    /// Print a finished guest line; after a marked line, each vCPU's counters since the
    /// previous one.
    fn line(&self, c: &mut Console, line: &str) {
        println!("{line}");
        let Some(at) = line.find(&self.stats_at) else {
            return;
        };
        let after = line[at + self.stats_at.len()..]
            .split_whitespace()
            .next()
            .unwrap_or("-");
        for (i, s) in self.stats.iter().enumerate() {
            match s.read() {
                Ok(now) => {
                    println!(
                        "VIRQ-KVM-EXITS after={after} vcpu={i} console_calls={} {}",
                        c.calls[i],
                        stats::deltas(&s.layout, &c.last[i], &now)
                    );
                    c.last[i] = now;
                    c.calls[i] = 0;
                }
                Err(e) => println!("VIRQ-KVM-EXITS after={after} vcpu={i} error={e}"),
            }
        }
        let now = host_irqs();
        println!(
            "VIRQ-KVM-HOST-IRQS after={after} {}",
            irq_deltas(&c.host_irqs, &now)
        );
        c.host_irqs = now;
    }

    /// A forwarded SBI call of vCPU `i`: `(a0, a1)` to return.
    fn sbi(&self, i: usize, eid: u64, fid: u64, args: &[u64; 6]) -> (i64, u64) {
        let call = console::decode(eid, fid, args);
        let bytes = match call {
            Call::PutChar(b) => vec![b],
            Call::Write { gpa, len } => match self.ram.read(gpa, len.min(4096)) {
                Some(b) => b,
                None => return (console::SBI_ERR_INVALID_PARAM, 0),
            },
            Call::Read => return (console::SBI_SUCCESS, 0),
            Call::Unsupported { .. } => return (console::SBI_ERR_NOT_SUPPORTED, 0),
        };
        let mut c = self.console.lock().unwrap_or_else(|p| p.into_inner());
        c.calls[i] += 1;
        for line in c.lines.push(&bytes) {
            self.line(&mut c, &line);
        }
        let written = if eid == console::EID_LEGACY_PUTCHAR {
            0
        } else {
            bytes.len() as u64
        };
        (console::SBI_SUCCESS, written)
    }

    /// The totals at the end.
    fn finish(&self) {
        let mut c = self.console.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rest) = c.lines.take_partial() {
            println!("{rest}");
        }
        for (i, s) in self.stats.iter().enumerate() {
            match s.read() {
                Ok(now) => {
                    let zero = vec![0; now.len()];
                    println!(
                        "VIRQ-KVM-STATS vcpu={i} total {}",
                        stats::deltas(&s.layout, &zero, &now)
                    );
                }
                Err(e) => println!("VIRQ-KVM-STATS vcpu={i} error={e}"),
            }
        }
    }
}

/// The host's interrupts from `/proc/interrupts`: `(name, count over all CPUs)`, the
/// name being the number (or `IPI0`, `LOC`…) and the last word of the line.
fn host_irqs() -> Vec<(String, u64)> {
    let Ok(text) = std::fs::read_to_string("/proc/interrupts") else {
        return Vec::new();
    };
    let cpus = text
        .lines()
        .next()
        .map_or(0, |l| l.split_whitespace().count());
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let (id, rest) = l.split_once(':')?;
            let words: Vec<&str> = rest.split_whitespace().collect();
            let count = words
                .iter()
                .take(cpus)
                .map_while(|w| w.parse::<u64>().ok())
                .sum();
            let name = words.last().filter(|_| words.len() > cpus).unwrap_or(&"");
            Some((format!("{}:{name}", id.trim()), count))
        })
        .collect()
}

/// `name=delta` for the interrupts that moved.
fn irq_deltas(before: &[(String, u64)], after: &[(String, u64)]) -> String {
    after
        .iter()
        .filter_map(|(n, a)| {
            let b = before.iter().find(|(m, _)| m == n).map_or(0, |x| x.1);
            (a != &b).then(|| format!("{n}={}", a.wrapping_sub(b)))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// How a vCPU thread ended: the VMM's exit status.
enum Stop {
    /// SRST: 0 for reason "none", else 1.
    Shutdown(i32),
    Failed(String),
}

/// Pin the calling thread to host CPU `cpu`.
fn pin(cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed `cpu_set_t` is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` < the host's CPU count, far below `CPU_SETSIZE` (1024).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid `cpu_set_t` of the size passed; 0 is this thread.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Run vCPU `i` until the guest powers off or something fails.
fn vcpu_loop(i: usize, mut vcpu: VcpuFd, shared: &Shared) -> Stop {
    loop {
        let exit = match vcpu.run() {
            Ok(e) => e,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
            Err(e) => return Stop::Failed(format!("vcpu {i}: KVM_RUN: {e}")),
        };
        match exit {
            VcpuExit::SystemEvent(kind, data) => {
                let reason = data.first().copied().unwrap_or(0);
                let what = match kind {
                    KVM_SYSTEM_EVENT_SHUTDOWN => "shutdown",
                    KVM_SYSTEM_EVENT_RESET => "reset",
                    _ => "other",
                };
                println!("VIRQ-KVM-VMM vcpu={i} system_event={what}({kind}) reason={reason}");
                return Stop::Shutdown(if reason == 0 { 0 } else { 1 });
            }
            VcpuExit::Unsupported(KVM_EXIT_RISCV_SBI) => {
                let run = vcpu.get_kvm_run();
                // SAFETY: the exit reason says `riscv_sbi` is the union's live member.
                let sbi = unsafe { &mut run.__bindgen_anon_1.riscv_sbi };
                let args = sbi.args;
                let (err, val) = shared.sbi(i, sbi.extension_id, sbi.function_id, &args);
                sbi.ret = [err as u64, val];
            }
            VcpuExit::Unsupported(KVM_EXIT_RISCV_CSR) => {
                let run = vcpu.get_kvm_run();
                // SAFETY: the exit reason says `riscv_csr` is the union's live member.
                let csr = unsafe { run.__bindgen_anon_1.riscv_csr };
                return Stop::Failed(format!(
                    "vcpu {i}: CSR {:#x} access not emulated (new {:#x}, mask {:#x})",
                    csr.csr_num, csr.new_value, csr.write_mask
                ));
            }
            VcpuExit::MmioRead(addr, data) => {
                return Stop::Failed(format!(
                    "vcpu {i}: MMIO read of {} bytes at {addr:#x}: no device there",
                    data.len()
                ))
            }
            VcpuExit::MmioWrite(addr, data) => {
                return Stop::Failed(format!(
                    "vcpu {i}: MMIO write {data:02x?} at {addr:#x}: no device there"
                ))
            }
            VcpuExit::Intr => continue,
            other => return Stop::Failed(format!("vcpu {i}: unexpected exit {other:?}")),
        }
    }
}

fn setup_and_run(args: &Args) -> Result<i32> {
    let kvm = Kvm::new().map_err(kvm_err("/dev/kvm"))?;
    let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
    let ram_size = args.mem_mib << 20;
    let ram = GuestRam::new(ram_size)?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: RAM_BASE,
        memory_size: ram_size,
        userspace_addr: ram.ptr as u64,
    };
    // SAFETY: the region is our private mapping of `ram_size` bytes, alive (never
    // unmapped) for as long as the VM.
    unsafe { vm.set_user_memory_region(region) }.map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;

    let mut vcpus = Vec::new();
    for i in 0..args.vcpus {
        vcpus.push(
            vm.create_vcpu(u64::from(i))
                .map_err(kvm_err("KVM_CREATE_VCPU"))?,
        );
    }
    let (aia, ids, hart_bits) = create_aia(&vm, args.vcpus, args.aia_mode)?;
    let mode = get_attr_u32(
        &aia,
        KVM_DEV_RISCV_AIA_GRP_CONFIG,
        KVM_DEV_RISCV_AIA_CONFIG_MODE.into(),
        "AIA mode",
    )?;

    let (isa, isa_extensions, mmu_type) = isa_of(&vcpus[0])?;
    let timebase =
        get_reg(&vcpus[0], reg_id(KVM_REG_RISCV_TIMER, 0)).map_err(kvm_err("timer.frequency"))?;
    let dtb_gpa = RAM_BASE + ram_size - DTB_SPACE;
    let entry = load_payload(&ram, &args.payload, dtb_gpa)?;
    let machine = Machine {
        ram_base: RAM_BASE,
        ram_size,
        harts: args.vcpus,
        isa: isa.clone(),
        isa_extensions,
        mmu_type,
        timebase_hz: timebase as u32,
        imsic_base: IMSIC_BASE,
        imsic_hart_bits: hart_bits,
        imsic_ids: ids,
        aplic_base: APLIC_BASE,
        aplic_sources: APLIC_SOURCES,
        bootargs: args.bootargs.clone(),
    };
    let dtb = fdt::build(&machine).map_err(kvm_err("device tree"))?;
    if dtb.len() as u64 > DTB_SPACE {
        return Err(format!("device tree of {} bytes", dtb.len()));
    }
    ram.write(dtb_gpa, &dtb)?;

    let mut stats = Vec::new();
    let dbcn = reg_id(
        KVM_REG_RISCV_SBI_EXT,
        u64::from(KVM_REG_RISCV_SBI_SINGLE | KVM_RISCV_SBI_EXT_ID_KVM_RISCV_SBI_EXT_DBCN),
    );
    let mut dbcn_on = true;
    for (i, vcpu) in vcpus.iter().enumerate() {
        let pc = std::mem::offset_of!(user_regs_struct, pc);
        let a0 = std::mem::offset_of!(user_regs_struct, a0);
        let a1 = std::mem::offset_of!(user_regs_struct, a1);
        set_reg(vcpu, core_reg(pc), entry).map_err(kvm_err("set pc"))?;
        set_reg(vcpu, core_reg(a0), i as u64).map_err(kvm_err("set a0"))?;
        set_reg(vcpu, core_reg(a1), dtb_gpa).map_err(kvm_err("set a1"))?;
        // DBCN is off by default (it needs user space); without it the payload falls
        // back to the legacy putchar, one exit per byte.
        dbcn_on &= set_reg(vcpu, dbcn, 1).is_ok();
        // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new descriptor.
        let fd = unsafe { libc::ioctl(vcpu.as_raw_fd(), KVM_GET_STATS_FD) };
        if fd < 0 {
            return Err(format!(
                "KVM_GET_STATS_FD: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: `fd` is a new descriptor the kernel just gave us, owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        stats.push(Stats::new(file).map_err(kvm_err("vcpu stats"))?);
    }
    let mode_name = match mode {
        KVM_DEV_RISCV_AIA_MODE_EMUL => "emul",
        KVM_DEV_RISCV_AIA_MODE_HWACCEL => "hwaccel",
        KVM_DEV_RISCV_AIA_MODE_AUTO => "auto",
        _ => "?",
    };
    println!(
        "VIRQ-KVM-VMM start vcpus={} ram={:#x}+{:#x} entry={entry:#x} dtb={dtb_gpa:#x} \
         aia_mode={mode_name} imsic={IMSIC_BASE:#x} hart_bits={hart_bits} ids={ids} \
         aplic={APLIC_BASE:#x} sources={APLIC_SOURCES} timebase={timebase} dbcn={dbcn_on} \
         isa={isa} stats={}",
        args.vcpus, RAM_BASE, ram_size, stats[0].layout.id
    );

    let n = stats.len();
    let last = stats
        .iter()
        .map(|s| s.read().map_err(kvm_err("vcpu stats")))
        .collect::<Result<Vec<_>>>()?;
    let shared = Arc::new(Shared {
        ram,
        stats,
        stats_at: args.stats_at.clone(),
        console: Mutex::new(Console {
            lines: Lines::default(),
            last,
            calls: vec![0; n],
            host_irqs: host_irqs(),
        }),
    });
    let (tx, rx) = mpsc::channel();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (i, vcpu) in vcpus.into_iter().enumerate() {
        let (tx, shared, pin_it) = (tx.clone(), shared.clone(), args.pin);
        std::thread::Builder::new()
            .name(format!("vcpu{i}"))
            .spawn(move || {
                if pin_it {
                    if let Err(e) = pin(i % cpus) {
                        println!("VIRQ-KVM-VMM vcpu={i} pin error={e}");
                    }
                }
                let _ = tx.send(vcpu_loop(i, vcpu, &shared));
            })
            .map_err(kvm_err("spawning a vCPU thread"))?;
    }
    let stop = rx
        .recv()
        .map_err(|_| "every vCPU thread ended without a result".to_string())?;
    shared.finish();
    match stop {
        Stop::Shutdown(status) => Ok(status),
        Stop::Failed(e) => Err(e),
    }
}
