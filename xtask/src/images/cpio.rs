//! A writer for the `newc` cpio format (the one the Linux kernel unpacks as an
//! initramfs; see the kernel's `Documentation/driver-api/early-userspace/buffer-format.rst`).
//!
//! Each entry is a 110-byte ASCII header (`070701` and 13 fields of 8 hex digits),
//! the NUL-terminated name, padding to 4 bytes, the data, padding to 4 bytes. The
//! archive ends with an entry named `TRAILER!!!`.
use anyhow::{bail, Context, Result};
use std::io::Write;

/// Magic of a `newc` header without checksums.
pub const MAGIC: &[u8; 6] = b"070701";
/// Name of the last entry of every archive.
pub const TRAILER: &str = "TRAILER!!!";
/// Length of a `newc` header.
pub const HEADER_LEN: usize = 110;

/// File type bits (`S_IFMT` and friends), combined with the permission bits.
pub const S_IFDIR: u32 = 0o040000;
/// Regular file.
pub const S_IFREG: u32 = 0o100000;
/// Symbolic link.
pub const S_IFLNK: u32 = 0o120000;
/// Character device.
pub const S_IFCHR: u32 = 0o020000;

/// Streams `newc` entries into `W`. Call [`CpioWriter::finish`] to write the
/// trailer; names are stored without a leading `/`.
pub struct CpioWriter<W: Write> {
    out: W,
    next_ino: u32,
    written: u64,
}

/// The fields of one entry that vary (the rest are 0: uid, gid, mtime, dev).
struct Header<'a> {
    name: &'a str,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    data: &'a [u8],
}

impl<W: Write> CpioWriter<W> {
    /// A writer appending to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            next_ino: 1,
            written: 0,
        }
    }

    /// A directory `name` with permission bits `perm` (e.g. `0o755`).
    pub fn dir(&mut self, name: &str, perm: u32) -> Result<()> {
        self.entry(Header {
            name,
            mode: S_IFDIR | (perm & 0o7777),
            nlink: 2,
            rdev: (0, 0),
            data: &[],
        })
    }

    /// A regular file `name` with permission bits `perm` and contents `data`.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> Result<()> {
        self.entry(Header {
            name,
            mode: S_IFREG | (perm & 0o7777),
            nlink: 1,
            rdev: (0, 0),
            data,
        })
    }

    /// A symbolic link `name` pointing at `target`.
    pub fn symlink(&mut self, name: &str, target: &str) -> Result<()> {
        if target.is_empty() || target.contains('\0') {
            bail!("cpio: bad symlink target {target:?} for {name:?}");
        }
        self.entry(Header {
            name,
            mode: S_IFLNK | 0o777,
            nlink: 1,
            rdev: (0, 0),
            data: target.as_bytes(),
        })
    }

    /// A character device node `name` with permission bits `perm` and device
    /// number `major:minor` (e.g. `/dev/console` is 5:1).
    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> Result<()> {
        self.entry(Header {
            name,
            mode: S_IFCHR | (perm & 0o7777),
            nlink: 1,
            rdev: (major, minor),
            data: &[],
        })
    }

    /// Write the `TRAILER!!!` entry and return the underlying writer.
    pub fn finish(mut self) -> Result<W> {
        self.raw(
            0,
            &Header {
                name: TRAILER,
                mode: 0,
                nlink: 1,
                rdev: (0, 0),
                data: &[],
            },
        )?;
        self.out.flush().context("cpio: flushing the archive")?;
        Ok(self.out)
    }

    fn entry(&mut self, h: Header<'_>) -> Result<()> {
        if h.name.is_empty() || h.name == TRAILER || h.name.starts_with('/') {
            bail!(
                "cpio: bad entry name {:?} (relative, non-empty, not {TRAILER})",
                h.name
            );
        }
        if h.name.contains('\0') || h.name.split('/').any(|c| c.is_empty() || c == "..") {
            bail!("cpio: bad entry name {:?}", h.name);
        }
        let ino = self.next_ino;
        self.next_ino = self
            .next_ino
            .checked_add(1)
            .context("cpio: too many entries")?;
        self.raw(ino, &h)
    }

    fn raw(&mut self, ino: u32, h: &Header<'_>) -> Result<()> {
        let size = u32::try_from(h.data.len())
            .with_context(|| format!("cpio: {} is larger than 4 GiB", h.name))?;
        let namesize = u32::try_from(h.name.len() + 1)
            .with_context(|| format!("cpio: name {:?} is too long", h.name))?;
        let fields = [
            ino, h.mode, 0, 0, h.nlink, 0, size, 0, 0, h.rdev.0, h.rdev.1, namesize, 0,
        ];
        let mut buf = Vec::with_capacity(HEADER_LEN + h.name.len() + 4);
        buf.extend_from_slice(MAGIC);
        for f in fields {
            buf.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        buf.extend_from_slice(h.name.as_bytes());
        buf.push(0);
        buf.resize(buf.len().next_multiple_of(4), 0);
        let pad = [0u8; 3];
        let data_pad = (4 - h.data.len() % 4) % 4;
        self.out
            .write_all(&buf)
            .and_then(|()| self.out.write_all(h.data))
            .and_then(|()| self.out.write_all(&pad[..data_pad]))
            .with_context(|| format!("cpio: writing {}", h.name))?;
        self.written += (buf.len() + h.data.len() + data_pad) as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }
}

/// One parsed entry (tests only: a reader to check the writer against).
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub ino: u32,
    pub mode: u32,
    pub nlink: u32,
    pub rdev: (u32, u32),
    pub name: String,
    pub data: Vec<u8>,
}

/// Parse a `newc` archive up to and including its trailer.
#[cfg(test)]
pub fn parse(mut data: &[u8]) -> Result<Vec<Entry>> {
    let total = data.len();
    let mut entries = Vec::new();
    loop {
        let at = total - data.len();
        if !at.is_multiple_of(4) {
            bail!("entry at {at} is not 4-byte aligned");
        }
        if data.len() < HEADER_LEN {
            bail!("truncated header at {at}");
        }
        if &data[..6] != MAGIC {
            bail!("bad magic at {at}");
        }
        let mut f = [0u32; 13];
        for (i, v) in f.iter_mut().enumerate() {
            let s = std::str::from_utf8(&data[6 + 8 * i..14 + 8 * i])?;
            if s.bytes().any(|b| b.is_ascii_lowercase()) {
                bail!("lower-case hex {s:?} at {at}");
            }
            *v = u32::from_str_radix(s, 16)?;
        }
        let (size, namesize) = (f[6] as usize, f[11] as usize);
        let name_end = HEADER_LEN + namesize;
        let data_start = name_end.next_multiple_of(4);
        let data_end = data_start + size;
        if data.len() < data_end || namesize == 0 || data[name_end - 1] != 0 {
            bail!("bad name or size at {at}");
        }
        let name = std::str::from_utf8(&data[HEADER_LEN..name_end - 1])?.to_string();
        let entry = Entry {
            ino: f[0],
            mode: f[1],
            nlink: f[4],
            rdev: (f[9], f[10]),
            name,
            data: data[data_start..data_end].to_vec(),
        };
        let next = data_end.next_multiple_of(4).min(data.len());
        if data[data_end..next].iter().any(|&b| b != 0) {
            bail!("non-zero padding after {}", entry.name);
        }
        data = &data[next..];
        let last = entry.name == TRAILER;
        entries.push(entry);
        if last {
            return Ok(entries);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("dev", 0o755).unwrap();
        w.char_dev("dev/console", 0o600, 5, 1).unwrap();
        w.file("init", 0o755, b"#!/bin/sh\necho hi\n").unwrap();
        w.symlink("sh", "busybox").unwrap();
        w.file("empty", 0o644, b"").unwrap();
        let n = w.written();
        let out = w.finish().unwrap();
        assert!(out.len() as u64 > n);
        out
    }

    #[test]
    fn header_layout_is_newc() {
        let out = sample();
        // First entry: "dev", ino 1, directory 0o40755, nlink 2, namesize 4.
        let h = std::str::from_utf8(&out[..HEADER_LEN]).unwrap();
        assert_eq!(
            h,
            "070701\
             00000001\
             000041ED\
             00000000\
             00000000\
             00000002\
             00000000\
             00000000\
             00000000\
             00000000\
             00000000\
             00000000\
             00000004\
             00000000"
        );
        // 110 + 4 = 114 -> padded to 116, no data.
        assert_eq!(&out[HEADER_LEN..HEADER_LEN + 6], b"dev\0\0\0");
        assert_eq!(&out[116..122], MAGIC);
        assert_eq!(out.len() % 4, 0);
    }

    #[test]
    fn round_trips_and_ends_with_trailer() {
        let entries = parse(&sample()).unwrap();
        let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            ["dev", "dev/console", "init", "sh", "empty", TRAILER]
        );
        let console = &entries[1];
        assert_eq!(console.mode, 0o020600);
        assert_eq!(console.rdev, (5, 1));
        let init = &entries[2];
        assert_eq!(init.mode, 0o100755);
        assert_eq!(init.data, b"#!/bin/sh\necho hi\n");
        let sh = &entries[3];
        assert_eq!(sh.mode, 0o120777);
        assert_eq!(sh.data, b"busybox");
        let trailer = entries.last().unwrap();
        assert_eq!((trailer.ino, trailer.mode, trailer.nlink), (0, 0, 1));
        assert!(trailer.data.is_empty());
        // Unique inode numbers.
        let mut inos: Vec<_> = entries[..5].iter().map(|e| e.ino).collect();
        inos.dedup();
        assert_eq!(inos.len(), 5);
        // The trailer is the last thing in the archive.
        let out = sample();
        let tail = format!("{TRAILER}\0");
        let pos = out
            .windows(tail.len())
            .rposition(|w| w == tail.as_bytes())
            .unwrap();
        assert_eq!((pos + tail.len()).next_multiple_of(4), out.len());
    }

    #[test]
    fn rejects_bad_names() {
        let mut w = CpioWriter::new(Vec::new());
        for bad in [
            "",
            "/init",
            "a//b",
            "../x",
            "a/../b",
            "TRAILER!!!",
            "a\0b",
            "dir/",
        ] {
            assert!(w.file(bad, 0o644, b"").is_err(), "{bad:?} accepted");
        }
        assert!(w.symlink("x", "").is_err());
        assert_eq!(w.written(), 0);
    }
}
