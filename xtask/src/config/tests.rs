use super::*;

/// Named images as small files in a temporary folder: a flat test guest and a file
/// with a RISC-V Linux `Image` header.
pub(crate) struct FakeImages {
    dir: PathBuf,
}

impl FakeImages {
    pub(crate) fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("virq-config-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("testguest.bin"), [0x13u8; 4096]).unwrap();
        let mut image = vec![0u8; 64 << 10];
        image[0x38..0x3c].copy_from_slice(b"RSC\x05");
        std::fs::write(dir.join("Image"), image).unwrap();
        std::fs::write(dir.join("initramfs"), [0u8; 5000]).unwrap();
        std::fs::write(dir.join("big.bin"), vec![0u8; 3 << 20]).unwrap();
        FakeImages { dir }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Images for FakeImages {
    fn testguest(&self) -> Result<PathBuf> {
        Ok(self.dir.join("testguest.bin"))
    }
    fn debian_kernel(&self) -> Result<PathBuf> {
        Ok(self.dir.join("Image"))
    }
    fn debian_initramfs(&self, _which: &str) -> Result<PathBuf> {
        Ok(self.dir.join("initramfs"))
    }
    fn bench(&self) -> Result<PathBuf> {
        Ok(self.dir.join("Image"))
    }
}

fn resolve_text(text: &str, sets: &[&str], images: &FakeImages) -> Result<Resolved> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let file = parse(text, &sets)?;
    resolve("t", &file, images.dir(), images)
}

/// Every example in `configs/` is valid and boots what it says.
#[test]
fn every_example_configuration_resolves() {
    let images = FakeImages::new("examples");
    let dir = crate::util::root().join("configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let (file, _) = load(&path, &[]).unwrap();
        let r = resolve("example", &file, images.dir(), &images)
            .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        assert!(!r.config.guests.is_empty());
        // The blob hyp gets decodes to the same configuration.
        let blob = hyp_config::encode(&r.config);
        assert_eq!(hyp_config::decode(&blob).unwrap(), r.config);
        n += 1;
    }
    assert!(n >= 6, "only {n} example configurations");
}

/// The default of `cargo xtask run` is the AIA Linux with a shell.
#[test]
fn the_default_configuration_is_linux_on_the_aia() {
    let images = FakeImages::new("default");
    let (file, _) = load(&crate::util::root().join(DEFAULT_CONFIG), &[]).unwrap();
    let r = resolve("d", &file, images.dir(), &images).unwrap();
    assert_eq!(r.machine.aia, Some(DEFAULT_GUEST_FILES));
    assert_eq!(r.config.guests[0].topology, hyp_config::Topology::Aia);
    assert_eq!(file.guest[0].initramfs.as_deref(), Some("debian-shell"));
}

/// Each file of `src/config/bad/` is refused with the message its first line expects
/// (`# expect: …`), which names the field.
#[test]
fn bad_configurations_are_refused_naming_the_field() {
    let images = FakeImages::new("bad");
    let dir = crate::util::root().join("xtask/src/config/bad");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let want = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: no `# expect:` line", path.display()));
        let err = match resolve_text(&text, &[], &images) {
            Ok(_) => panic!("{} was accepted", path.display()),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            err.contains(want),
            "{}: error {err:?} lacks {want:?}",
            path.display()
        );
        n += 1;
    }
    assert!(n >= 15, "only {n} bad files");
}

const ONE: &str = r#"
[machine]
interrupts = "plic"
[[guest]]
name = "linux"
kernel = "debian"
initramfs = "debian-test"
cmdline = "console=ttyS0"
memory_mb = 160
vcpus = 2
topology = "vplic"
devices = ["uart"]
"#;

#[test]
fn overrides_change_fields_and_name_bad_paths() {
    let images = FakeImages::new("sets");
    let r = resolve_text(
        ONE,
        &[
            "guest.0.vcpus=4",
            "machine.harts=1",
            "hyp.migrate_ms=20",
            "guest.0.cmdline=\"a b\"",
            "guest.0.eoi=immediate",
        ],
        &images,
    )
    .unwrap();
    let g = &r.config.guests[0];
    assert_eq!((g.vcpus, r.machine.harts), (4, 1));
    assert_eq!(r.config.hyp.migrate_ms, 20);
    assert_eq!(g.cmdline, "a b");
    assert_eq!(g.eoi, hyp_config::Eoi::Immediate);
    for (bad, why) in [
        ("guest.1.vcpus=4", "index 1, there are 1"),
        ("guest.x.vcpus=4", "is not an index"),
        ("novalue", "expected key.path=value"),
        ("guest.0.vcpus.n=1", "inside a value"),
    ] {
        let e = resolve_text(ONE, &[bad], &images).unwrap_err();
        assert!(format!("{e:#}").contains(why), "{bad}: {e:#}");
    }
    // An override to an unknown key is refused like the key in the file.
    let e = resolve_text(ONE, &["guest.0.vcpu=4"], &images).unwrap_err();
    assert!(format!("{e:#}").contains("unknown field `vcpu`"), "{e:#}");
}

#[test]
fn guests_are_placed_one_after_the_other() {
    let images = FakeImages::new("layout");
    let two = format!(
        "{ONE}\n[[guest]]\nname = \"b\"\nkernel = \"testguest\"\nmemory_mb = 32\nvcpus = 1\ntopology = \"vplic\"\n"
    );
    let r = resolve_text(&two, &[], &images).unwrap();
    let (a, b) = (&r.config.guests[0], &r.config.guests[1]);
    assert_eq!(a.ram_host_base, FIRST_GUEST_RAM);
    assert_eq!(b.ram_host_base, FIRST_GUEST_RAM + (160 << 20));
    // A Linux `Image` goes 2 MiB in; a flat image at RAM's first byte.
    assert_eq!(a.kernel.offset, 2 << 20);
    assert_eq!(b.kernel.offset, 0);
    // The initramfs sits 2 MiB aligned below the DTB's last 2 MiB.
    let r0 = a.initramfs.unwrap();
    assert_eq!(r0.offset % (2 << 20), 0);
    assert!(r0.offset + r0.size <= a.ram_size() - (2 << 20));
    // QEMU's loader gets each file at its place, and the machine has room for both.
    assert!(r
        .loads
        .iter()
        .any(|(p, at)| p.ends_with("testguest.bin") && *at == b.ram_host_base));
    assert_eq!(r.machine.memory_mb, 512);
    let m = r.machine(Duration::from_secs(1), &[]).unwrap();
    assert_eq!(m.bootargs, [format!("config={CONFIG_BLOB_ADDR:#x}")]);
}
