//! `virq-kvm-vmm`: runs one bare-metal RISC-V payload (an `Image`-headed S-mode
//! binary such as `guest/bench`) as a KVM guest, for the `kvm-aia` target of
//! `cargo xtask bench --system`.
//!
//! ```text
//! virq-kvm-vmm [--vcpus N] [--mem-mib M] [--aia-mode hwaccel|auto|emul]
//!              [--stats-at TEXT] [--no-pin] PAYLOAD [BOOTARGS...]
//! ```
//!
//! It creates a VM with `--mem-mib` MiB of RAM at guest physical 0x8000_0000, loads the
//! payload where its `Image` header says (`text_offset`, 2 MiB into RAM), writes a
//! device tree (`fdt`) near the end of RAM, creates KVM's in-kernel AIA
//! (`KVM_DEV_TYPE_RISCV_AIA`: an IMSIC per vCPU at 0x2800_0000 + 4 KiB × vCPU, an APLIC in
//! MSI mode at 0x0d00_0000) and runs `--vcpus` vCPUs, one thread each, pinned to host
//! CPU `i mod CPUs` unless `--no-pin`. vCPU 0 starts at the payload with a0 = 0 and
//! a1 = the device tree; KVM keeps the others off until SBI HSM `hart_start`.
//!
//! Exits it handles: the SBI console calls KVM forwards (legacy `console_putchar`,
//! DBCN) go to stdout; SBI SRST arrives as a system event and ends the VMM with status
//! 0 (reason "none") or 1 (any other reason). Anything else (an MMIO access KVM does not
//! emulate, an unknown exit) is printed and ends it with status 2.
//!
//! KVM's exit counters (binary stats, `KVM_GET_STATS_FD`) are printed per vCPU
//! whenever the guest prints a line containing the `--stats-at` text (default
//! `VIRQ-BENCH `), as the change since the previous such line:
//!
//! ```text
//! VIRQ-KVM-EXITS after=op=sbi_base vcpu=0 console_calls=1 exits=11001 ecall_exit_stat=11001
//! ```
//!
//! (`after=` is the word after the text; `console_calls` are the SBI console calls of
//! that vCPU in the window, whose exits the counters include), followed by the host's
//! interrupts in the same window, from `/proc/interrupts`
//! (`VIRQ-KVM-HOST-IRQS after=op=sbi_base 10:riscv-timer=3`), and once per vCPU at the
//! end as totals (`VIRQ-KVM-STATS vcpu=0 total exits=… …`).
//!
//! Linux only (`riscv64`); elsewhere it only says so. The pure parts are modules
//! tested on the host.
#![cfg_attr(not(target_arch = "riscv64"), allow(dead_code))]

mod console;
mod fdt;
mod stats;
#[cfg(target_arch = "riscv64")]
mod vmm;

/// How KVM backs each vCPU's IMSIC (`KVM_DEV_RISCV_AIA_CONFIG_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AiaMode {
    /// Software interrupt files only (`KVM_DEV_RISCV_AIA_MODE_EMUL`).
    Emul,
    /// The host hart's hardware guest interrupt files (`…_HWACCEL`).
    HwAccel,
    /// Hardware files while there are free ones, else software (`…_AUTO`).
    Auto,
}

/// The command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub vcpus: u32,
    pub mem_mib: u64,
    pub aia_mode: AiaMode,
    pub stats_at: String,
    pub pin: bool,
    pub payload: String,
    pub bootargs: String,
}

const USAGE: &str = "usage: virq-kvm-vmm [--vcpus N] [--mem-mib M] [--aia-mode hwaccel|auto|emul] \
                     [--stats-at TEXT] [--no-pin] PAYLOAD [BOOTARGS...]";

/// Parse the arguments (without the program name).
pub fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut a = Args {
        vcpus: 1,
        mem_mib: 16,
        aia_mode: AiaMode::HwAccel,
        stats_at: "VIRQ-BENCH ".into(),
        pin: true,
        payload: String::new(),
        bootargs: String::new(),
    };
    let mut it = args.iter();
    let mut rest = Vec::new();
    while let Some(w) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match w.as_str() {
            "--vcpus" => {
                a.vcpus = value(w)?
                    .parse()
                    .ok()
                    .filter(|n| (1..=8).contains(n))
                    .ok_or("--vcpus: 1 to 8")?
            }
            "--mem-mib" => {
                a.mem_mib = value(w)?
                    .parse()
                    .ok()
                    .filter(|n| (4..=1024).contains(n))
                    .ok_or("--mem-mib: 4 to 1024")?
            }
            "--aia-mode" => {
                a.aia_mode = match value(w)?.as_str() {
                    "emul" => AiaMode::Emul,
                    "hwaccel" => AiaMode::HwAccel,
                    "auto" => AiaMode::Auto,
                    m => return Err(format!("--aia-mode {m}: hwaccel, auto or emul")),
                }
            }
            "--stats-at" => a.stats_at = value(w)?,
            "--no-pin" => a.pin = false,
            "-h" | "--help" => return Err(USAGE.into()),
            s if s.starts_with("--") && rest.is_empty() => {
                return Err(format!("unknown option {s}\n{USAGE}"))
            }
            _ => {
                rest.push(w.clone());
                rest.extend(it.by_ref().cloned());
            }
        }
    }
    let (payload, bootargs) = rest.split_first().ok_or(USAGE)?;
    a.payload = payload.clone();
    a.bootargs = bootargs.join(" ");
    Ok(a)
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    #[cfg(target_arch = "riscv64")]
    std::process::exit(vmm::run(&args));
    #[cfg(not(target_arch = "riscv64"))]
    {
        eprintln!(
            "virq-kvm-vmm runs on riscv64 Linux only (asked to run {})",
            args.payload
        );
        std::process::exit(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_options_payload_and_bootargs() {
        let a = parse_args(&argv(
            "--vcpus 2 --aia-mode auto /bench.bin bench.n=10 --vcpus bench.ops=all",
        ))
        .unwrap();
        assert_eq!(a.vcpus, 2);
        assert_eq!(a.aia_mode, AiaMode::Auto);
        assert_eq!(a.payload, "/bench.bin");
        // After the payload everything is the guest's command line.
        assert_eq!(a.bootargs, "bench.n=10 --vcpus bench.ops=all");
        assert_eq!(a.mem_mib, 16);
        assert!(a.pin);
        let b = parse_args(&argv("--no-pin --stats-at X: p")).unwrap();
        assert_eq!(
            (b.pin, b.stats_at.as_str(), b.bootargs.as_str()),
            (false, "X:", "")
        );
    }

    #[test]
    fn refuses_bad_arguments() {
        for bad in [
            "",
            "--vcpus",
            "--vcpus 0 p",
            "--vcpus 9 p",
            "--mem-mib 2 p",
            "--aia-mode fast p",
            "--frobnicate p",
        ] {
            assert!(parse_args(&argv(bad)).is_err(), "{bad:?} accepted");
        }
    }
}
