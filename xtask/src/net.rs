//! The network test of issue 10 (docs/hyp.md, "The network test"): a Debian riscv64
//! Linux guest with a PCIe NIC (`virtio-net-pci` or `e1000e`) on QEMU's user network
//! moves bounded traffic to and from a host peer that xtask runs on 127.0.0.1, and the
//! check compares what the guest says it sent and received with what the host peer
//! counted, and reads the NIC's MSI-X rows of the guest's `/proc/interrupts`.
//!
//! Everything stays on this machine: `-netdev user,restrict=on` (the guest reaches
//! nothing but the forwards), one `guestfwd` from 10.0.2.100:5000 in the guest to the
//! host peer's TCP listener on 127.0.0.1, one `hostfwd` from a UDP port on 127.0.0.1 to
//! the guest's 10.0.2.15:7000. The guest sends no UDP at all: with `restrict=on`
//! libslirp drops every UDP datagram a guest sends (`udp_input`), forwards or not, so
//! the UDP test is requests in by UDP, answers back over the TCP connection. Every loop
//! on both sides is bounded by a count and a time limit.
//!
//! - Guest side: `guest/net` (`virq-net`, a static riscv64 Linux program, the protocol
//!   is in its header) and [`init_script`]: the NIC's modules (and their dependencies)
//!   from Debian's kernel package, `eth0` up with 10.0.2.15/24 via 10.0.2.2, the test,
//!   the NIC's rows of `/proc/interrupts`, power-off. [`guest_images`] builds it.
//! - Host side: [`HostPeer`] (a thread: TCP sink with the pattern checked, UDP
//!   requester), [`netdev_args`] (QEMU's `-netdev`/`-device`).
//! - [`run`]: the host peer, QEMU (any command line: bare Linux or hyp), the check.
//!   The suite cases (`net-bare-virtio`, `net-bare-e1000e`) and `cargo xtask bench
//!   --net` call it with bare QEMU's command line; hyp's cases call it with hyp's.
use anyhow::{bail, ensure, Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::images::BootImages;
use crate::qemu::{run_command_watched, save_log, Outcome};

/// The guest's address on QEMU's user network, its gateway (QEMU), and the address
/// the `guestfwd` answers on.
pub const GUEST_IP: &str = "10.0.2.15";
pub const GATEWAY_IP: &str = "10.0.2.2";
pub const FORWARD_IP: &str = "10.0.2.100";
/// The `guestfwd` port (guest side) and the guest's UDP port (the `hostfwd` target).
pub const FORWARD_PORT: u16 = 5000;
pub const GUEST_UDP_PORT: u16 = 7000;

/// Where `virq-net` goes in the initramfs, and the modules.
const PROGRAM_PATH: &str = "bin/virq-net";
pub(crate) const MODULE_DIR: &str = "root";

/// The NICs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nic {
    /// `virtio-net-pci` (`1af4:1000`, MSI-X 4 entries) with Debian's `virtio_net`
    /// module (`virtio_pci` is built in).
    VirtioNet,
    /// `e1000e` (`8086:10d3`, MSI-X 5 entries) with Debian's `e1000e` module.
    E1000e,
}

impl Nic {
    pub const ALL: [Nic; 2] = [Nic::VirtioNet, Nic::E1000e];

    /// QEMU's `-device` model.
    pub fn device(self) -> &'static str {
        match self {
            Nic::VirtioNet => "virtio-net-pci",
            Nic::E1000e => "e1000e",
        }
    }

    /// The Linux module that drives it (dependencies are found from its `.modinfo`).
    pub fn module(self) -> &'static str {
        match self {
            Nic::VirtioNet => "virtio_net",
            Nic::E1000e => "e1000e",
        }
    }

    /// Whether a row of `/proc/interrupts` (its action names) is one of this NIC's:
    /// virtio's `virtio<N>-input.0`, `-output.0`, `-config`; e1000e's `eth0-rx-0`,
    /// `eth0-tx-0`, `eth0`.
    pub fn owns_irq_row(self, row: &str) -> bool {
        let last = row.split_whitespace().last().unwrap_or("");
        match self {
            Nic::VirtioNet => {
                last.starts_with("virtio")
                    && ["-input.", "-output.", "-config"]
                        .iter()
                        .any(|s| last.contains(s))
            }
            Nic::E1000e => last == "eth0" || last.starts_with("eth0-"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Nic::VirtioNet => "virtio",
            Nic::E1000e => "e1000e",
        }
    }
}

/// How much traffic: bytes of the TCP stream, UDP requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub tcp_bytes: u64,
    pub udp_requests: u32,
}

/// The suite's plan: 16 MiB and 200 requests (a few seconds on bare QEMU).
pub const SUITE_PLAN: Plan = Plan {
    tcp_bytes: 16 << 20,
    udp_requests: 200,
};

/// The start of every network `/init`: mount, load `modules` in order (`NET module m`
/// each), wait (bounded) for `eth0`, bring it up with a static address on QEMU's user
/// network, print `NET link <mac> inet <address>`.
pub(crate) fn init_setup(modules: &[String]) -> String {
    let modules = modules.join(" ");
    format!(
        r#"#!/bin/sh
# virq network guest: the NIC's driver and a static address on QEMU's user network.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s 2>/dev/null
echo "NET init kernel=$(uname -r) cpus=$(grep -c ^processor /proc/cpuinfo)"
for m in {modules}; do
    insmod /{MODULE_DIR}/$m.ko && echo "NET module $m" || echo "NET error insmod $m"
done
n=0
while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 200 ]; do sleep 0.1; n=$((n + 1)); done
ip link set lo up
ip link set eth0 up
ip addr add {GUEST_IP}/24 dev eth0
ip route add default via {GATEWAY_IP} dev eth0
echo "NET link $(cat /sys/class/net/eth0/address 2>/dev/null) $(ip -4 addr show dev eth0 | grep -o 'inet [0-9./]*')"
"#
    )
}

/// `/init` of the test: [`init_setup`], then `virq-net` (bounded by `timeout
/// limit_s`), the NIC's rows of `/proc/interrupts` as `NET irq …` lines (with the CPU
/// header as `NET irq-cpus …`), power-off.
pub fn init_script(modules: &[String], plan: Plan, limit_s: u32) -> String {
    let Plan {
        tcp_bytes,
        udp_requests,
    } = plan;
    format!(
        r#"{}timeout {limit_s} /{PROGRAM_PATH} {FORWARD_IP}:{FORWARD_PORT} {tcp_bytes} {udp_requests} {GUEST_UDP_PORT}
echo "NET exit status=$?"
echo "NET irq-cpus $(head -n 1 /proc/interrupts)"
grep -E 'virtio[0-9]+-(input|output|config)|eth0' /proc/interrupts | sed 's/^/NET irq /'
echo "NET end"
poweroff -f
"#,
        init_setup(modules)
    )
}

/// `/init` of an interactive guest with the network up: [`init_setup`], then a shell
/// on the console (as [`crate::images::INIT_SHELL`]); leaving it powers off.
pub fn init_shell(modules: &[String], plan: Plan) -> String {
    let Plan {
        tcp_bytes,
        udp_requests,
    } = plan;
    format!(
        r#"{}echo "eth0 is {GUEST_IP}/24 via {GATEWAY_IP} (QEMU user network, restrict=on: only its forwards answer)."
echo "The test against xtask's host peer: /{PROGRAM_PATH} {FORWARD_IP}:{FORWARD_PORT} {tcp_bytes} {udp_requests} {GUEST_UDP_PORT}"
{}"#,
        init_setup(modules),
        crate::images::SHELL_TAIL
    )
}

/// The named initramfs files a configuration's `initramfs` may give (beside
/// `debian-shell` and `debian-test`): `debian-net-<nic>` (a shell with `eth0` up) and
/// `debian-net-test-<nic>` (the test `/init`, the suite's plan), `<nic>` `virtio` or
/// `e1000e`. `None` for any other name.
pub fn named_initramfs(name: &str) -> Option<(Nic, bool)> {
    let rest = name.strip_prefix("debian-net-")?;
    let (test, nic) = match rest.strip_prefix("test-") {
        Some(n) => (true, n),
        None => (false, rest),
    };
    Nic::ALL
        .into_iter()
        .find(|n| n.name() == nic)
        .map(|n| (n, test))
}

/// Build the named initramfs `name` ([`named_initramfs`]) and return its path.
pub fn build_named_initramfs(name: &str) -> Result<std::path::PathBuf> {
    let (nic, test) = named_initramfs(name).with_context(|| {
        format!("{name}: not debian-net-virtio, -e1000e, debian-net-test-virtio or -e1000e")
    })?;
    let boot = if test {
        guest_images(nic, SUITE_PLAN, GUEST_LIMIT_S)?
    } else {
        build_images(nic, &format!("net-shell-{}", nic.name()), |m| {
            init_shell(m, SUITE_PLAN)
        })?
    };
    Ok(boot.initramfs)
}

/// Debian's kernel and `target/images/initramfs-net-<nic>.cpio.gz`: busybox, the NIC's
/// modules, `virq-net` and [`init_script`] for `plan`. Boots on bare QEMU
/// (`-kernel`/`-initrd`) or as a guest of hyp (the configuration's `kernel` and
/// `initramfs`).
pub fn guest_images(nic: Nic, plan: Plan, limit_s: u32) -> Result<BootImages> {
    build_images(nic, &initramfs_name(nic, plan), |m| {
        init_script(m, plan, limit_s)
    })
}

/// Debian's kernel and `target/images/initramfs-<name>.cpio.gz`: busybox, `nic`'s
/// modules with their dependencies, `virq-net`, and the `/init` `init` makes from the
/// modules' names in load order.
fn build_images(nic: Nic, name: &str, init: impl Fn(&[String]) -> String) -> Result<BootImages> {
    let guest = crate::images::ensure_debian(hyp_config::Arch::Riscv64, None)?;
    let modules = crate::kvm::modules_named(&guest.modules, &[nic.module()])?;
    let program =
        crate::kvm::build_static_program("guest/net/Cargo.toml", "target/guest-linux", "virq-net")?;
    let program = std::fs::read(&program)?;
    let paths: Vec<String> = modules
        .iter()
        .map(|(n, _)| format!("{MODULE_DIR}/{n}.ko"))
        .collect();
    let mut extra: Vec<(&str, &[u8])> = vec![(PROGRAM_PATH, program.as_slice())];
    extra.extend(
        paths
            .iter()
            .zip(&modules)
            .map(|(p, (_, b))| (p.as_str(), b.as_slice())),
    );
    let names: Vec<String> = modules.iter().map(|(n, _)| n.clone()).collect();
    crate::images::debian_boot_with(
        hyp_config::Arch::Riscv64,
        Some(&guest.kernel_version),
        name,
        &init(&names),
        &extra,
    )
}

/// The initramfs's name: `net-<nic>` for the suite's plan, `net-<nic>-<bytes>-<udp>`
/// for another (the benchmark's), so that neither rebuilds the other's.
fn initramfs_name(nic: Nic, plan: Plan) -> String {
    if plan == SUITE_PLAN {
        format!("net-{}", nic.name())
    } else {
        format!(
            "net-{}-{}-{}",
            nic.name(),
            plan.tcp_bytes,
            plan.udp_requests
        )
    }
}

/// The options after `-netdev user,id=…,restrict=on` that reach the host peer: the
/// `guestfwd` to its TCP port and the `hostfwd` from its UDP port, both on 127.0.0.1
/// (`,guestfwd=…,hostfwd=…`; the guest's 10.0.2.15 and the gateway 10.0.2.2 are QEMU's
/// defaults). It is what `config::Pcie::qemu_args(netdev)` takes on hyp's side.
pub fn forwards(tcp_port: u16, udp_port: u16) -> String {
    format!(
        ",guestfwd=tcp:{FORWARD_IP}:{FORWARD_PORT}-tcp:127.0.0.1:{tcp_port},\
         hostfwd=udp:127.0.0.1:{udp_port}-{GUEST_IP}:{GUEST_UDP_PORT}"
    )
}

/// QEMU's arguments for `nic` on bare QEMU: `-netdev user,id=n0,restrict=on` with
/// `forwards`, and the device.
pub fn netdev_args(nic: Nic, forwards: &str) -> Vec<String> {
    vec![
        "-netdev".into(),
        format!("user,id=n0,restrict=on{forwards}"),
        "-device".into(),
        format!("{},netdev=n0", nic.device()),
    ]
}

/// What the host peer saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostReport {
    /// The stream's length as the guest announced it (`TCP n`).
    pub tcp_announced: u64,
    /// Bytes of the stream received.
    pub tcp_received: u64,
    /// Every received byte matched the pattern.
    pub tcp_intact: bool,
    /// Wall seconds from the `TCP` line to the stream's last byte.
    pub tcp_secs: f64,
    /// UDP requests the guest asked for, sent, and answered with the right sequence
    /// number.
    pub udp_requested: u32,
    pub udp_sent: u32,
    pub udp_answered: u32,
    /// Round trips of the answered requests (wall), in microseconds: sum and worst.
    pub udp_rtt_us_sum: u64,
    pub udp_rtt_us_max: u64,
    /// The guest said `BYE`.
    pub bye: bool,
    /// Why the peer stopped early, if it did.
    pub error: Option<String>,
}

/// Byte `i` of the stream (as `guest/net` sends it).
pub fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

/// The host side of the test: a TCP listener and a UDP socket on 127.0.0.1, served by
/// a thread for one guest connection, bounded by `limit` (wall) in all.
pub struct HostPeer {
    pub tcp_port: u16,
    pub udp_port: u16,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<HostReport>,
}

/// Wait for one request's answer (wall).
const ANSWER_WAIT: Duration = Duration::from_secs(10);

impl HostPeer {
    /// Bind both sockets and start serving. The UDP `hostfwd` port is found by binding
    /// a socket to 127.0.0.1:0 and closing it: QEMU binds it right after.
    pub fn start(limit: Duration) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the TCP sink")?;
        let tcp_port = listener.local_addr()?.port();
        let udp_port = {
            let probe = UdpSocket::bind("127.0.0.1:0").context("finding a UDP port")?;
            probe.local_addr()?.port()
        };
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut r = HostReport::default();
            if let Err(e) = serve(&listener, udp_port, limit, &s, &mut r) {
                r.error = Some(format!("{e:#}"));
            }
            r
        });
        Ok(Self {
            tcp_port,
            udp_port,
            stop,
            thread,
        })
    }

    /// Stop (QEMU is gone) and return what was seen.
    pub fn finish(self) -> HostReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_else(|_| HostReport {
            error: Some("the host peer panicked".into()),
            ..HostReport::default()
        })
    }
}

/// Serve one guest: accept QEMU's connection (the `guestfwd`'s chardev connects when
/// QEMU starts; the guest's stream comes through it later), then the protocol of
/// `guest/net`.
fn serve(
    listener: &TcpListener,
    udp_port: u16,
    limit: Duration,
    stop: &AtomicBool,
    r: &mut HostReport,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    listener.set_nonblocking(true)?;
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                ensure!(
                    Instant::now() < deadline && !stop.load(Ordering::Relaxed),
                    "QEMU never connected"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e).context("accept"),
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut tx = stream.try_clone()?;
    let mut rx = BufReader::new(stream);
    let udp = UdpSocket::bind("127.0.0.1:0").context("binding the UDP requester")?;
    let waiting = |what: &str| -> Result<()> {
        ensure!(Instant::now() < deadline, "time limit waiting for {what}");
        ensure!(!stop.load(Ordering::Relaxed), "QEMU stopped before {what}");
        Ok(())
    };

    // 1. The stream.
    let head = read_line(&mut rx, &waiting, None)?;
    let n: u64 = head
        .strip_prefix("TCP ")
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("expected `TCP n`, got {head:?}"))?;
    r.tcp_announced = n;
    let start = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    // The pattern from any phase: `expected[at % 251..][..k]` (a slice compare, so the
    // check keeps up with the stream in a debug build too).
    let expected: Vec<u8> = (0..buf.len() as u64 + 251).map(pattern).collect();
    let mut intact = true;
    while r.tcp_received < n {
        let want = (n - r.tcp_received).min(buf.len() as u64) as usize;
        match rx.read(&mut buf[..want]) {
            Ok(0) => bail!("the connection closed after {} bytes", r.tcp_received),
            Ok(k) => {
                let at = r.tcp_received;
                let phase = (at % 251) as usize;
                intact &= buf[..k] == expected[phase..phase + k];
                r.tcp_received += k as u64;
            }
            Err(e) if is_timeout(&e) => waiting("the stream")?,
            Err(e) => return Err(e).context("reading the stream"),
        }
    }
    r.tcp_secs = start.elapsed().as_secs_f64();
    r.tcp_intact = intact;
    let verdict = if intact { "ok" } else { "bad" };
    tx.write_all(format!("ACK {} {verdict}\n", r.tcp_received).as_bytes())?;

    // 2. UDP requests, each answered over TCP before the next.
    let head = read_line(&mut rx, &waiting, None)?;
    let count: u32 = head
        .strip_prefix("UDP ")
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("expected `UDP count`, got {head:?}"))?;
    r.udp_requested = count;
    for seq in 0..count {
        let t = Instant::now();
        udp.send_to(format!("Q {seq}").as_bytes(), ("127.0.0.1", udp_port))
            .context("sending a UDP request")?;
        r.udp_sent += 1;
        match read_line(&mut rx, &waiting, Some(t + ANSWER_WAIT)) {
            Ok(a) if a == format!("A {seq}") => {
                r.udp_answered += 1;
                let us = t.elapsed().as_micros() as u64;
                r.udp_rtt_us_sum += us;
                r.udp_rtt_us_max = r.udp_rtt_us_max.max(us);
            }
            Ok(a) => bail!("request {seq}: answer {a:?}"),
            Err(e) if Instant::now() < deadline && !stop.load(Ordering::Relaxed) => {
                // No answer in time: lost; the next request goes out.
                let _ = e;
            }
            Err(e) => return Err(e),
        }
    }
    tx.write_all(format!("UDPDONE sent={} answered={}\n", r.udp_sent, r.udp_answered).as_bytes())?;
    let bye = read_line(&mut rx, &waiting, None)?;
    r.bye = bye == "BYE";
    Ok(())
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// One line (at most 200 bytes) from `rx`, retrying read time-outs while `waiting`
/// allows and until `until`.
fn read_line(
    rx: &mut BufReader<TcpStream>,
    waiting: &dyn Fn(&str) -> Result<()>,
    until: Option<Instant>,
) -> Result<String> {
    let mut line = Vec::new();
    loop {
        match rx.by_ref().take(200).read_until(b'\n', &mut line) {
            Ok(_) if line.ends_with(b"\n") => {
                return Ok(String::from_utf8_lossy(&line).trim_end().to_string())
            }
            Ok(0) => bail!("the connection closed"),
            Ok(_) if line.len() >= 200 => bail!("a line over 200 bytes"),
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e).context("reading a line"),
        }
        waiting("a line from the guest")?;
        if until.is_some_and(|u| Instant::now() > u) {
            bail!("no line in time");
        }
    }
}

/// One run: the QEMU console and exit, and the host peer's report.
pub struct NetRun {
    pub outcome: Outcome,
    pub host: HostReport,
}

/// Run the network test: start a [`HostPeer`], build the QEMU command with `qemu`,
/// which gets the peer's [`forwards`] (`,guestfwd=…,hostfwd=…`) and returns the whole
/// command line — machine, firmware, the guest booting [`guest_images`] (bare Linux's
/// `-kernel`/`-initrd`, or hyp with them as guest 0's), and the NIC on `-netdev
/// user,…,restrict=on<forwards>` (bare: [`netdev_args`]; hyp:
/// `Pcie::qemu_args(forwards)`) —, run it (killed after `timeout`, or after 120 s
/// without console output), save the console as `target/hyp/logs/<log>.log`, and
/// return it with the peer's report (check them with [`check`]).
pub fn run(
    timeout: Duration,
    log: &str,
    qemu: impl FnOnce(&str) -> Result<Command>,
) -> Result<NetRun> {
    let peer = HostPeer::start(timeout)?;
    let cmd = match qemu(&forwards(peer.tcp_port, peer.udp_port)) {
        Ok(c) => c,
        Err(e) => {
            peer.finish();
            return Err(e);
        }
    };
    let outcome = run_command_watched(cmd, timeout, false, Some(Duration::from_secs(120)));
    let host = peer.finish();
    let outcome = outcome?;
    save_log(log, &outcome.output)?;
    Ok(NetRun { outcome, host })
}

/// The figures of a passing run.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub tcp_bytes: u64,
    /// Guest seconds from the stream's start to the host's `ACK` (virtual time under
    /// `-icount`).
    pub guest_tcp_secs: f64,
    /// Host wall seconds of the stream.
    pub host_tcp_secs: f64,
    /// The NIC's interrupts during the stream (the guest's count).
    pub tcp_irqs: u64,
    /// The guest CPUs' non-idle milliseconds during the stream, all CPUs (`/proc/stat`;
    /// under `-icount`, 10^6 instructions each).
    pub tcp_busy_ms: u64,
    pub udp_requests: u32,
    /// Guest seconds of the UDP phase and the NIC's interrupts during it.
    pub guest_udp_secs: f64,
    pub udp_irqs: u64,
    /// The NIC's interrupts in `/proc/interrupts` at the end: per row (name, total).
    pub irq_rows: Vec<(String, u64)>,
    pub irqs: u64,
}

impl Summary {
    pub fn line(&self) -> String {
        format!(
            "{} MiB TCP in {:.2} s guest / {:.2} s host ({:.1} MB/s host), {} UDP requests answered, {} NIC MSIs ({})",
            self.tcp_bytes >> 20,
            self.guest_tcp_secs,
            self.host_tcp_secs,
            self.tcp_bytes as f64 / self.host_tcp_secs.max(1e-9) / 1e6,
            self.udp_requests,
            self.irqs,
            self.irq_rows
                .iter()
                .map(|(n, c)| format!("{n} {c}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// A `key=value` word of `line`.
fn word<T: std::str::FromStr>(line: &str, key: &str) -> Option<T> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// The NIC's rows of `/proc/interrupts` (the `NET irq …` lines): each row's last word
/// and its count summed over the CPUs (`cpus` columns after the `N:`), and that the
/// row is an MSI one (its chip name has `MSI`).
pub fn irq_rows(out: &str, nic: Nic) -> Result<Vec<(String, u64, bool)>> {
    let header = out
        .lines()
        .find_map(|l| l.strip_prefix("NET irq-cpus "))
        .context("no `NET irq-cpus` line (the /proc/interrupts header)")?;
    let cpus = header
        .split_whitespace()
        .filter(|w| w.starts_with("CPU"))
        .count();
    ensure!(cpus > 0, "no CPU columns in {header:?}");
    let mut rows = Vec::new();
    for row in out.lines().filter_map(|l| l.strip_prefix("NET irq ")) {
        if !nic.owns_irq_row(row) {
            continue;
        }
        let mut w = row.split_whitespace();
        let irq = w.next().unwrap_or("");
        ensure!(irq.ends_with(':'), "not an interrupt row: {row:?}");
        let mut total = 0u64;
        for _ in 0..cpus {
            let c: u64 = w
                .next()
                .and_then(|c| c.parse().ok())
                .with_context(|| format!("{cpus} counts expected: {row:?}"))?;
            total += c;
        }
        let rest: Vec<&str> = w.collect();
        let name = rest.last().copied().unwrap_or("").to_string();
        let msi = rest.iter().any(|w| w.starts_with("PCI-MSI"));
        rows.push((name, total, msi));
    }
    Ok(rows)
}

/// The check of one run, a pure function of the console `out`, QEMU's exit `status`,
/// the host peer's report and the plan: the guest's driver came up, its stream and
/// its UDP answers are what the host peer counted (the stream byte for byte, the
/// pattern intact; every request answered with its own sequence number), the NIC's
/// rows of `/proc/interrupts` are MSI(-X) rows and their counts add up to more than 0,
/// and QEMU exited with 0.
pub fn check(
    out: &str,
    status: Option<i32>,
    host: &HostReport,
    nic: Nic,
    plan: Plan,
) -> Result<Summary> {
    for bad in ["NET error", "Kernel panic", "NET done bad"] {
        ensure!(!out.contains(bad), "the guest printed {bad:?}");
    }
    ensure!(
        out.contains(&format!("NET module {}", nic.module())),
        "the guest did not load {}",
        nic.module()
    );
    ensure!(
        out.lines()
            .any(|l| l.starts_with("NET link ") && l.contains(&format!("inet {GUEST_IP}/24"))),
        "eth0 did not get {GUEST_IP}/24"
    );
    if let Some(e) = &host.error {
        bail!("host peer: {e}");
    }
    let tcp = out
        .lines()
        .find(|l| l.starts_with("NET tcp "))
        .context("no `NET tcp` line")?;
    let bytes: u64 = word(tcp, "bytes").context("NET tcp: bytes=")?;
    let secs: f64 = word(tcp, "secs").context("NET tcp: secs=")?;
    let acked: u64 = word(tcp, "host_received").context("NET tcp: host_received=")?;
    let tcp_irqs: u64 = word(tcp, "irqs").context("NET tcp: irqs=")?;
    let tcp_busy_ms: u64 = word(tcp, "busy_ms").context("NET tcp: busy_ms=")?;
    ensure!(
        bytes == plan.tcp_bytes,
        "the guest sent {bytes} bytes, the plan is {}",
        plan.tcp_bytes
    );
    ensure!(
        host.tcp_announced == bytes && host.tcp_received == bytes && acked == bytes,
        "stream: the guest sent {bytes} bytes, the host peer received {} (announced {}, acknowledged {acked})",
        host.tcp_received,
        host.tcp_announced
    );
    ensure!(
        host.tcp_intact,
        "stream: the bytes did not match the pattern"
    );
    ensure!(tcp.ends_with(" ok"), "{tcp}");
    let udp = out
        .lines()
        .find(|l| l.starts_with("NET udp "))
        .context("no `NET udp` line")?;
    let requests: u32 = word(udp, "requests").context("NET udp: requests=")?;
    let received: u32 = word(udp, "received").context("NET udp: received=")?;
    let udp_secs: f64 = word(udp, "secs").context("NET udp: secs=")?;
    let udp_irqs: u64 = word(udp, "irqs").context("NET udp: irqs=")?;
    ensure!(
        requests == plan.udp_requests
            && received == requests
            && host.udp_requested == requests
            && host.udp_sent == requests
            && host.udp_answered == requests,
        "UDP: plan {}, the guest received {received} of {requests}; the host peer sent {} and matched {} answers",
        plan.udp_requests,
        host.udp_sent,
        host.udp_answered
    );
    ensure!(udp.ends_with(" ok"), "{udp}");
    ensure!(host.bye, "the guest did not finish the protocol (no BYE)");
    ensure!(
        out.lines().any(|l| l == "NET done ok") && out.contains("NET exit status=0"),
        "virq-net did not finish with `NET done ok` and status 0"
    );
    let rows = irq_rows(out, nic)?;
    ensure!(
        !rows.is_empty(),
        "no {} rows in /proc/interrupts",
        nic.device()
    );
    if let Some((n, _, _)) = rows.iter().find(|r| !r.2) {
        bail!("{n}: not an MSI row of /proc/interrupts");
    }
    let irqs: u64 = rows.iter().map(|r| r.1).sum();
    ensure!(irqs > 0, "the NIC's MSI-X counts are all 0: {rows:?}");
    ensure!(status == Some(0), "QEMU exit status {status:?}");
    Ok(Summary {
        tcp_bytes: bytes,
        guest_tcp_secs: secs,
        host_tcp_secs: host.tcp_secs,
        tcp_irqs,
        tcp_busy_ms,
        udp_requests: requests,
        guest_udp_secs: udp_secs,
        udp_irqs,
        irq_rows: rows.into_iter().map(|(n, c, _)| (n, c)).collect(),
        irqs,
    })
}

/// The suite's cases: Linux directly under OpenSBI (no hyp), AIA machine; name, NIC,
/// QEMU arguments added to the machine's. Not `-M iommu-sys=on`: Debian's 6.12 kernel
/// has no RISC-V IOMMU driver, so the NIC's probe waits for one until the deferred-probe
/// time-out (10 s) and QEMU's IOMMU, `ddtp` Off since reset, then refuses its DMA
/// (`NETDEV WATCHDOG: transmit queue 0 timed out`); docs/hyp.md, "The network test".
pub const CASES: &[(&str, Nic, &[&str])] = &[
    ("net-bare-virtio", Nic::VirtioNet, &[]),
    ("net-bare-e1000e", Nic::E1000e, &[]),
];

/// The suite's cases under hyp (`configs/net-virtio.toml` with the test `/init`): the
/// NIC passed through, its MSIs through the IOMMU's MSI page table; name, NIC, `--set`s.
/// The second moves every vCPU between harts every 20 ms and every interrupt file
/// between hardware and software every 10 ms, while the traffic runs.
pub const HYP_CASES: &[(&str, Nic, &[&str])] = &[
    ("net-hyp-virtio", Nic::VirtioNet, &[]),
    (
        "net-hyp-virtio-moves",
        Nic::VirtioNet,
        &["hyp.migrate_ms=20", "hyp.aia_flip_ms=10"],
    ),
];

/// Time limit of a suite case, and of the guest's `virq-net` (guest time).
const CASE_TIMEOUT_S: u64 = 300;
const GUEST_LIMIT_S: u32 = 240;

/// The cases `VIRQ_QEMU_CASE` = `only` selects (all without it).
pub fn selection(only: Option<&str>) -> Vec<&'static str> {
    crate::qemu::select_cases(CASES.iter().chain(HYP_CASES).map(|c| c.0), only)
}

/// Bare QEMU's command line for the network test: Linux directly under OpenSBI on the
/// AIA machine (`aia-guests=3`, as under hyp), `smp` harts, Debian's kernel and `boot`'s
/// initramfs, `nic` on the user network with `forwards`. `icount`: `-icount
/// shift=0,sleep=off`.
pub fn bare_command(
    boot: &BootImages,
    nic: Nic,
    smp: u32,
    icount: bool,
    forwards: &str,
) -> Result<Command> {
    // The soak's bare-Linux machine (as `bench --boot` takes it), reshaped.
    let images = crate::config::NamedImages {
        testguest: None,
        kernel_version: None,
    };
    let (_, mut m) = crate::soak::config("bare")?.machine(
        "net-bare",
        boot,
        &images,
        Duration::from_secs(CASE_TIMEOUT_S),
    )?;
    m.aia = Some(3);
    m.smp = smp;
    m.icount = icount;
    let mut cmd = m.command_for(std::path::Path::new("unused"));
    cmd.args(netdev_args(nic, forwards));
    Ok(cmd)
}

/// Run the selected cases, a line each: `(passed, failed)`.
pub fn run_cases(names: &[&str]) -> (usize, usize) {
    crate::qemu::run_named_cases(names, run_case)
}

fn run_case(name: &str) -> Result<String> {
    if let Some(&(_, nic, sets)) = HYP_CASES.iter().find(|c| c.0 == name) {
        return run_hyp_case(name, nic, sets);
    }
    let &(_, nic, extra) = CASES
        .iter()
        .find(|c| c.0 == name)
        .context("no such network case")?;
    let boot = guest_images(nic, SUITE_PLAN, GUEST_LIMIT_S)?;
    let r = run(Duration::from_secs(CASE_TIMEOUT_S), name, |fwd| {
        let mut qemu = bare_command(&boot, nic, 2, false, fwd)?;
        qemu.args(extra);
        Ok(qemu)
    })?;
    let log = crate::qemu::log_path(name);
    ensure!(
        !r.outcome.timed_out,
        "timed out (log {}; host peer: {:?})",
        log.display(),
        r.host
    );
    check(
        &r.outcome.output,
        r.outcome.status,
        &r.host,
        nic,
        SUITE_PLAN,
    )
    .map(|s| format!("{}, {:.1} s", s.line(), r.outcome.elapsed.as_secs_f64()))
    .with_context(|| format!("log {}", log.display()))
}

fn run_hyp_case(name: &str, nic: Nic, sets: &[&str]) -> Result<String> {
    let images = crate::config::NamedImages {
        testguest: None,
        kernel_version: None,
    };
    let cfg = crate::config::suite(name, &format!("net-{}", nic.name()), sets, &images)?;
    let img = crate::qemu::build(false)?;
    let timeout = Duration::from_secs(CASE_TIMEOUT_S);
    let r = run(timeout, name, |fwd| {
        let mut m = cfg.machine(timeout, &[])?;
        m.extra = cfg.machine.qemu_args(fwd);
        Ok(m.command(&img))
    })?;
    let log = crate::qemu::log_path(name);
    ensure!(
        !r.outcome.timed_out,
        "timed out (log {}; host peer: {:?})",
        log.display(),
        r.host
    );
    let moves = !sets.is_empty();
    check(
        &r.outcome.output,
        r.outcome.status,
        &r.host,
        nic,
        SUITE_PLAN,
    )
    .and_then(|s| {
        let h = check_hyp(&r.outcome.output, s.irqs, moves)?;
        Ok(format!(
            "{}; {h}, {:.1} s",
            s.line(),
            r.outcome.elapsed.as_secs_f64()
        ))
    })
    .with_context(|| format!("log {}", log.display()))
}

/// hyp's counters of a run under hyp (`None` for a run without hyp).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HypCounters {
    /// The guest's exits, all vCPUs, the whole run.
    pub exits: u64,
    /// Device MSIs that went through hyp: drained from MRIFs, or written into a
    /// file by hyp (the latter also counts the vAPLIC's forwards; no UART is routed
    /// under the network test's configurations).
    pub msis_via_hyp: u64,
}

/// Read [`HypCounters`] off a run's console.
pub fn hyp_counters(out: &str) -> Option<HypCounters> {
    let aia = out
        .lines()
        .find(|l| l.starts_with("ACCT guest=") && l.contains(" aia files_hw="))?;
    let n = |k: &str| word::<u64>(aia, k);
    let exits = out
        .lines()
        .filter(|l| l.starts_with("ACCT vcpu=") && l.contains(" cause="))
        .filter_map(|l| word::<u64>(l, "count"))
        .sum();
    Some(HypCounters {
        exits,
        msis_via_hyp: n("mrif_msis")? + n("msis_to_hw_files_by_hyp")?,
    })
}

/// hyp's side of a network run under hyp: the function was attached with an MSI page
/// table, the IOMMU recorded no fault, and the NIC's `irqs` MSIs (the guest's count)
/// went past hyp. With hardware files and no moves, no device MSI went through hyp at
/// all: none drained from an MRIF (`mrif_msis=0`), none written into a file by hyp
/// (`msis_to_hw_files_by_hyp=0`), no trapped IMSIC-page store (`imsic_page_traps=0`) —
/// 0 exits per device MSI. With `moves`, files must have moved both ways and vCPUs
/// between harts while the traffic ran, and every byte still arrived (the guest-side
/// check); the MSIs the MRIFs carried are reported.
pub fn check_hyp(out: &str, irqs: u64, moves: bool) -> Result<String> {
    for bad in ["hyp: PANIC", "hyp: FATAL", "configuration error"] {
        ensure!(!out.contains(bad), "hyp printed {bad:?}");
    }
    ensure!(
        out.lines().any(|l| l.starts_with("hyp: guest 0 ")
            && l.contains(" attached, ")
            && l.contains("MSIs through the MSI page table")),
        "the NIC was not attached with an MSI page table"
    );
    let iommu = out
        .lines()
        .find(|l| l.starts_with("ACCT iommu "))
        .context("no ACCT iommu line")?;
    let faults: u64 = word(iommu, "faults").context("ACCT iommu faults=")?;
    ensure!(faults == 0, "the IOMMU recorded {faults} faults: {iommu}");
    let aia = out
        .lines()
        .find(|l| l.starts_with("ACCT guest=") && l.contains(" aia files_hw="))
        .context("no ACCT aia line")?;
    let n = |k: &str| -> Result<u64> { word(aia, k).with_context(|| format!("ACCT aia {k}=")) };
    let (mrif, by_hyp, traps) = (
        n("mrif_msis")?,
        n("msis_to_hw_files_by_hyp")?,
        n("imsic_page_traps")?,
    );
    let (to_hw, to_sw) = (n("to_hw")?, n("to_sw")?);
    let exits: u64 = out
        .lines()
        .filter(|l| l.starts_with("ACCT vcpu=") && l.contains(" cause="))
        .filter_map(|l| word::<u64>(l, "count"))
        .sum();
    ensure!(irqs > 0, "no NIC MSI reached the guest");
    if moves {
        let migrations: u64 = out
            .lines()
            .find_map(|l| l.strip_prefix("ACCT migrations="))
            .and_then(|v| v.trim().parse().ok())
            .context("no ACCT migrations")?;
        ensure!(
            to_sw > 0 && to_hw > 0 && migrations > 0,
            "the files and vCPUs did not move: to_sw={to_sw} to_hw={to_hw} migrations={migrations}"
        );
        Ok(format!(
            "hyp: {to_sw} files to software and {to_hw} back, {migrations} migrations, {mrif} device MSIs through MRIFs, 0 IOMMU faults"
        ))
    } else {
        ensure!(
            mrif == 0 && by_hyp == 0 && traps == 0 && to_sw == 0,
            "a device MSI went through hyp: mrif_msis={mrif} msis_to_hw_files_by_hyp={by_hyp} imsic_page_traps={traps} to_sw={to_sw}"
        );
        Ok(format!(
            "hyp: {irqs} NIC MSIs, none through hyp (0 exits per MSI; {exits} exits in all), 0 IOMMU faults"
        ))
    }
}

#[cfg(test)]
mod hyp_tests {
    use super::*;

    const HYP: &str = "\
hyp: guest 0 \"linux\": pci 00:01.0 (device ID 0x8) attached, iohgatp 0x8000100000080448, MSIs through the MSI page table at 0x80466000, bars [(1, 40000000, 1000), (4, 40004000, 4000)]
ACCT vcpu=0 guest=linux id=0 cause=load_guest_page_fault(21) count=252
ACCT vcpu=1 guest=linux id=1 cause=store_guest_page_fault(23) count=177
ACCT guest=linux aia files_hw=2 files_sw=0 to_hw=2 to_sw=0 imsic_page_traps=0 msis_to_sw_files=0 msis_to_hw_files_by_hyp=0 csr_traps=0 iprio_traps=0 sgei=954 sgei_kicks=954 aplic_reads=2 aplic_writes=236 aplic_forwards=0 mrif_msis=0
ACCT migrations=0
ACCT iommu commands=10 fences=4 faults=0 fault_overflows=0 queue_memory_faults=0 gstage_invalidations=0 msi_pte_updates=4 fault_interrupts=0
";

    #[test]
    fn hardware_files_mean_no_msi_through_hyp() {
        let s = check_hyp(HYP, 1378, false).unwrap();
        assert!(s.contains("none through hyp"), "{s}");
        assert_eq!(
            hyp_counters(HYP),
            Some(HypCounters {
                exits: 429,
                msis_via_hyp: 0
            })
        );
        let through = HYP.replace(" mrif_msis=0", " mrif_msis=3");
        assert!(check_hyp(&through, 1378, false).is_err());
        let fault = HYP.replace(" faults=0", " faults=1");
        assert!(check_hyp(&fault, 1378, false).is_err());
        assert!(check_hyp(HYP, 0, false).is_err(), "no MSI at all");
        assert!(check_hyp(HYP, 1378, true).is_err(), "nothing moved");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The console of a passing `net-bare-virtio` run, cut to the lines the check reads.
    const GOOD: &str = "\
NET init kernel=6.12.117+deb13-riscv64 cpus=2
NET module failover
NET module net_failover
NET module virtio_net
NET link 52:54:00:12:34:56 inet 10.0.2.15/24
NET tcp bytes=16777216 secs=1.234 busy_ms=1500 irqs=1200 host_received=16777216 ok
NET udp requests=200 received=200 secs=0.400 busy_ms=300 irqs=402 host_sent=200 host_answered=200 ok
NET done ok
NET exit status=0
NET irq-cpus            CPU0       CPU1
NET irq  12:          0          0  PCI-MSIX-0000:00:01.0   0 Edge      virtio0-config
NET irq  13:        812         37  PCI-MSIX-0000:00:01.0   1 Edge      virtio0-input.0
NET irq  14:          3        401  PCI-MSIX-0000:00:01.0   2 Edge      virtio0-output.0
NET end
";

    fn good_host() -> HostReport {
        HostReport {
            tcp_announced: 16 << 20,
            tcp_received: 16 << 20,
            tcp_intact: true,
            tcp_secs: 0.9,
            udp_requested: 200,
            udp_sent: 200,
            udp_answered: 200,
            udp_rtt_us_sum: 200_000,
            udp_rtt_us_max: 5_000,
            bye: true,
            error: None,
        }
    }

    #[test]
    fn a_passing_run_passes() {
        let s = check(GOOD, Some(0), &good_host(), Nic::VirtioNet, SUITE_PLAN).unwrap();
        assert_eq!(s.irqs, 812 + 37 + 3 + 401);
        assert_eq!(s.irq_rows.len(), 3);
        assert_eq!(s.tcp_bytes, 16 << 20);
        assert!(s.line().contains("1253 NIC MSIs"), "{}", s.line());
    }

    #[test]
    fn a_host_that_lost_the_last_bytes_fails() {
        let host = HostReport {
            tcp_received: (16 << 20) - 100,
            ..good_host()
        };
        let e = check(GOOD, Some(0), &host, Nic::VirtioNet, SUITE_PLAN).unwrap_err();
        assert!(format!("{e}").contains("received 16777116"), "{e}");
        let host = HostReport {
            tcp_intact: false,
            ..good_host()
        };
        assert!(check(GOOD, Some(0), &host, Nic::VirtioNet, SUITE_PLAN).is_err());
    }

    #[test]
    fn lost_udp_answers_or_a_short_plan_fail() {
        let host = HostReport {
            udp_answered: 199,
            ..good_host()
        };
        assert!(check(GOOD, Some(0), &host, Nic::VirtioNet, SUITE_PLAN).is_err());
        let plan = Plan {
            tcp_bytes: 100 << 20,
            ..SUITE_PLAN
        };
        assert!(check(GOOD, Some(0), &good_host(), Nic::VirtioNet, plan).is_err());
        let bad = GOOD.replace("received=200 secs", "received=190 secs");
        assert!(check(&bad, Some(0), &good_host(), Nic::VirtioNet, SUITE_PLAN).is_err());
    }

    #[test]
    fn no_msis_or_no_msi_rows_fail() {
        let zero = GOOD
            .replace("812         37", "0          0")
            .replace("3        401", "0          0");
        let e = check(&zero, Some(0), &good_host(), Nic::VirtioNet, SUITE_PLAN).unwrap_err();
        assert!(format!("{e}").contains("all 0"), "{e}");
        // INTx through the APLIC (its chip is named APLIC-MSI, but it is a wire).
        let intx = GOOD.replace(
            "PCI-MSIX-0000:00:01.0",
            "APLIC-MSI-d000000.interrupt-controller",
        );
        assert!(check(&intx, Some(0), &good_host(), Nic::VirtioNet, SUITE_PLAN).is_err());
        let none: String = GOOD
            .lines()
            .filter(|l| !l.starts_with("NET irq "))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(check(&none, Some(0), &good_host(), Nic::VirtioNet, SUITE_PLAN).is_err());
        // e1000e's rows are not virtio's.
        assert!(check(GOOD, Some(0), &good_host(), Nic::E1000e, SUITE_PLAN).is_err());
    }

    #[test]
    fn guest_errors_and_exit_status_fail() {
        let host = good_host();
        for bad in [
            GOOD.replace("NET done ok", "NET error waiting for the host: timed out"),
            GOOD.replace("NET module virtio_net\n", "NET error insmod virtio_net\n"),
            GOOD.replace("inet 10.0.2.15/24", ""),
            GOOD.replace("NET exit status=0", "NET exit status=143"),
        ] {
            assert!(check(&bad, Some(0), &host, Nic::VirtioNet, SUITE_PLAN).is_err());
        }
        assert!(check(GOOD, Some(1), &host, Nic::VirtioNet, SUITE_PLAN).is_err());
        let host = HostReport {
            error: Some("QEMU never connected".into()),
            ..good_host()
        };
        assert!(check(GOOD, Some(0), &host, Nic::VirtioNet, SUITE_PLAN).is_err());
    }

    #[test]
    fn e1000e_rows_are_read() {
        let out = "NET irq-cpus            CPU0       CPU1\n\
                   NET irq  15:         40          2  PCI-MSIX-0000:00:01.0   0 Edge      eth0-rx-0\n\
                   NET irq  16:          0         77  PCI-MSIX-0000:00:01.0   1 Edge      eth0-tx-0\n\
                   NET irq  17:          1          0  PCI-MSIX-0000:00:01.0   2 Edge      eth0\n";
        let rows = irq_rows(out, Nic::E1000e).unwrap();
        assert_eq!(
            rows.iter().map(|r| (r.0.as_str(), r.1)).collect::<Vec<_>>(),
            [("eth0-rx-0", 42), ("eth0-tx-0", 77), ("eth0", 1)]
        );
        assert!(irq_rows(out, Nic::VirtioNet).unwrap().is_empty());
    }

    #[test]
    fn everything_stays_on_loopback() {
        let a = netdev_args(Nic::VirtioNet, &forwards(40000, 40001)).join(" ");
        assert!(a.contains("restrict=on"), "{a}");
        assert!(
            a.contains("guestfwd=tcp:10.0.2.100:5000-tcp:127.0.0.1:40000"),
            "{a}"
        );
        assert!(
            a.contains("hostfwd=udp:127.0.0.1:40001-10.0.2.15:7000"),
            "{a}"
        );
        assert!(a.ends_with("-device virtio-net-pci,netdev=n0"), "{a}");
        // Every host address in the forwards is 127.0.0.1.
        for fwd in a.split(',').filter(|p| p.contains("fwd=")) {
            assert!(fwd.contains("127.0.0.1:"), "{fwd}");
        }
    }

    #[test]
    fn init_loads_modules_and_is_bounded() {
        let s = init_script(&["failover".into(), "virtio_net".into()], SUITE_PLAN, 240);
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("for m in failover virtio_net; do"));
        assert!(s.contains("timeout 240 /bin/virq-net 10.0.2.100:5000 16777216 200 7000"));
        assert!(s.contains("ip addr add 10.0.2.15/24 dev eth0"));
        assert!(s.contains("poweroff -f"));
    }

    #[test]
    fn the_shell_has_the_network_and_names_are_read() {
        let s = init_shell(&["e1000e".into()], SUITE_PLAN);
        assert!(s.contains("ip addr add 10.0.2.15/24 dev eth0") && s.contains("cttyhack"));
        assert!(!s.contains("timeout "), "the shell runs no test");
        assert_eq!(
            named_initramfs("debian-net-virtio"),
            Some((Nic::VirtioNet, false))
        );
        assert_eq!(
            named_initramfs("debian-net-test-e1000e"),
            Some((Nic::E1000e, true))
        );
        for other in [
            "debian-shell",
            "debian-net-rtl8139",
            "debian-net-test-",
            "x",
        ] {
            assert_eq!(named_initramfs(other), None, "{other}");
        }
    }

    #[test]
    fn selection_follows_virq_qemu_case() {
        assert_eq!(
            selection(None),
            [
                "net-bare-virtio",
                "net-bare-e1000e",
                "net-hyp-virtio",
                "net-hyp-virtio-moves"
            ]
        );
        assert_eq!(selection(Some("smp1,net-bare-virtio")), ["net-bare-virtio"]);
        assert!(selection(Some("smp1")).is_empty());
    }

    /// The host peer against a fake guest on loopback: the whole protocol, and a
    /// guest that stops early.
    #[test]
    fn host_peer_serves_the_protocol() {
        let peer = HostPeer::start(Duration::from_secs(20)).unwrap();
        // The fake guest stands in for QEMU's hostfwd: it receives the requests on
        // `peer.udp_port` itself.
        let udp = UdpSocket::bind(("127.0.0.1", peer.udp_port)).unwrap();
        udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut s = TcpStream::connect(("127.0.0.1", peer.tcp_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = 300_000u64;
        s.write_all(format!("TCP {n}\n").as_bytes()).unwrap();
        let data: Vec<u8> = (0..n).map(pattern).collect();
        s.write_all(&data).unwrap();
        let mut rx = BufReader::new(s.try_clone().unwrap());
        let mut l = String::new();
        rx.read_line(&mut l).unwrap();
        assert_eq!(l, format!("ACK {n} ok\n"));
        s.write_all(b"UDP 3\n").unwrap();
        let mut buf = [0u8; 64];
        for seq in 0..3 {
            let (k, _) = udp.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..k], format!("Q {seq}").as_bytes());
            s.write_all(format!("A {seq}\n").as_bytes()).unwrap();
        }
        l.clear();
        rx.read_line(&mut l).unwrap();
        assert_eq!(l, "UDPDONE sent=3 answered=3\n");
        s.write_all(b"BYE\n").unwrap();
        let r = peer.finish();
        assert_eq!(r.error, None);
        assert!(r.tcp_intact && r.bye);
        assert_eq!((r.tcp_received, r.udp_answered), (n, 3));
    }
}
