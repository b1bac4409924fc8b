//! One MSI-sink conformance suite, run against every [`MsiSink`] implementation: a
//! software-backed [`VcpuImsic`], a hardware-backed one (over a recording fake of the
//! hardware guest files), and the per-hart router over a slice of them.

use virq_core::hgei::HgeiAllocator;

use super::{FakeHwFiles, VseipLog};
use crate::hext::fake::FakeCsrs;
use crate::imsic::ImsicFileState;
use crate::msi::{Backing, Msi, MsiSink, VcpuImsic};

/// The contract every interrupt-file sink meets (AIA 3.6 `seteipnum` semantics plus
/// guest isolation). `me` is the hart index the sink answers to; `observe` reads the
/// file state back.
fn msi_sink_conformance<S: MsiSink + ?Sized>(
    sink: &mut S,
    me: u32,
    observe: impl Fn(&S) -> ImsicFileState,
) {
    let empty = observe(sink);
    assert_eq!(empty, ImsicFileState::default(), "starts empty");

    // An MSI sets exactly its identity's pending bit.
    assert!(sink.send_msi(Msi {
        hart: me,
        guest: 0,
        eiid: 5
    }));
    let s = observe(sink);
    assert_eq!(s.eip[0], 1 << 5);
    assert!(s.eip[1..].iter().all(|&w| w == 0) && s.eie == [0; 32]);

    // Repeated MSIs coalesce.
    assert!(sink.send_msi(Msi {
        hart: me,
        guest: 0,
        eiid: 5
    }));
    assert_eq!(observe(sink), s);

    // The highest implemented identity (255) works; 0 and 256.. are ignored.
    assert!(sink.send_msi(Msi {
        hart: me,
        guest: 0,
        eiid: 255
    }));
    let s = observe(sink);
    assert_eq!(s.eip[3], 1 << 63);
    for eiid in [0, 256, 2047, 0x7ff, u32::MAX] {
        sink.send_msi(Msi {
            hart: me,
            guest: 0,
            eiid,
        });
        assert_eq!(observe(sink), s, "eiid {eiid} ignored");
    }

    // Another hart's or a guest file's address reaches nothing here.
    assert!(!sink.send_msi(Msi {
        hart: me + 1,
        guest: 0,
        eiid: 7
    }));
    assert!(!sink.send_msi(Msi {
        hart: me,
        guest: 1,
        eiid: 7
    }));
    assert!(!sink.send_msi(Msi {
        hart: u32::MAX,
        guest: 0,
        eiid: 7
    }));
    assert_eq!(observe(sink), s, "misaddressed MSIs change nothing");

    // Delivery does not touch enables, threshold or eidelivery.
    assert_eq!((s.eidelivery, s.eithreshold, s.eie), (0, 0, [0; 32]));
}

#[test]
fn conformance_software_vimsic() {
    let (hw, log) = (FakeHwFiles::default(), VseipLog::default());
    let mut f = VcpuImsic::new(0, 0, 255, &hw, &log).unwrap();
    msi_sink_conformance(&mut f, 0, |f| f.save_state());
    assert_eq!(f.backing(), Backing::Software);
    assert!(
        hw.log.borrow().is_empty(),
        "software file never touches hardware"
    );
}

#[test]
fn conformance_hardware_guest_file() {
    let (hw, log) = (FakeHwFiles::default(), VseipLog::default());
    let alloc = HgeiAllocator::<2>::new();
    alloc.online(1, 0b110).unwrap();
    let csrs = FakeCsrs::new(0b110);
    let mut f = VcpuImsic::new(3, 9, 255, &hw, &log).unwrap();
    assert_eq!(
        f.load(1, &alloc, &csrs),
        Backing::Hardware { hart: 1, line: 1 }
    );
    msi_sink_conformance(&mut f, 3, |f| f.save_state());
    assert!(
        hw.log.borrow().contains(&"msi"),
        "MSIs went to the hardware file"
    );
    assert_eq!(
        log.changes(),
        0,
        "hardware files signal through hgeip, not the sink"
    );
}

#[test]
fn conformance_router_over_vcpu_files() {
    let (hw, log) = (FakeHwFiles::default(), VseipLog::default());
    let mut files: Vec<_> = (0..3)
        .map(|h| VcpuImsic::new(h, h, 255, &hw, &log).unwrap())
        .collect();
    msi_sink_conformance(files.as_mut_slice(), 2, |fs| fs[2].save_state());
    assert_eq!(files[0].save_state(), ImsicFileState::default());
}
