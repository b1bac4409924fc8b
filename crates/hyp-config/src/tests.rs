extern crate std;

use super::*;
use alloc::vec;
use proptest::prelude::*;

fn linux(name: &str, base: u64) -> Guest {
    Guest {
        name: name.into(),
        vcpus: 2,
        memory_mb: 160,
        ram_host_base: base,
        kernel: Load {
            offset: 2 << 20,
            size: 20 << 20,
        },
        initramfs: Some(Load {
            offset: 64 << 20,
            size: 3 << 20,
        }),
        cmdline: "console=ttyS0 earlycon=sbi".into(),
        topology: Topology::Aia,
        devices: vec![Device::Uart],
        eoi: Eoi::Deferred,
        pci: vec![],
    }
}

fn two() -> Config {
    let mut second = linux("linux2", 0xa000_0000);
    second.devices = vec![Device::Vuart];
    Config {
        hyp: Options {
            migrate_ms: 20,
            ..Options::default()
        },
        guests: vec![linux("linux", 0x9000_0000), second],
    }
}

/// The error `f` makes of a valid configuration.
fn error_of(f: impl FnOnce(&mut Config)) -> Error {
    let mut c = two();
    f(&mut c);
    validate(&c).expect_err("the change must be refused")
}

#[test]
fn a_valid_configuration_passes() {
    validate(&two()).unwrap();
}

#[test]
fn each_error_names_its_field() {
    let cases: Vec<(Error, &str)> = vec![
        (error_of(|c| c.guests[1].vcpus = 9), "guest[1].vcpus"),
        (error_of(|c| c.guests[0].vcpus = 0), "guest[0].vcpus"),
        (
            error_of(|c| c.guests[0].memory_mb = 161),
            "guest[0].memory_mb",
        ),
        (
            error_of(|c| c.guests[0].memory_mb = 2),
            "guest[0].memory_mb",
        ),
        (
            error_of(|c| c.guests[1].ram_host_base = 0x9800_0000),
            "guest[1].ram_host_base",
        ),
        (
            error_of(|c| c.guests[1].ram_host_base = 0xa010_0000),
            "guest[1].ram_host_base",
        ),
        (
            error_of(|c| c.guests[1].devices = vec![Device::Uart]),
            "guest[1].devices",
        ),
        (
            error_of(|c| c.guests[0].devices = vec![Device::Uart, Device::Vuart]),
            "guest[0].devices",
        ),
        (
            error_of(|c| c.guests[0].devices = vec![Device::Vuart, Device::Vuart]),
            "guest[0].devices",
        ),
        (
            error_of(|c| {
                c.guests[0].pci = vec![PciAddr::parse("00:01.0").unwrap(); 2];
            }),
            "guest[0].pci",
        ),
        (
            error_of(|c| {
                c.guests[0].pci = vec![PciAddr::parse("00:01.0").unwrap()];
                c.guests[1].pci = vec![PciAddr::parse("00:01.0").unwrap()];
            }),
            "guest[1].pci",
        ),
        (
            error_of(|c| {
                c.guests[0].topology = Topology::Vplic;
                c.guests[0].pci = vec![PciAddr::parse("00:01.0").unwrap()];
            }),
            "guest[0].pci",
        ),
        (
            error_of(|c| c.guests[1].name = "linux".into()),
            "guest[1].name",
        ),
        (
            error_of(|c| c.guests[0].name = "a b".into()),
            "guest[0].name",
        ),
        (
            error_of(|c| c.guests[0].name = String::new()),
            "guest[0].name",
        ),
        (
            error_of(|c| c.guests[0].kernel.offset = 1 << 20),
            "guest[0].kernel",
        ),
        (
            error_of(|c| c.guests[0].kernel.size = 200 << 20),
            "guest[0].kernel",
        ),
        (error_of(|c| c.guests[0].kernel.size = 0), "guest[0].kernel"),
        (
            // Into the DTB's last 2 MiB.
            error_of(|c| {
                c.guests[0].initramfs = Some(Load {
                    offset: 157 << 20,
                    size: 2 << 20,
                })
            }),
            "guest[0].initramfs",
        ),
        (
            // Over the kernel.
            error_of(|c| {
                c.guests[0].initramfs = Some(Load {
                    offset: 10 << 20,
                    size: 1 << 20,
                })
            }),
            "guest[0].initramfs",
        ),
        (
            error_of(|c| {
                c.guests[0].initramfs = Some(Load {
                    offset: u64::MAX,
                    size: 2,
                })
            }),
            "guest[0].initramfs",
        ),
        (
            error_of(|c| c.guests[0].cmdline = "x".repeat(1025)),
            "guest[0].cmdline",
        ),
        (error_of(|c| c.hyp.migrate_ms = 60_001), "hyp.migrate_ms"),
        (error_of(|c| c.hyp.aia_flip_ms = 1 << 31), "hyp.aia_flip_ms"),
        (error_of(|c| c.guests.clear()), "guest"),
    ];
    for (e, field) in cases {
        assert_eq!(e.field, field, "{e}");
        assert!(std::format!("{e}").starts_with(field));
    }
}

/// One Debian arm64 guest as xtask places it: the `Image` at offset 0 (its
/// `text_offset`), the initramfs after its `image_size`.
fn arm64(name: &str, base: u64) -> Guest {
    Guest {
        kernel: Load {
            offset: 0,
            size: 38 << 20,
        },
        initramfs: Some(Load {
            offset: 42 << 20,
            size: 3 << 20,
        }),
        cmdline: "console=ttyAMA0 earlycon=pl011,0x9000000".into(),
        topology: Topology::Vgicv3,
        ..linux(name, base)
    }
}

#[test]
fn vgicv3_is_an_aarch64_topology_named_vgicv3() {
    assert_eq!(Topology::from_name("vgicv3"), Some(Topology::Vgicv3));
    assert_eq!(Topology::Vgicv3.name(), "vgicv3");
    assert_eq!(Topology::Vgicv3.arch(), Arch::Aarch64);
    for t in [Topology::Vplic, Topology::Aia] {
        assert_eq!(t.arch(), Arch::Riscv64);
    }
    assert_eq!(Topology::choices(), "vplic, aia, vgicv3, vgicv4");
    assert_eq!(Arch::from_name("aarch64"), Some(Arch::Aarch64));
    assert_eq!(Arch::from_name("arm64"), None);
    assert_eq!(Arch::default(), Arch::Riscv64);
}

#[test]
fn an_arm64_configuration_passes_and_round_trips() {
    let c = Config {
        hyp: Options::default(),
        guests: vec![arm64("linux", 0x4400_0000), {
            let mut g = arm64("linux2", 0x4e00_0000);
            g.devices.clear();
            g
        }],
    };
    validate(&c).unwrap();
    assert_eq!(decode(&encode(&c)).unwrap(), c);
}

/// An arm64 `Image` goes `text_offset` past a 2 MiB boundary (0x80000 before Linux
/// 5.8): any page multiple on aarch64; riscv64 kernels stay on 2 MiB boundaries.
#[test]
fn kernel_alignment_follows_the_architecture() {
    let mut g = arm64("linux", 0x4400_0000);
    g.kernel.offset = 0x8_0000;
    let one = |g: Guest| Config {
        hyp: Options::default(),
        guests: vec![g],
    };
    validate(&one(g.clone())).unwrap();
    g.kernel.offset = 0x8_0800;
    let e = validate(&one(g)).unwrap_err();
    assert_eq!(e.field, "guest[0].kernel", "{e}");
    assert!(e.message.contains("4 KiB aligned"), "{e}");
    let e = error_of(|c| c.guests[0].kernel.offset = 0x8_0000);
    assert!(e.message.contains("2 MiB aligned"), "{e}");
}

/// Each guest's topology implies an architecture; one machine has one.
#[test]
fn guests_of_two_architectures_are_refused() {
    let e = error_of(|c| c.guests[1] = arm64("linux2", 0xa000_0000));
    assert_eq!(e.field, "guest[1].topology", "{e}");
    assert!(
        e.message
            .starts_with("\"vgicv3\" is for aarch64, guest[0]'s \"aia\" for riscv64"),
        "{e}"
    );
    let mut c = Config {
        hyp: Options::default(),
        guests: vec![arm64("linux", 0x4400_0000), linux("linux2", 0x5000_0000)],
    };
    c.guests[1].devices.clear();
    assert_eq!(validate(&c).unwrap_err().field, "guest[1].topology");
}

#[test]
fn too_many_vcpus_in_total_is_refused_at_the_guest_that_crosses_the_limit() {
    let mut c = two();
    c.guests = (0..MAX_GUESTS)
        .map(|i| {
            let mut g = linux(
                &std::format!("g{i}"),
                0x1_0000_0000 + i as u64 * (256 << 20),
            );
            g.vcpus = MAX_VCPUS_PER_GUEST;
            g.devices.clear();
            g
        })
        .collect();
    validate(&c).unwrap();
    c.guests.push(c.guests[0].clone());
    assert_eq!(validate(&c).unwrap_err().field, "guest");
    c.guests.pop();
    c.guests[7].vcpus += 1;
    assert_eq!(validate(&c).unwrap_err().field, "guest[7].vcpus");
}

#[test]
fn the_blob_round_trips() {
    let c = two();
    assert_eq!(decode(&encode(&c)).unwrap(), c);
}

#[test]
fn a_damaged_blob_gets_a_named_error() {
    let blob = encode(&two());
    assert_eq!(decode(&blob[..20]).unwrap_err().field, "config blob");
    assert_eq!(
        decode(b"not a dtb at all, not at all").unwrap_err().field,
        "config blob"
    );
    // Change one string value in place: the error names the field.
    let mut bad = blob.clone();
    // guest@0's `topology = "aia"` is the first such value (property names live in
    // the strings block, after the structure).
    let at = bad.windows(4).position(|w| w == b"aia\0").unwrap();
    bad[at] = b'x';
    let e = decode(&bad).unwrap_err();
    assert_eq!(e.field, "guest[0].topology", "{e}");
    assert!(e.message.contains("vplic, aia"), "{e}");
}

#[test]
fn a_blob_of_another_kind_or_version_is_refused() {
    let mut w = vm_fdt::FdtWriter::new().unwrap();
    let r = w.begin_node("").unwrap();
    w.property_string("compatible", COMPATIBLE).unwrap();
    w.property_u32("version", VERSION + 1).unwrap();
    w.end_node(r).unwrap();
    let e = decode(&w.finish().unwrap()).unwrap_err();
    assert!(e.message.contains("version"), "{e}");
}

fn arb_guest(i: usize) -> impl Strategy<Value = Guest> {
    (
        "[a-z][a-z0-9_-]{0,12}",
        1u32..=8,
        (2u32..=128).prop_map(|m| m * 2),
        any::<bool>(),
        "[ -~]{0,80}",
        prop::sample::select(vec![
            Topology::Vplic,
            Topology::Aia,
            Topology::Vgicv3,
            Topology::Vgicv4,
        ]),
        prop::sample::select(vec![vec![], vec![Device::Uart], vec![Device::Vuart]]),
        prop::sample::select(vec![Eoi::Deferred, Eoi::Immediate]),
    )
        .prop_map(
            move |(name, vcpus, memory_mb, initrd, cmdline, topology, devices, eoi)| Guest {
                name: std::format!("{name}{i}"),
                vcpus,
                memory_mb,
                ram_host_base: 0x1_0000_0000 + i as u64 * (1 << 30),
                kernel: Load {
                    offset: 0,
                    size: 4096,
                },
                initramfs: initrd.then_some(Load {
                    offset: 1 << 20,
                    size: 4096,
                }),
                cmdline,
                topology,
                devices,
                eoi,
                pci: if topology == Topology::Aia {
                    vec![PciAddr {
                        bus: 0,
                        dev: 1 + i as u8,
                        func: 0,
                    }]
                } else {
                    vec![]
                },
            },
        )
}

proptest! {
    /// Whatever xtask encodes, hyp decodes to the same configuration.
    #[test]
    fn every_configuration_round_trips(
        guests in prop::collection::vec(0usize..1, 1..=4)
            .prop_flat_map(|v| (0..v.len()).map(arb_guest).collect::<Vec<_>>()),
        migrate_ms in 0u32..100, flip in 0u32..100, sbi in any::<bool>(), deferred in any::<bool>(),
        direct in any::<bool>(),
    ) {
        let c = Config {
            hyp: Options {
                migrate_ms,
                aia_flip_ms: flip,
                guest_idle: if sbi { GuestIdle::Sbi } else { GuestIdle::Wfi },
                vuart: if deferred { VuartMode::Deferred } else { VuartMode::Immediate },
                wfi: if direct { WfiMode::Direct } else { WfiMode::Trap },
            },
            guests,
        };
        prop_assert_eq!(decode(&encode(&c)).unwrap(), c);
    }

    /// Arbitrary bytes never panic the decoder (hyp runs it on input).
    #[test]
    fn decoding_garbage_does_not_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
    }

    /// Nor does a valid blob with bytes flipped.
    #[test]
    fn decoding_a_damaged_blob_does_not_panic(at in 0usize..2048, v in any::<u8>()) {
        let mut blob = encode(&two());
        let n = blob.len();
        blob[at % n] = v;
        if let Ok(c) = decode(&blob) {
            let _ = validate(&c);
        }
    }
}

#[test]
fn eoi_hw_needs_a_gicv3() {
    let mut c = two();
    c.guests[0].eoi = Eoi::Hw;
    let e = validate(&c).unwrap_err();
    assert_eq!(e.field, "guest[0].eoi");
    for g in &mut c.guests {
        g.topology = Topology::Vgicv3;
    }
    validate(&c).unwrap();
    assert_eq!(decode(&encode(&c)).unwrap(), c);
}

#[test]
fn pci_addresses_parse_as_bus_device_function() {
    let a = PciAddr::parse("00:01.0").unwrap();
    assert_eq!((a.bus, a.dev, a.func, a.rid()), (0, 1, 0, 8));
    let b = PciAddr::parse("1f:1f.7").unwrap();
    assert_eq!((b.rid(), b.to_string().as_str()), (0x1fff, "1f:1f.7"));
    for bad in [
        "", "00:01", "00.01.0", "00:20.0", "00:01.8", "100:01.0", "0:1.00", "g0:01.0",
    ] {
        assert_eq!(PciAddr::parse(bad), None, "{bad}");
    }
}

#[test]
fn vgicv4_is_an_aarch64_topology_named_vgicv4() {
    assert_eq!(Topology::from_name("vgicv4"), Some(Topology::Vgicv4));
    assert_eq!(Topology::Vgicv4.name(), "vgicv4");
    assert_eq!(Topology::Vgicv4.arch(), Arch::Aarch64);
    let mut c = two();
    for g in &mut c.guests {
        g.topology = Topology::Vgicv4;
        g.eoi = Eoi::Hw;
    }
    validate(&c).unwrap();
    assert_eq!(decode(&encode(&c)).unwrap(), c);
}

/// aarch64 guests may own PCIe functions (DMA through the SMMUv3's stage 2); a vPLIC
/// guest may not (no interrupt files, no translated MSIs), named at its `pci` field.
#[test]
fn pci_functions_go_to_aia_or_gic_guests_only() {
    let edu = PciAddr::parse("00:01.0").unwrap();
    for t in [Topology::Vgicv3, Topology::Vgicv4] {
        let mut g = arm64("linux", 0x4400_0000);
        g.topology = t;
        g.pci = vec![edu];
        let c = Config {
            hyp: Options::default(),
            guests: vec![g],
        };
        validate(&c).unwrap();
        assert_eq!(decode(&encode(&c)).unwrap(), c);
    }
    let e = error_of(|c| {
        c.guests[0].topology = Topology::Vplic;
        c.guests[0].pci = vec![edu];
    });
    assert_eq!(e.field, "guest[0].pci");
}
