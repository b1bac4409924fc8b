use super::*;

/// The fake arm64 `Image`'s `image_size`: 6 MiB (its file is 64 KiB).
const FAKE_ARM64_IMAGE_SIZE: u64 = 6 << 20;

/// An arm64 `Image` header: `text_offset`, `image_size`, the magic; `len` bytes.
fn arm64_image(text_offset: u64, image_size: u64, len: usize) -> Vec<u8> {
    let mut image = vec![0u8; len];
    image[0x08..0x10].copy_from_slice(&text_offset.to_le_bytes());
    image[0x10..0x18].copy_from_slice(&image_size.to_le_bytes());
    image[0x38..0x3c].copy_from_slice(b"ARM\x64");
    image
}

/// Named images as small files in a temporary folder: a flat test guest, a file with a
/// RISC-V Linux `Image` header (`Image`) and one with an arm64 header
/// (`Image-arm64`, [`FAKE_ARM64_IMAGE_SIZE`]).
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
        let arm = arm64_image(0, FAKE_ARM64_IMAGE_SIZE, 64 << 10);
        std::fs::write(dir.join("Image-arm64"), arm).unwrap();
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
    fn debian_kernel(&self, arch: Arch) -> Result<PathBuf> {
        Ok(self.dir.join(match arch {
            Arch::Riscv64 => "Image",
            Arch::Aarch64 => "Image-arm64",
        }))
    }
    fn debian_initramfs(&self, _arch: Arch, _which: &str) -> Result<PathBuf> {
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
    assert!(n >= 9, "only {n} example configurations");
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
    assert!(n >= 29, "only {n} bad files");
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

/// `cargo xtask run --arch aarch64` boots Debian arm64 Linux on a vGICv3 with a shell.
#[test]
fn the_aarch64_default_is_linux_on_a_vgicv3() {
    let (file, _) = load(&crate::util::root().join(DEFAULT_CONFIG_AARCH64), &[]).unwrap();
    assert_eq!(file.machine.arch().unwrap(), Arch::Aarch64);
    assert_eq!(file.machine.harts, 2);
    let g = &file.guest[0];
    assert_eq!(
        (g.kernel.as_str(), g.vcpus, g.memory_mb),
        ("debian", 2, 160)
    );
    assert_eq!(g.initramfs.as_deref(), Some("debian-shell"));
    assert_eq!(g.topology, "vgicv3");
    assert_eq!(g.devices, ["uart"]);
    assert_eq!(g.cmdline, "console=ttyAMA0 earlycon=pl011,0x9000000");
}

/// The host layout of `configs/linux-arm64.toml` and the QEMU command line booting it.
#[test]
fn aarch64_guests_go_above_hyp_and_the_blob_after_them() {
    let images = FakeImages::new("arm64-layout");
    let (mut file, _) = load(&crate::util::root().join(DEFAULT_CONFIG_AARCH64), &[]).unwrap();
    use_test_init(&mut file);
    let r = resolve("linux-arm64", &file, images.dir(), &images).unwrap();
    assert_eq!(r.machine.arch, Arch::Aarch64);
    assert_eq!(r.machine.aia, None);
    let g = &r.config.guests[0];
    assert_eq!(g.topology, Topology::Vgicv3);
    assert_eq!(g.devices, [hyp_config::Device::Uart]);
    assert_eq!(g.ram_host_base, AARCH64_HYP_END);
    assert_eq!(AARCH64_HYP_END, 0x4400_0000);
    // The Image at its text_offset (0), the initramfs on the first 2 MiB boundary
    // after its image_size.
    assert_eq!(
        g.kernel,
        Load {
            offset: 0,
            size: 64 << 10
        }
    );
    assert_eq!(
        g.initramfs.unwrap(),
        Load {
            offset: FAKE_ARM64_IMAGE_SIZE,
            size: 5000
        }
    );
    assert_eq!(
        r.loads.iter().map(|(_, at)| *at).collect::<Vec<_>>(),
        [0x4400_0000, 0x4460_0000]
    );
    // The blob on the first 2 MiB boundary after the guest (160 MiB), -m covering it.
    assert_eq!(r.blob_addr, 0x4e00_0000);
    assert_eq!(r.machine.memory_mb, 512);
    let m = r.machine(Duration::from_secs(1), &[]).unwrap();
    let cmd = m.command_for(Path::new("hyp.elf"));
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let d = images.dir().display().to_string();
    let blob = crate::qemu::hyp_target_dir().join("configs/linux-arm64.dtb");
    assert_eq!(cmd.get_program(), "qemu-system-aarch64");
    assert_eq!(
        args,
        [
            "-M",
            "virt,virtualization=on,gic-version=3",
            "-cpu",
            "max",
            "-m",
            "512M",
            "-smp",
            "2",
            "-nographic",
            "-no-reboot",
            "-kernel",
            "hyp.elf",
            "-device",
            &format!("loader,file={d}/Image-arm64,addr=0x44000000,force-raw=on"),
            "-device",
            &format!("loader,file={d}/initramfs,addr=0x44600000,force-raw=on"),
            "-device",
            &format!(
                "loader,file={},addr=0x4e000000,force-raw=on",
                blob.display()
            ),
            "-append",
            "config=0x4e000000",
        ]
    );
}

/// A `topology = "vgicv4"` guest runs on `gic-version=4` (hyp needs the ITS's GICv4);
/// the same file with vgicv3 stays on `gic-version=3`.
#[test]
fn a_vgicv4_guest_gets_a_gicv4_machine() {
    let images = FakeImages::new("arm64-gicv4");
    let machine = |sets: &[String]| {
        let (mut file, _) = load(&crate::util::root().join(DEFAULT_CONFIG_AARCH64), sets).unwrap();
        use_test_init(&mut file);
        let r = resolve("linux-arm64", &file, images.dir(), &images).unwrap();
        let m = r.machine(Duration::from_secs(1), &[]).unwrap();
        let args: Vec<String> = m
            .command_for(Path::new("hyp.elf"))
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        (r.config.guests[0].topology, args[1].clone())
    };
    assert_eq!(
        machine(&["guest.0.topology=vgicv4".into()]),
        (
            Topology::Vgicv4,
            "virt,virtualization=on,gic-version=4".into()
        )
    );
    assert_eq!(
        machine(&[]),
        (
            Topology::Vgicv3,
            "virt,virtualization=on,gic-version=3".into()
        )
    );
}

/// riscv64's command line is what it was before aarch64 configurations.
#[test]
fn the_riscv64_command_line_is_unchanged() {
    let images = FakeImages::new("rv-cmd");
    let r = resolve_text(ONE, &[], &images).unwrap();
    assert_eq!(r.machine.arch, Arch::Riscv64);
    assert_eq!(r.blob_addr, CONFIG_BLOB_ADDR);
    let m = r.machine(Duration::from_secs(1), &[]).unwrap();
    let cmd = m.command_for(Path::new("hyp"));
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert_eq!(cmd.get_program(), "qemu-system-riscv64");
    assert_eq!(
        args[..10],
        [
            "-M",
            "virt",
            "-m",
            "512M",
            "-nographic",
            "-bios",
            "default",
            "-smp",
            "2",
            "-kernel"
        ]
    );
    assert_eq!(args.last().unwrap(), "config=0x88000000");
    assert!(args.contains(&format!(
        "loader,file={}/Image,addr=0x90200000,force-raw=on",
        images.dir().display()
    )));
}

/// Two arm64 guests one after the other, the blob after both; an arm64 `Image` with a
/// `text_offset` (Linux before 5.8) goes that far into RAM.
#[test]
fn aarch64_text_offset_and_two_guests() {
    let images = FakeImages::new("arm64-two");
    std::fs::write(
        images.dir().join("old-Image"),
        arm64_image(0x8_0000, 3 << 20, 8192),
    )
    .unwrap();
    let text = r#"
[machine]
arch = "aarch64"
[[guest]]
name = "a"
kernel = "old-Image"
initramfs = "initramfs"
memory_mb = 64
vcpus = 2
topology = "vgicv3"
devices = ["uart"]
[[guest]]
name = "b"
kernel = "debian"
memory_mb = 32
vcpus = 1
topology = "vgicv3"
"#;
    let r = resolve_text(text, &[], &images).unwrap();
    let (a, b) = (&r.config.guests[0], &r.config.guests[1]);
    assert_eq!(a.kernel.offset, 0x8_0000);
    // 0x80000 + 3 MiB, up to the next 2 MiB boundary.
    assert_eq!(a.initramfs.unwrap().offset, 4 << 20);
    assert_eq!(b.ram_host_base, 0x4400_0000 + (64 << 20));
    assert_eq!(r.blob_addr, 0x4400_0000 + (96 << 20));
    assert!(r
        .loads
        .contains(&(images.dir().join("old-Image"), 0x4408_0000)));
    // An explicit -m must cover the blob's 2 MiB too.
    let e = resolve_text(text, &["machine.memory_mb=161"], &images).unwrap_err();
    assert!(
        format!("{e:#}").starts_with("machine.memory_mb: 161 MiB; the guests need 162"),
        "{e:#}"
    );
    resolve_text(text, &["machine.memory_mb=162"], &images).unwrap();
}

#[test]
fn arm64_image_header_is_read_or_refused() {
    let h = Arm64Image::parse(&arm64_image(0x8_0000, 0x123_4000, 4096)).unwrap();
    assert_eq!((h.text_offset, h.image_size), (0x8_0000, 0x123_4000));
    let mut riscv = vec![0u8; 4096];
    riscv[0x38..0x3c].copy_from_slice(b"RSC\x05");
    let e = Arm64Image::parse(&riscv).unwrap_err();
    assert!(
        format!("{e:#}").contains("not a Linux arm64 Image"),
        "{e:#}"
    );
    assert!(Arm64Image::parse(b"short").is_err());
    let e = Arm64Image::parse(&arm64_image(0, 0, 4096)).unwrap_err();
    assert!(format!("{e:#}").contains("image_size 0"), "{e:#}");
    // Through a configuration, the error names the field.
    let images = FakeImages::new("arm64-bad");
    let text = "[machine]\narch = \"aarch64\"\n[[guest]]\nname = \"a\"\nkernel = \"Image\"\nmemory_mb = 32\nvcpus = 1\ntopology = \"vgicv3\"\n";
    let e = resolve_text(text, &[], &images).unwrap_err();
    assert!(format!("{e:#}").starts_with("guest[0].kernel: "), "{e:#}");
}

/// aarch64 passthrough: `machine.iommu = "smmuv3"` and edu put the SMMUv3, `-nic none`
/// (QEMU's default NIC would take 00:01.0) and edu with a full DMA mask on the command
/// line, and the guest's `pci` names 00:01.0 on a vGICv3.
#[test]
fn aarch64_smmuv3_and_edu_reach_qemu_and_the_guest() {
    let images = FakeImages::new("smmu");
    let text = r#"
[machine]
arch = "aarch64"
iommu = "smmuv3"
pci = ["edu"]
[[guest]]
name = "a"
kernel = "debian"
memory_mb = 64
vcpus = 1
topology = "vgicv3"
pci = ["00:01.0"]
"#;
    let r = resolve_text(text, &[], &images).unwrap();
    assert_eq!(
        r.machine.pcie.qemu_args(""),
        [
            "-M",
            "iommu=smmuv3",
            "-nic",
            "none",
            "-device",
            "edu,dma_mask=0xffffffffffffffff,addr=0x1.0"
        ]
    );
    assert_eq!(
        r.config.guests[0].pci,
        [hyp_config::PciAddr::parse("00:01.0").unwrap()]
    );
}
