//! KVM's binary statistics (`KVM_GET_STATS_FD`, Linux `Documentation/virt/kvm/api.rst`
//! §4.133): a header, an id string, one descriptor per statistic, then the data block.
//! Only the plain counters are kept (cumulative, unit "none", one value): the exit
//! counts of a vCPU (`exits`, `ecall_exit_stat`, `wfi_exit_stat`, `mmio_exit_kernel`, …).
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// `struct kvm_stats_header`: six `u32`.
const HEADER_LEN: usize = 24;
/// `struct kvm_stats_desc` without its name: flags u32, exponent s16, size u16,
/// offset u32, bucket_size u32.
const DESC_LEN: usize = 16;
/// `KVM_STATS_TYPE_MASK`, `KVM_STATS_TYPE_CUMULATIVE`.
const TYPE_MASK: u32 = 0xf;
const TYPE_CUMULATIVE: u32 = 0;
/// `KVM_STATS_UNIT_MASK`, `KVM_STATS_UNIT_NONE`.
const UNIT_MASK: u32 = 0xf0;
const UNIT_NONE: u32 = 0;

fn u32_at(b: &[u8], at: usize) -> io::Result<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_ne_bytes(s.try_into().expect("4 bytes")))
        .ok_or_else(|| bad("truncated"))
}

fn u16_at(b: &[u8], at: usize) -> io::Result<u16> {
    b.get(at..at + 2)
        .map(|s| u16::from_ne_bytes(s.try_into().expect("2 bytes")))
        .ok_or_else(|| bad("truncated"))
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("KVM stats: {what}"))
}

/// The counters of a stats file: names and where each value is in the data block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The file's id (`kvm-<pid>/vcpu-<n>`).
    pub id: String,
    pub data_offset: u64,
    /// Bytes of the data block.
    pub data_len: usize,
    /// `(name, byte offset in the data block)` of each counter.
    pub counters: Vec<(String, usize)>,
}

impl Layout {
    /// Parse the header and the descriptors: `head` holds the file from its start up to
    /// the data block.
    pub fn parse(head: &[u8]) -> io::Result<Layout> {
        let name_size = u32_at(head, 4)? as usize;
        let num_desc = u32_at(head, 8)? as usize;
        let id_offset = u32_at(head, 12)? as usize;
        let desc_offset = u32_at(head, 16)? as usize;
        let data_offset = u32_at(head, 20)? as u64;
        let cstr = |at: usize| -> io::Result<String> {
            let s = head
                .get(at..at + name_size)
                .ok_or_else(|| bad("truncated name"))?;
            let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
            Ok(String::from_utf8_lossy(&s[..end]).into_owned())
        };
        let id = cstr(id_offset)?;
        let mut counters = Vec::new();
        let mut data_len = 0;
        for i in 0..num_desc {
            let at = desc_offset + i * (DESC_LEN + name_size);
            let flags = u32_at(head, at)?;
            let size = u16_at(head, at + 6)? as usize;
            let offset = u32_at(head, at + 8)? as usize;
            data_len = data_len.max(offset + size * 8);
            if flags & TYPE_MASK == TYPE_CUMULATIVE && flags & UNIT_MASK == UNIT_NONE && size == 1 {
                counters.push((cstr(at + DESC_LEN)?, offset));
            }
        }
        Ok(Layout {
            id,
            data_offset,
            data_len,
            counters,
        })
    }

    /// The counters' values from the data block.
    pub fn values(&self, data: &[u8]) -> io::Result<Vec<u64>> {
        self.counters
            .iter()
            .map(|(_, off)| {
                data.get(*off..*off + 8)
                    .map(|s| u64::from_ne_bytes(s.try_into().expect("8 bytes")))
                    .ok_or_else(|| bad("truncated data"))
            })
            .collect()
    }
}

/// A vCPU's (or VM's) stats file descriptor with its layout.
pub struct Stats {
    file: File,
    pub layout: Layout,
}

impl Stats {
    /// Read the layout of the stats file `file` (from `KVM_GET_STATS_FD`).
    pub fn new(file: File) -> io::Result<Stats> {
        let mut header = [0u8; HEADER_LEN];
        file.read_exact_at(&mut header, 0)?;
        let data_offset = u32_at(&header, 20)? as usize;
        if !(HEADER_LEN..=1 << 20).contains(&data_offset) {
            return Err(bad("implausible data offset"));
        }
        let mut head = vec![0u8; data_offset];
        file.read_exact_at(&mut head, 0)?;
        let layout = Layout::parse(&head)?;
        Ok(Stats { file, layout })
    }

    /// The counters now, in the order of `layout.counters`.
    pub fn read(&self) -> io::Result<Vec<u64>> {
        let mut data = vec![0u8; self.layout.data_len];
        self.file
            .read_exact_at(&mut data, self.layout.data_offset)?;
        self.layout.values(&data)
    }
}

/// `name=value` for every counter that moved from `before` to `after` (in the layout's
/// order), e.g. `exits=12 ecall_exit_stat=11`.
pub fn deltas(layout: &Layout, before: &[u64], after: &[u64]) -> String {
    layout
        .counters
        .iter()
        .zip(before.iter().zip(after))
        .filter(|(_, (b, a))| a != b)
        .map(|((name, _), (b, a))| format!("{name}={}", a.wrapping_sub(*b)))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stats file as KVM lays it out: header, id, descriptors, data.
    fn file(stats: &[(&str, u32, u16, u64)]) -> Vec<u8> {
        let name_size = 48usize;
        let id_offset = HEADER_LEN;
        let desc_offset = id_offset + name_size;
        let data_offset = desc_offset + stats.len() * (DESC_LEN + name_size);
        let mut b = Vec::new();
        for v in [
            0u32,
            name_size as u32,
            stats.len() as u32,
            id_offset as u32,
            desc_offset as u32,
            data_offset as u32,
        ] {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        let name = |s: &str, b: &mut Vec<u8>| {
            let mut n = s.as_bytes().to_vec();
            n.resize(name_size, 0);
            b.extend_from_slice(&n);
        };
        name("kvm-42/vcpu-0", &mut b);
        let mut offset = 0u32;
        for (n, flags, size, _) in stats {
            b.extend_from_slice(&flags.to_ne_bytes());
            b.extend_from_slice(&0i16.to_ne_bytes());
            b.extend_from_slice(&size.to_ne_bytes());
            b.extend_from_slice(&offset.to_ne_bytes());
            b.extend_from_slice(&0u32.to_ne_bytes());
            name(n, &mut b);
            offset += u32::from(*size) * 8;
        }
        for (_, _, size, v) in stats {
            for k in 0..*size {
                b.extend_from_slice(&(v + u64::from(k)).to_ne_bytes());
            }
        }
        b
    }

    #[test]
    fn keeps_the_plain_counters() {
        let f = file(&[
            ("halt_poll_success_ns", 0x20 | 0x100, 1, 5000), // unit seconds: dropped
            ("exits", 0, 1, 1234),
            ("halt_poll_success_hist", 4, 32, 1), // a histogram: dropped
            ("ecall_exit_stat", 0, 1, 1000),
            ("blocking", 1, 1, 0), // instant: dropped
        ]);
        let data_offset = u32_at(&f, 20).unwrap() as usize;
        let l = Layout::parse(&f[..data_offset]).unwrap();
        assert_eq!(l.id, "kvm-42/vcpu-0");
        let names: Vec<&str> = l.counters.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(names, ["exits", "ecall_exit_stat"]);
        assert_eq!(l.data_len, 8 * (1 + 1 + 32 + 1 + 1));
        let v = l.values(&f[data_offset..]).unwrap();
        assert_eq!(v, [1234, 1000]);
        assert_eq!(deltas(&l, &[1000, 1000], &v), "exits=234");
        assert!(Layout::parse(&f[..40]).is_err());
    }

    #[test]
    fn reads_a_stats_file() {
        let f = file(&[("exits", 0, 1, 7), ("wfi_exit_stat", 0, 1, 3)]);
        let path = std::env::temp_dir().join(format!("virq-kvm-stats-{}", std::process::id()));
        std::fs::write(&path, &f).unwrap();
        let s = Stats::new(File::open(&path).unwrap()).unwrap();
        assert_eq!(s.read().unwrap(), [7, 3]);
        std::fs::remove_file(&path).unwrap();
    }
}
