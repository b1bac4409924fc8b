//! The aarch64 network case of issue 14 (docs/gicv4.md §10): Debian arm64 Linux under
//! hyp on `topology = "vgicv4"` with a passed-through PCIe NIC whose MSI-X writes go
//! through the SMMUv3's stage 2 to the host ITS, which hyp's VMAPTIs (made for the
//! guest's own ITS commands) turn into vLPIs of the guest's vPEs: direct injection, no
//! exit per MSI, a doorbell when the vCPU sleeps.
//!
//! The traffic is bounded and stays on this machine: `-netdev user,restrict=on` with
//! one `hostfwd` from a TCP port on 127.0.0.1 to the guest's port 80, where busybox's
//! `httpd` serves ([`init_script`]). The host peer ([`peer`], a thread of xtask) waits
//! for it, then makes [`SMALL_REQUESTS`] request/response round trips (a small file),
//! downloads [`BIG_BYTES`] (guest → host), uploads [`BIG_BYTES`] to a CGI script that
//! counts them (host → guest), and asks the guest to finish. The guest then prints the
//! NIC's rows of `/proc/interrupts` and powers off; hyp prints its counters.
//!
//! The guest side needs nothing but busybox (no guest program is built for arm64):
//! the same modules and network set-up as the riscv64 test (`crate::net`).
//!
//! [`check_hyp`] requires the NIC's rows to be ITS MSI-X rows with more than 0
//! interrupts, hyp's vITS to have mapped the function (no action dropped, no command
//! or register error, `GICv4 errors: 0`, no QEMU GIC/ITS guest error), **no host LPI
//! taken while a vCPU ran** (an MSI that was not a direct vLPI would be one: 0 exits
//! per MSI), and doorbells that woke blocked vCPUs (doorbells ≥ 1, wake-ups ≥ 1).
use anyhow::{bail, ensure, Context, Result};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hyp_config::Arch;

use crate::net::Nic;
use crate::qemu::{run_command_watched, save_log};

/// The suite cases: name, NIC, `--set`s on the NIC's configuration.
pub const CASES: &[(&str, Nic)] = &[
    ("aarch64-linux-net-virtio", Nic::VirtioNet),
    ("aarch64-linux-net-e1000e", Nic::E1000e),
];
/// Round trips of the small file.
pub const SMALL_REQUESTS: u32 = 100;
/// Bytes of the download and of the upload.
pub const BIG_BYTES: u64 = 4 << 20;
/// The small file's content.
const SMALL: &[u8] = b"virq-small\n";
/// The guest's `httpd` port.
const GUEST_PORT: u16 = 80;
/// Time limits: the case (wall), the guest's wait for the host peer (guest seconds).
const CASE_TIMEOUT_S: u64 = 150;
const GUEST_LIMIT_S: u32 = 90;
/// A run silent this long has hung.
const SILENCE_S: u64 = 90;

/// The configuration of `nic` (`configs/net-<nic>-arm64.toml`).
pub fn config_name(nic: Nic) -> String {
    format!("net-{}-arm64", nic.name())
}

/// The arm64 network initramfs `name` (`debian-net-<nic>`: a shell with `eth0` up;
/// `debian-net-test-<nic>`: [`init_script`]), built; its path.
pub fn build_named_initramfs(name: &str) -> Result<PathBuf> {
    let (nic, test) = crate::net::named_initramfs(name).with_context(|| {
        format!("{name}: not debian-net-virtio, -e1000e, debian-net-test-virtio or -e1000e")
    })?;
    let which = if test { "test" } else { "shell" };
    build_images(nic, &format!("net-{which}-{}", nic.name()), |m| {
        if test {
            init_script(nic, m, GUEST_LIMIT_S)
        } else {
            init_shell(m)
        }
    })
}

/// Debian's arm64 kernel modules for `nic` (with their dependencies) and an initramfs
/// `initramfs-arm64-<name>.cpio.gz` with the `/init` `init` makes of their names.
fn build_images(nic: Nic, name: &str, init: impl Fn(&[String]) -> String) -> Result<PathBuf> {
    let guest = crate::images::ensure_debian(Arch::Aarch64, None)?;
    let modules = crate::kvm::modules_named(&guest.modules, &[nic.module()])?;
    let paths: Vec<String> = modules
        .iter()
        .map(|(n, _)| format!("{}/{n}.ko", crate::net::MODULE_DIR))
        .collect();
    let extra: Vec<(&str, &[u8])> = paths
        .iter()
        .zip(&modules)
        .map(|(p, (_, b))| (p.as_str(), b.as_slice()))
        .collect();
    let names: Vec<String> = modules.iter().map(|(n, _)| n.clone()).collect();
    Ok(crate::images::debian_boot_with(
        Arch::Aarch64,
        Some(&guest.kernel_version),
        name,
        &init(&names),
        &extra,
    )?
    .initramfs)
}

/// The web root the guest serves: `small`, `big` ([`BIG_BYTES`] of zeros), `ready`,
/// `cgi-bin/rx` (counts a POST's body: `rx <n>`), `cgi-bin/done` (ends the test).
fn www() -> String {
    let blocks = BIG_BYTES / 65536;
    let small = std::str::from_utf8(SMALL).unwrap_or("").trim_end();
    format!(
        r#"mkdir -p /www/cgi-bin /tmp
echo {small} > /www/small
dd if=/dev/zero of=/www/big bs=65536 count={blocks} 2>/dev/null
cat > /www/cgi-bin/rx <<'EOF'
#!/bin/sh
n=$(head -c "$CONTENT_LENGTH" | wc -c)
echo "NET rx bytes=$n" > /dev/console
printf 'Content-Type: text/plain\r\n\r\nrx %s\n' "$n"
EOF
cat > /www/cgi-bin/done <<'EOF'
#!/bin/sh
touch /tmp/done
printf 'Content-Type: text/plain\r\n\r\nbye\n'
EOF
chmod 755 /www/cgi-bin/rx /www/cgi-bin/done
echo ready > /www/ready
httpd -p {GUEST_PORT} -h /www && echo "NET httpd" || echo "NET error httpd"
"#
    )
}

/// Where a NIC's receive vector sits in its MSI-X table, `(BAR, entry)`, for the guest
/// to reach with busybox's `devmem` (the BAR's address is read from sysfs in the
/// guest). QEMU's `virtio-net-pci`: table in BAR 1, which `virtio_pci` does not
/// request, `input.0` is entry 1. `e1000e`'s table is at the start of BAR 3
/// (`E1000E_MSIX_IDX`, `E1000E_MSIX_TABLE` in QEMU's hw/net/e1000e.c), and its driver's
/// first vector is `eth0-rx-0`; the driver requests that BAR, so `/dev/mem` refuses it
/// (`devmem: mmap: Operation not permitted`) unless the kernel runs with
/// [`RELAXED_DEVMEM`].
fn rx_vector(nic: Nic) -> (u32, u32) {
    match nic {
        Nic::VirtioNet => (1, 1),
        Nic::E1000e => (3, 0),
    }
}

/// The guest command-line word that lets `/dev/mem` map a BAR its driver requested
/// (Linux `CONFIG_IO_STRICT_DEVMEM`): added for `e1000e` (see [`rx_vector`]).
const RELAXED_DEVMEM: &str = "iomem=relaxed";

/// The `--set`s of `nic`'s case on its configuration: `e1000e`'s guest gets
/// [`RELAXED_DEVMEM`] after the configuration's own command line.
fn case_sets(nic: Nic) -> Result<Vec<String>> {
    match nic {
        Nic::VirtioNet => Ok(Vec::new()),
        Nic::E1000e => {
            let (f, _) = crate::config::load(&crate::config::path_of(&config_name(nic)), &[])?;
            let base = f.guest.first().map_or("", |g| g.cmdline.as_str());
            Ok(vec![format!("guest.0.cmdline={base} {RELAXED_DEVMEM}")])
        }
    }
}

/// The host ITS's `GITS_CWRITER` (control frame + 0x88): where the hostile step points
/// the NIC's receive vector. The guest's IPA is the same: its ITS frames are at the
/// host ITS's address, trapped for its CPU and unmapped for its device.
pub const HOSTILE_MSI_ADDR: u64 = 0x0808_0088;

/// The hostile step, after the NIC's rows were printed: the guest rewrites its NIC's
/// receive vector in the MSI-X table (busybox `devmem`) to send its MSIs to
/// [`HOSTILE_MSI_ADDR`] (the host ITS's command queue register, were it reachable),
/// then pings QEMU so that the NIC receives. The SMMU must refuse each such write (an
/// `F_TRANSLATION` event at that IPA; hyp counts it, nothing else happens).
fn hostile(nic: Nic) -> String {
    let (bar, entry) = rx_vector(nic);
    let line = bar + 1;
    let off = entry * 16;
    format!(
        r#"r=$(sed -n '{line}p' /sys/bus/pci/devices/0000:00:01.0/resource | cut -d' ' -f1)
e=$((r + {off}))
devmem $e 32 {HOSTILE_MSI_ADDR:#x} && devmem $((e + 4)) 32 0 && echo "NET hostile: MSI-X entry {entry} at $(printf %#x $e) -> {HOSTILE_MSI_ADDR:#x}" || echo "NET hostile: devmem failed"
ping -c 3 -W 1 {gw} >/dev/null 2>&1
echo "NET hostile done"
"#,
        gw = crate::net::GATEWAY_IP
    )
}

/// `/init` of the test: the NIC's driver and `eth0` (`crate::net`), [`www`], then a
/// wait (at most `limit_s` guest seconds) for the host peer's `done`, the NIC's rows
/// of `/proc/interrupts` as `NET irq …` lines (the CPU header as `NET irq-cpus …`),
/// [`hostile`], power-off.
pub fn init_script(nic: Nic, modules: &[String], limit_s: u32) -> String {
    let ticks = limit_s * 10;
    format!(
        r#"{}{}echo "NET ready"
n=0
while [ ! -e /tmp/done ] && [ $n -lt {ticks} ]; do sleep 0.1; n=$((n + 1)); done
if [ -e /tmp/done ]; then echo "NET done ok"; else echo "NET error: no done from the host peer"; fi
echo "NET irq-cpus $(head -n 1 /proc/interrupts)"
grep -E 'virtio[0-9]+-(input|output|config)|eth0' /proc/interrupts | sed 's/^/NET irq /'
{}echo "NET end"
poweroff -f
"#,
        crate::net::init_setup(modules),
        www(),
        hostile(nic)
    )
}

/// `/init` of the interactive guest: `eth0` up and `httpd` serving, then a shell.
fn init_shell(modules: &[String]) -> String {
    format!(
        r#"{}{}echo "eth0 is 10.0.2.15/24 (QEMU user network, restrict=on); httpd serves /www on port {GUEST_PORT}."
echo "ping -c 3 10.0.2.2 (QEMU) goes out through the NIC; cat /proc/interrupts shows its ITS-PCI-MSIX rows."
{}"#,
        crate::net::init_setup(modules),
        www(),
        crate::images::SHELL_TAIL
    )
}

/// What the host peer did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerReport {
    /// Small round trips answered with the right content.
    pub small_ok: u32,
    /// Bytes of the download, and whether they were all zeros.
    pub down_bytes: u64,
    pub down_intact: bool,
    /// Bytes the guest said it received of the upload.
    pub up_acked: u64,
    /// Wall seconds of the three phases.
    pub secs: f64,
    /// The guest answered `bye`.
    pub bye: bool,
    /// Why it stopped early.
    pub error: Option<String>,
}

/// One HTTP/1.0 exchange with 127.0.0.1:`port`: status and body.
fn http(port: u16, method: &str, path: &str, body: &[u8]) -> Result<(u32, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: guest\r\n");
    if method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/octet-stream\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of the response's headers")?;
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let status: u32 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    Ok((status, out[split + 4..].to_vec()))
}

/// The host peer against the guest's `httpd` at 127.0.0.1:`port` (the `hostfwd`):
/// waits (until `deadline`) for `ready`, then the three phases and `done`.
pub fn peer(port: u16, deadline: Instant) -> PeerReport {
    let mut r = PeerReport::default();
    if let Err(e) = peer_phases(port, deadline, &mut r) {
        r.error = Some(format!("{e:#}"));
    }
    r
}

fn peer_phases(port: u16, deadline: Instant, r: &mut PeerReport) -> Result<()> {
    // QEMU accepts on the host side before the guest listens: retry until `ready`.
    loop {
        if let Ok((200, b)) = http(port, "GET", "/ready", &[]) {
            if b == b"ready\n" {
                break;
            }
        }
        ensure!(
            Instant::now() < deadline,
            "the guest's httpd never answered"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let start = Instant::now();
    for i in 0..SMALL_REQUESTS {
        let (st, b) = http(port, "GET", "/small", &[])?;
        ensure!(
            st == 200 && b == SMALL,
            "small request {i}: status {st}, {b:?}"
        );
        r.small_ok += 1;
    }
    let (st, b) = http(port, "GET", "/big", &[])?;
    ensure!(st == 200, "download: status {st}");
    r.down_bytes = b.len() as u64;
    r.down_intact = b.iter().all(|&x| x == 0);
    let up: Vec<u8> = (0..BIG_BYTES).map(crate::net::pattern).collect();
    let (st, b) = http(port, "POST", "/cgi-bin/rx", &up)?;
    let text = String::from_utf8_lossy(&b).to_string();
    ensure!(st == 200, "upload: status {st}, {text:?}");
    r.up_acked = text
        .trim()
        .strip_prefix("rx ")
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("upload: answer {text:?}"))?;
    r.secs = start.elapsed().as_secs_f64();
    let (st, b) = http(port, "GET", "/cgi-bin/done", &[])?;
    r.bye = st == 200 && b == b"bye\n";
    Ok(())
}

/// A free TCP port on 127.0.0.1 (for the `hostfwd`; QEMU binds it).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The `-netdev` options after `restrict=on` that reach the guest's `httpd`.
pub fn forwards(port: u16) -> String {
    format!(
        ",hostfwd=tcp:127.0.0.1:{port}-{}:{GUEST_PORT}",
        crate::net::GUEST_IP
    )
}

/// Run a suite case.
pub fn case(name: &str) -> Result<String> {
    let &(_, nic) = CASES
        .iter()
        .find(|c| c.0 == name)
        .context("no such aarch64 network case")?;
    crate::setup::ensure_arm()?;
    let hyp = crate::arm::build()?;
    let images = crate::config::NamedImages {
        testguest: None,
        kernel_version: None,
    };
    let sets = case_sets(nic)?;
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let cfg = crate::config::suite(name, &config_name(nic), &sets, &images)?;
    let timeout = Duration::from_secs(CASE_TIMEOUT_S);
    let mut m = cfg.machine(timeout, &[])?;
    let port = free_port()?;
    m.extra = cfg.machine.pcie.qemu_args(&forwards(port));
    // Every ITS command QEMU skips, every SMMU complaint: guest errors, which fail it.
    m.extra.extend(["-d".into(), "guest_errors".into()]);
    let deadline = Instant::now() + timeout;
    let peer = std::thread::spawn(move || peer(port, deadline));
    let o = run_command_watched(
        m.command_for(&hyp),
        timeout,
        false,
        Some(Duration::from_secs(SILENCE_S)),
    );
    let host = peer.join().unwrap_or_else(|_| PeerReport {
        error: Some("the host peer panicked".into()),
        ..Default::default()
    });
    let o = o?;
    let log = save_log(name, &o.output)?;
    let secs = o.elapsed.as_secs_f64();
    let checked = check(&o.output, o.status, &host, nic)
        .and_then(|g| Ok(format!("{g}; {}", check_hyp(&o.output, g.msis, true)?)));
    match checked {
        Ok(s) => Ok(format!("{s}, {secs:.1} s")),
        Err(e) => bail!(
            "{e:#} ({secs:.1} s, log {}; host peer {host:?})",
            log.display()
        ),
    }
}

/// The guest's side of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestSummary {
    /// The NIC's interrupts (all its ITS MSI-X rows, all CPUs).
    pub msis: u64,
    /// Per row: name and count.
    pub rows: Vec<(String, u64)>,
    pub small: u32,
    pub down: u64,
    pub up: u64,
    pub secs: f64,
}

impl std::fmt::Display for GuestSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} round trips, {} MiB down, {} MiB up in {:.1} s; {} NIC MSIs ({})",
            self.small,
            self.down >> 20,
            self.up >> 20,
            self.secs,
            self.msis,
            self.rows
                .iter()
                .map(|(n, c)| format!("{n} {c}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// The guest's side: driver loaded, `eth0` up, the host peer's three phases complete
/// and intact, the guest's `done`, its NIC rows ITS MSI(-X) with a count above 0,
/// QEMU's exit status 0.
pub fn check(out: &str, status: Option<i32>, host: &PeerReport, nic: Nic) -> Result<GuestSummary> {
    for bad in ["NET error", "Kernel panic", "hyp: PANIC", "hyp: FATAL"] {
        ensure!(!out.contains(bad), "the console shows {bad:?}");
    }
    ensure!(
        out.contains(&format!("NET module {}", nic.module())),
        "the guest did not load {}",
        nic.module()
    );
    ensure!(
        out.lines().any(|l| l.starts_with("NET link ")
            && l.contains(&format!("inet {}/24", crate::net::GUEST_IP))),
        "eth0 did not come up"
    );
    if let Some(e) = &host.error {
        bail!("host peer: {e}");
    }
    ensure!(
        host.small_ok == SMALL_REQUESTS,
        "{} of {SMALL_REQUESTS} round trips",
        host.small_ok
    );
    ensure!(
        host.down_bytes == BIG_BYTES && host.down_intact,
        "download: {} bytes of {BIG_BYTES}, intact {}",
        host.down_bytes,
        host.down_intact
    );
    ensure!(
        host.up_acked == BIG_BYTES && out.contains(&format!("NET rx bytes={BIG_BYTES}")),
        "upload: the guest counted {} of {BIG_BYTES} bytes",
        host.up_acked
    );
    ensure!(host.bye, "no `bye` from the guest");
    ensure!(out.lines().any(|l| l == "NET done ok"), "no `NET done ok`");
    let rows = irq_rows(out, nic)?;
    ensure!(
        !rows.is_empty(),
        "no {} rows in /proc/interrupts",
        nic.device()
    );
    if let Some((n, _, chip)) = rows
        .iter()
        .find(|r| !(r.2.contains("ITS") && r.2.contains("MSI")))
    {
        bail!("{n}: not an ITS MSI row of /proc/interrupts (chip {chip:?})");
    }
    let msis: u64 = rows.iter().map(|r| r.1).sum();
    ensure!(msis > 0, "the NIC's MSI-X counts are all 0: {rows:?}");
    ensure!(status == Some(0), "QEMU exit status {status:?}");
    Ok(GuestSummary {
        msis,
        rows: rows.into_iter().map(|(n, c, _)| (n, c)).collect(),
        small: host.small_ok,
        down: host.down_bytes,
        up: host.up_acked,
        secs: host.secs,
    })
}

/// The NIC's rows (`NET irq …`): name, count over the CPUs, the chip's words.
fn irq_rows(out: &str, nic: Nic) -> Result<Vec<(String, u64, String)>> {
    let header = out
        .lines()
        .find_map(|l| l.strip_prefix("NET irq-cpus "))
        .context("no `NET irq-cpus` line")?;
    let cpus = header
        .split_whitespace()
        .filter(|w| w.starts_with("CPU"))
        .count();
    let mut rows = Vec::new();
    for row in out.lines().filter_map(|l| l.strip_prefix("NET irq ")) {
        if !nic.owns_irq_row(row) {
            continue;
        }
        let w: Vec<&str> = row.split_whitespace().collect();
        ensure!(w.len() > cpus + 1, "short interrupt row {row:?}");
        let mut total = 0u64;
        for c in &w[1..=cpus] {
            total += c
                .parse::<u64>()
                .with_context(|| format!("{cpus} counts expected: {row:?}"))?;
        }
        let name = w.last().copied().unwrap_or("").to_string();
        rows.push((name, total, w[cpus + 1..].join(" ")));
    }
    Ok(rows)
}

/// The hostile step ([`hostile`]): the guest said it rewrote the vector; every SMMU
/// event hyp printed is a stage-2 `F_TRANSLATION` write of StreamID 0x8 at
/// [`HOSTILE_MSI_ADDR`], there is at least one, `ACCT smmu` counts them with no
/// overflow or global error, and QEMU's SMMU (`-d guest_errors`) failed translations at
/// that address only.
pub fn check_hostile(out: &str) -> Result<String> {
    ensure!(
        out.lines()
            .any(|l| l.starts_with("NET hostile: MSI-X entry "))
            && out.lines().any(|l| l == "NET hostile done"),
        "the guest's hostile step did not run"
    );
    let mut events = 0u64;
    for l in out
        .lines()
        .filter_map(|l| l.strip_prefix("hyp: smmu event: "))
    {
        let want = format!("F_TRANSLATION (0x10) sid=0x8 addr={HOSTILE_MSI_ADDR:#x} write s2=1");
        ensure!(l.trim_end() == want, "unexpected SMMU event: {l}");
        events += 1;
    }
    ensure!(
        events > 0,
        "no SMMU event for the MSI-X vector pointed at {HOSTILE_MSI_ADDR:#x}"
    );
    for l in out
        .lines()
        .filter(|l| l.contains("translation failed for iova="))
    {
        ensure!(
            l.contains(&format!("iova={HOSTILE_MSI_ADDR:#x} ")),
            "QEMU's SMMU failed another translation: {l}"
        );
    }
    let smmu = out
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("hyp: ACCT smmu "))
        .context("no ACCT smmu line")?;
    for want in [
        format!("events={events}"),
        format!("translation_faults={events}"),
        "event_overflows=0".into(),
        "gerrors=0".into(),
    ] {
        ensure!(
            smmu.split_whitespace().any(|w| w == want),
            "ACCT smmu {smmu}: want {want}"
        );
    }
    Ok(format!(
        "hostile MSI-X vector: {events} SMMU F_TRANSLATION events at {HOSTILE_MSI_ADDR:#x}"
    ))
}

/// hyp's counters of one vCPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VcpuCounters {
    /// `irq` exits.
    pub irq_exits: u64,
    /// All exits.
    pub exits: u64,
    /// Host LPIs taken on an exit of the running vCPU (ACCT host interrupts
    /// `lpi_on_exit`): a device MSI that was no direct vLPI would be one. `None`: hyp
    /// did not report it.
    pub lpis_on_exit: Option<u64>,
    /// Host LPIs taken while it was loaded, on an exit or while its CPU idled (ACCT
    /// host interrupts `doorbell`).
    pub lpis: u64,
    pub doorbells: u64,
    pub wakeups: u64,
}

/// Every vCPU's [`VcpuCounters`] from hyp's ACCT lines.
pub fn vcpu_counters(out: &str) -> Vec<VcpuCounters> {
    let num = |l: &str, key: &str| -> Option<u64> {
        let i = l.find(key)? + key.len();
        l[i..]
            .split_whitespace()
            .next()?
            .trim_end_matches(';')
            .parse()
            .ok()
    };
    let mut v: Vec<VcpuCounters> = Vec::new();
    for l in out.lines().filter(|l| l.starts_with("hyp: ACCT ")) {
        if let Some((_, rest)) = l.split_once(" exits: ") {
            let (ex, host) = rest.split_once("; host interrupts:").unwrap_or((rest, ""));
            let w: Vec<&str> = ex.split_whitespace().collect();
            let exits = w
                .chunks(2)
                .filter_map(|p| p.get(1)?.parse::<u64>().ok())
                .sum();
            v.push(VcpuCounters {
                irq_exits: num(ex, "irq ").unwrap_or(0),
                exits,
                lpis_on_exit: num(&format!("{host} "), " lpi_on_exit "),
                lpis: num(host, " doorbell ").unwrap_or(0),
                ..Default::default()
            });
        } else if l.contains(" gicv4: ") {
            if let Some(last) = v.last_mut() {
                last.doorbells = num(l, " doorbells ").unwrap_or(0);
                last.wakeups = num(l, " wakeups ").unwrap_or(0);
            }
        }
    }
    v
}

/// hyp's side: the function on the SMMU with the guest's VMID, its ITS device mapped
/// (vITS actions, none dropped, no error anywhere), no QEMU GIC/ITS guest error; the
/// SMMU's events none, or with `hostile` exactly the hostile step's (each a stage-2 `F_TRANSLATION` write of
/// StreamID 0x8 at [`HOSTILE_MSI_ADDR`], at least one, QEMU's translation failures at
/// that address only, no overflow, no global error); `msis` NIC MSIs in the guest
/// while **no host LPI made a running vCPU exit** (0 exits per MSI), and doorbells that
/// woke blocked vCPUs.
pub fn check_hyp(out: &str, msis: u64, hostile: bool) -> Result<String> {
    ensure!(
        out.lines()
            .any(|l| l.starts_with("hyp: pci ") && l.contains("on the SMMUv3's stage 2")),
        "the NIC was not attached to the SMMU"
    );
    if let Some(l) = out.lines().find(|l| {
        crate::armtest::qemu_gic_error(l) || l.contains("smmu") && l.contains("guest_error")
    }) {
        bail!("QEMU reports a guest error: {l:?}");
    }
    let its = crate::arm::check_linux_its(out)?;
    let acct = out
        .lines()
        .find_map(|l| l.split_once(" vits: ").map(|(_, r)| r))
        .context("no vits ACCT line")?;
    let field = |k: &str| -> Result<u64> {
        let i = acct.find(k).with_context(|| format!("vits {k}"))? + k.len();
        acct[i..]
            .split_whitespace()
            .next()
            .and_then(|n| n.trim_end_matches(';').parse().ok())
            .with_context(|| format!("vits {k}"))
    };
    let (actions, dropped) = (field("actions ")?, field("no_host_device ")?);
    ensure!(
        dropped == 0,
        "{dropped} vITS actions dropped: a device had no host DeviceID"
    );
    let hostile = if hostile {
        check_hostile(out)?
    } else {
        let smmu = out
            .lines()
            .find(|l| l.starts_with("hyp: ACCT smmu "))
            .context("no ACCT smmu line")?;
        ensure!(
            smmu.contains(" events=0 "),
            "the SMMU recorded events: {smmu}"
        );
        "no SMMU event".to_string()
    };
    let v = vcpu_counters(out);
    ensure!(!v.is_empty(), "no vCPU ACCT lines");
    let lpis: u64 = v
        .iter()
        .map(|c| {
            c.lpis_on_exit
                .context("no lpi_on_exit host interrupts in hyp's ACCT")
        })
        .sum::<Result<u64>>()?;
    let doorbells: u64 = v.iter().map(|c| c.doorbells).sum();
    let wakeups: u64 = v.iter().map(|c| c.wakeups).sum();
    let irq_exits: u64 = v.iter().map(|c| c.irq_exits).sum();
    let exits: u64 = v.iter().map(|c| c.exits).sum();
    ensure!(msis > 0, "no NIC MSI");
    ensure!(
        lpis == 0,
        "{lpis} host LPIs made a running vCPU exit: NIC MSIs were not all direct vLPIs"
    );
    ensure!(
        doorbells > 0 && wakeups > 0,
        "no doorbell woke a blocked vCPU (doorbells {doorbells}, wake-ups {wakeups})"
    );
    Ok(format!(
        "{hostile}; hyp: {msis} NIC MSIs as vLPIs, 0 host LPIs on vCPU exits (0 exits per MSI; {irq_exits} irq exits, {exits} exits in all), {doorbells} doorbells for {wakeups} doorbell wake-ups, vITS actions {actions}; {its}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// hyp's lines of a passing run (cut).
    const HYP: &str = "\
hyp: pci 00:01.0: StreamID 0x8 on the SMMUv3's stage 2 (VMID 1, S2TTB 0x405a4000); bar1 0x10000000+0x1000, bar4 0x10004000+0x4000 mapped at the same IPA; guest ECAM Some((4010000000, 100000))
[    0.000000] ITS@0x0000000008080000: allocated 65536 Devices @82a00000 (flat, esz 8, psz 64K, shr 1)
hyp: ACCT linux vcpu 0 exits: irq 900 wfi 800 hvc 5 sysreg 10 mmio 40 other 0; host interrupts: kick 300 maintenance 0 vtimer 500 passthrough 20 hyptimer 0 doorbell 120 other 0 lpi_on_exit 0
hyp: ACCT linux vcpu 0 gicv4: vPE 0 doorbell LPI 8192: vlpis sent 0 doorbells 120 wakeups 110 stay_runnable 1 loads 900
hyp: ACCT linux vcpu 1 exits: irq 700 wfi 600 hvc 2 sysreg 10 mmio 4 other 0; host interrupts: kick 200 maintenance 0 vtimer 400 passthrough 0 hyptimer 0 doorbell 30 other 0 lpi_on_exit 0
hyp: ACCT linux vcpu 1 gicv4: vPE 1 doorbell LPI 8193: vlpis sent 0 doorbells 30 wakeups 25 stay_runnable 0 loads 700
hyp: ACCT linux vits: actions 18 host_cmds 18 no_host_device 0 config_copies 114694 config_unread 0 msis 0 msis_dropped 0; command errors CmdErrors { unknown: 0, read_failed: 0 }; register errors ErrorCounters { bad_width: 0, unmapped: 0 }
hyp: linux: GICv4 errors: 0
NET hostile: MSI-X entry 1 at 0x10000010 -> 0x8080088
NET hostile done
hyp: smmu event: F_TRANSLATION (0x10) sid=0x8 addr=0x8080088 write s2=1
hyp: smmu event: F_TRANSLATION (0x10) sid=0x8 addr=0x8080088 write s2=1
smmuv3-iommu-memory-region-8-1 translation failed for iova=0x8080088 (SMMU_EVT_F_TRANSLATION)
hyp: ACCT smmu commands=6 syncs=2 events=2 translation_faults=2 event_overflows=0 gerrors=0
";

    #[test]
    fn counters_are_read_per_vcpu() {
        let v = vcpu_counters(HYP);
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[0],
            VcpuCounters {
                irq_exits: 900,
                exits: 1755,
                lpis_on_exit: Some(0),
                lpis: 120,
                doorbells: 120,
                wakeups: 110
            }
        );
        let s = check_hyp(HYP, 1621, true).unwrap();
        assert!(
            check_hyp(HYP, 1621, false).is_err(),
            "events without a hostile step"
        );
        assert!(s.contains("150 doorbells for 135"), "{s}");
        let bad = HYP.replacen("lpi_on_exit 0", "lpi_on_exit 7", 1);
        assert_eq!(vcpu_counters(&bad)[0].lpis_on_exit, Some(7));
        assert!(
            check_hyp(&bad, 1621, true).is_err(),
            "an MSI that made an exit"
        );
        let old = HYP.replace(" lpi_on_exit 0", "");
        assert!(
            check_hyp(&old, 1621, true).is_err(),
            "no lpi_on_exit counter"
        );
        let quiet = HYP.replace("doorbells 120 wakeups 110", "doorbells 0 wakeups 0");
        let quiet = quiet.replace("doorbells 30 wakeups 25", "doorbells 0 wakeups 0");
        assert!(check_hyp(&quiet, 1621, true).is_err(), "no doorbell");
        let dropped = HYP.replace("no_host_device 0", "no_host_device 2");
        assert!(check_hyp(&dropped, 1621, true).is_err(), "no host device");
        let event = HYP.replacen("addr=0x8080088", "addr=0x84000000", 1);
        assert!(check_hyp(&event, 1621, true).is_err(), "another SMMU event");
        let counted = HYP.replace("events=2 ", "events=3 ");
        assert!(
            check_hyp(&counted, 1621, true).is_err(),
            "events counted wrong"
        );
        let none = HYP.replace("hyp: smmu event: ", "").replace(
            "events=2 translation_faults=2",
            "events=0 translation_faults=0",
        );
        assert!(
            check_hyp(&none, 1621, true).is_err(),
            "the hostile MSI was not refused"
        );
        let qemu = HYP.replace("iova=0x8080088 ", "iova=0x84000000 ");
        assert!(
            check_hyp(&qemu, 1621, true).is_err(),
            "QEMU failed another translation"
        );
        assert!(check_hyp(HYP, 0, true).is_err(), "no MSI");
    }

    #[test]
    fn guest_rows_must_be_its_msis() {
        let out = "\
NET module virtio_net
NET link 52:54:00:12:34:56 inet 10.0.2.15/24
NET rx bytes=4194304
NET done ok
NET irq-cpus            CPU0       CPU1
NET irq  14:        120        30  ITS-PCI-MSIX-0000:00:01.0   0 Edge      virtio0-config
NET irq  15:       2000       500  ITS-PCI-MSIX-0000:00:01.0   1 Edge      virtio0-input.0
";
        let host = PeerReport {
            small_ok: SMALL_REQUESTS,
            down_bytes: BIG_BYTES,
            down_intact: true,
            up_acked: BIG_BYTES,
            secs: 1.0,
            bye: true,
            error: None,
        };
        let g = check(out, Some(0), &host, Nic::VirtioNet).unwrap();
        assert_eq!(g.msis, 2650);
        let gic = out.replace("ITS-PCI-MSIX-0000:00:01.0", "GICv3");
        assert!(check(&gic, Some(0), &host, Nic::VirtioNet).is_err());
        let short = PeerReport {
            up_acked: 5,
            ..host.clone()
        };
        assert!(check(out, Some(0), &short, Nic::VirtioNet).is_err());
        assert!(check(out, Some(1), &host, Nic::VirtioNet).is_err());
    }
}
