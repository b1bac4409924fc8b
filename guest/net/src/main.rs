//! `virq-net ADDR:PORT TCP_BYTES UDP_COUNT UDP_PORT`: the guest side of the network
//! test (docs/hyp.md, "The network test").
//!
//! Everything goes to xtask's host peer through QEMU's user network with
//! `restrict=on`: one TCP connection to `ADDR:PORT` (a `guestfwd` to 127.0.0.1 on the
//! host) carries the control lines and the stream, and UDP requests come *in* through a
//! `hostfwd=udp:127.0.0.1:…` to `UDP_PORT` — with `restrict=on` libslirp drops every UDP
//! datagram the guest sends (`udp_input`: `if (slirp->restricted) goto bad`), so each
//! request is answered over the TCP connection.
//!
//! The protocol, lines ending in `\n` (guest → host unless marked):
//! 1. `TCP n`, then `n` bytes of the pattern (byte `i` is `i % 251`); host → guest
//!    `ACK m ok|bad` (`m` bytes received, the pattern intact or not).
//! 2. `UDP count`; for each request the host sends the datagram `Q seq` to the guest's
//!    `UDP_PORT` and waits for the line `A seq`; then host → guest `UDPDONE sent=s
//!    answered=a`.
//! 3. `BYE`.
//!
//! Output (stdout, one line each): `NET tcp bytes=n secs=S irqs=I host_received=m
//! ok|bad`, `NET udp requests=c received=r secs=S irqs=I host_sent=s host_answered=a
//! ok|bad` (`irqs`: the NIC's interrupts during the phase, from `/proc/interrupts`;
//! `secs`: the phase in guest time; `busy_ms`: the CPUs' non-idle time in it, all CPUs,
//! from `/proc/stat` — under `-icount` the instructions the guest executed, 10^6 per
//! ms, whatever the virtual clock did while it idled), and at the end
//! `NET done ok` (exit status 0) or `NET error …` (exit status 1). Every loop is
//! bounded by a count and every wait by a time limit (guest time: under `-icount
//! sleep=off` the guest's clock runs ahead while it waits, so the limits are generous
//! and the host's limits, in wall time, are the real bound).
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// Attempts to connect (the forward answers as soon as the link is up), each bounded.
const CONNECT_TRIES: u32 = 20;
const CONNECT_WAIT: Duration = Duration::from_secs(3);
/// Wait for one control line from the host.
const LINE_WAIT: Duration = Duration::from_secs(120);
/// Wait for one UDP request.
const UDP_WAIT: Duration = Duration::from_secs(20);
/// UDP waits in a row that end the UDP phase early.
const UDP_MISSES: u32 = 3;
/// Largest stream accepted on the command line (1 GiB).
const TCP_MAX: u64 = 1 << 30;
/// Most UDP requests accepted on the command line.
const UDP_MAX: u32 = 1_000_000;

/// Byte `i` of the stream.
fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

fn main() {
    match run() {
        Ok(true) => println!("NET done ok"),
        Ok(false) => {
            println!("NET done bad");
            std::process::exit(1);
        }
        Err(e) => {
            println!("NET error {e}");
            std::process::exit(1);
        }
    }
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T, String> {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("usage: virq-net ADDR:PORT TCP_BYTES UDP_COUNT UDP_PORT ({what})"))
}

fn run() -> Result<bool, String> {
    let args: Vec<String> = std::env::args().collect();
    let addr: String = arg(&args, 1, "ADDR:PORT")?;
    let tcp_bytes: u64 = arg(&args, 2, "TCP_BYTES")?;
    let udp_count: u32 = arg(&args, 3, "UDP_COUNT")?;
    let udp_port: u16 = arg(&args, 4, "UDP_PORT")?;
    if tcp_bytes > TCP_MAX || udp_count > UDP_MAX {
        return Err(format!("at most {TCP_MAX} bytes and {UDP_MAX} requests"));
    }
    // The UDP socket first, so that no request can arrive before it exists.
    let udp = UdpSocket::bind(("0.0.0.0", udp_port)).map_err(|e| format!("udp bind: {e}"))?;
    udp.set_read_timeout(Some(UDP_WAIT))
        .map_err(|e| format!("udp timeout: {e}"))?;
    let to: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut tcp = None;
    for _ in 0..CONNECT_TRIES {
        match TcpStream::connect_timeout(&to, CONNECT_WAIT) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    let tcp = tcp.ok_or_else(|| format!("cannot connect to {addr}"))?;
    tcp.set_read_timeout(Some(LINE_WAIT))
        .map_err(|e| format!("tcp timeout: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    let mut rx = BufReader::new(tcp.try_clone().map_err(|e| format!("clone: {e}"))?);
    let mut tx = tcp;
    let mut good = true;

    // 1. The stream.
    let (irqs0, busy0) = (nic_irqs(), busy_ms());
    let start = Instant::now();
    send(&mut tx, &format!("TCP {tcp_bytes}\n"))?;
    let mut chunk = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    while sent < tcp_bytes {
        let n = (tcp_bytes - sent).min(chunk.len() as u64) as usize;
        for (k, b) in chunk[..n].iter_mut().enumerate() {
            *b = pattern(sent + k as u64);
        }
        tx.write_all(&chunk[..n])
            .map_err(|e| format!("tcp write after {sent} bytes: {e}"))?;
        sent += n as u64;
    }
    let ack = line(&mut rx)?;
    let secs = start.elapsed().as_secs_f64();
    let irqs = nic_irqs().saturating_sub(irqs0);
    let busy = busy_ms().saturating_sub(busy0);
    let (received, intact) = parse_ack(&ack).ok_or_else(|| format!("bad ack {ack:?}"))?;
    let ok = received == tcp_bytes && intact;
    good &= ok;
    println!(
        "NET tcp bytes={tcp_bytes} secs={secs:.3} busy_ms={busy} irqs={irqs} host_received={received} {}",
        verdict(ok)
    );

    // 2. UDP requests, answered over TCP.
    let (irqs0, busy0) = (nic_irqs(), busy_ms());
    let start = Instant::now();
    send(&mut tx, &format!("UDP {udp_count}\n"))?;
    let (mut got, mut misses) = (0u32, 0u32);
    let mut buf = [0u8; 1500];
    for _ in 0..udp_count {
        match udp.recv_from(&mut buf) {
            Ok((n, _)) => {
                misses = 0;
                let text = String::from_utf8_lossy(&buf[..n]);
                let Some(seq) = text
                    .strip_prefix("Q ")
                    .and_then(|s| s.trim().parse::<u32>().ok())
                else {
                    return Err(format!("bad request {text:?}"));
                };
                got += 1;
                send(&mut tx, &format!("A {seq}\n"))?;
            }
            Err(_) => {
                misses += 1;
                if misses >= UDP_MISSES {
                    break;
                }
            }
        }
    }
    let done = line(&mut rx)?;
    let secs = start.elapsed().as_secs_f64();
    let irqs = nic_irqs().saturating_sub(irqs0);
    let busy = busy_ms().saturating_sub(busy0);
    let (host_sent, answered) =
        parse_udpdone(&done).ok_or_else(|| format!("bad summary {done:?}"))?;
    let ok = got == udp_count && host_sent == udp_count && answered == udp_count;
    good &= ok;
    println!(
        "NET udp requests={udp_count} received={got} secs={secs:.3} busy_ms={busy} irqs={irqs} host_sent={host_sent} host_answered={answered} {}",
        verdict(ok)
    );
    send(&mut tx, "BYE\n")?;
    Ok(good)
}

/// Whether a row of `/proc/interrupts` (its last word, the action name) is the NIC's:
/// virtio-net's `virtio<N>-input.<q>`, `-output.<q>`, `-config`; e1000e's `eth0`,
/// `eth0-rx-<q>`, `eth0-tx-<q>`.
fn nic_row(name: &str) -> bool {
    (name.starts_with("virtio")
        && ["-input.", "-output.", "-config"]
            .iter()
            .any(|s| name.contains(s)))
        || name == "eth0"
        || name.starts_with("eth0-")
}

/// Milliseconds all CPUs spent not idle so far (`/proc/stat`'s first line: user, nice,
/// system, irq, softirq, steal; in USER_HZ = 100 ticks), 0 if it cannot be read.
fn busy_ms() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .map(|t| busy_in(&t))
        .unwrap_or(0)
}

/// [`busy_ms`] of the text of `/proc/stat`.
fn busy_in(text: &str) -> u64 {
    let Some(cpu) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let t: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .map(|w| w.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| t.get(i)).sum();
    busy * 10
}

/// The NIC's interrupts so far, all CPUs (0 if `/proc/interrupts` cannot be read).
fn nic_irqs() -> u64 {
    std::fs::read_to_string("/proc/interrupts")
        .map(|t| irqs_in(&t))
        .unwrap_or(0)
}

/// [`nic_irqs`] of the text of `/proc/interrupts`.
fn irqs_in(text: &str) -> u64 {
    text.lines()
        .filter(|l| l.split_whitespace().last().is_some_and(nic_row))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .map_while(|w| w.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "bad"
    }
}

fn send(tx: &mut TcpStream, s: &str) -> Result<(), String> {
    tx.write_all(s.as_bytes())
        .map_err(|e| format!("sending {:?}: {e}", s.trim()))
}

/// One line from the host (at most 200 bytes).
fn line(rx: &mut BufReader<TcpStream>) -> Result<String, String> {
    let mut s = String::new();
    rx.by_ref()
        .take(200)
        .read_line(&mut s)
        .map_err(|e| format!("waiting for the host: {e}"))?;
    if !s.ends_with('\n') {
        return Err(format!("the host closed the connection ({s:?})"));
    }
    Ok(s.trim_end().to_string())
}

/// `ACK m ok|bad`.
fn parse_ack(s: &str) -> Option<(u64, bool)> {
    let mut w = s.split_whitespace();
    (w.next()? == "ACK").then_some(())?;
    let m = w.next()?.parse().ok()?;
    Some((m, w.next()? == "ok"))
}

/// `UDPDONE sent=s answered=a`.
fn parse_udpdone(s: &str) -> Option<(u32, u32)> {
    let mut w = s.split_whitespace();
    (w.next()? == "UDPDONE").then_some(())?;
    let sent = w.next()?.strip_prefix("sent=")?.parse().ok()?;
    let answered = w.next()?.strip_prefix("answered=")?.parse().ok()?;
    Some((sent, answered))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_lines_are_parsed() {
        assert_eq!(parse_ack("ACK 42 ok"), Some((42, true)));
        assert_eq!(parse_ack("ACK 42 bad"), Some((42, false)));
        assert_eq!(parse_ack("NAK 42 ok"), None);
        assert_eq!(parse_udpdone("UDPDONE sent=5 answered=4"), Some((5, 4)));
        assert_eq!(parse_udpdone("UDPDONE sent=5"), None);
        assert_eq!((pattern(0), pattern(250), pattern(251)), (0, 250, 0));
    }

    #[test]
    fn busy_time_leaves_idle_out() {
        let t = "cpu  10 1 20 1000 5 2 3 4 0 0\ncpu0 5 0 10 500 2 1 1 2 0 0\n";
        assert_eq!(busy_in(t), (10 + 1 + 20 + 2 + 3 + 4) * 10);
        assert_eq!(busy_in("intr 1 2 3\n"), 0);
    }

    #[test]
    fn nic_interrupts_are_summed() {
        let t = "           CPU0       CPU1
 10:        100        200  APLIC-MSI-d000000.interrupt-controller  10 Level     ttyS0
 14:          0          0  PCI-MSIX-0000:00:01.0   0 Edge      virtio0-config
 15:        708          2  PCI-MSIX-0000:00:01.0   1 Edge      virtio0-input.0
 16:          0        675  PCI-MSIX-0000:00:01.0   2 Edge      virtio0-output.0
IPI0:        53         65  Rescheduling interrupts
";
        assert_eq!(irqs_in(t), 708 + 2 + 675);
        let e = " 14:          3       1341  PCI-MSIX-0000:00:01.0   0 Edge      eth0-rx-0\n\
                 15:       1560          0  PCI-MSIX-0000:00:01.0   1 Edge      eth0-tx-0\n";
        assert_eq!(irqs_in(e), 3 + 1341 + 1560);
    }
}
