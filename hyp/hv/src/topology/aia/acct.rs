//! The `ACCT` lines of an AIA guest.
use super::*;

/// The `ACCT` lines of the AIA guests.
pub(crate) fn print_acct(g: &dyn GuestView, aia: &GuestAia) {
    let harts = crate::hart::harts();
    {
        let c = &aia.counts;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (mut hw, mut sw) = (0, 0);
        for (i, av) in aia.vcpus.iter().enumerate() {
            let b = av.file.lock().backing();
            match b {
                Backing::Hardware { hart, line } => {
                    hw += 1;
                    crate::println!(
                        "ACCT vcpu={} guest={} id={} imsic=hw hart={} line={}",
                        g.vcpu_slice()[i].index,
                        g.name(),
                        i,
                        harts[hart].hartid,
                        line
                    );
                }
                Backing::Software => {
                    sw += 1;
                    crate::println!(
                        "ACCT vcpu={} guest={} id={} imsic=sw",
                        g.vcpu_slice()[i].index,
                        g.name(),
                        i
                    );
                }
            }
        }
        crate::println!(
            "ACCT guest={} aia files_hw={} files_sw={} to_hw={} to_sw={} imsic_page_traps={} msis_to_sw_files={} msis_to_hw_files_by_hyp={} csr_traps={} iprio_traps={} sgei={} sgei_kicks={} aplic_reads={} aplic_writes={} aplic_forwards={} mrif_msis={}",
            g.name(),
            hw,
            sw,
            n(&c.to_hw),
            n(&c.to_sw),
            n(&c.page_msis),
            n(&c.sw_msis),
            n(&c.hw_msis_by_hyp),
            n(&c.csr_traps),
            n(&c.iprio_traps),
            n(&c.sgei),
            n(&c.sgei_kicks),
            n(&c.aplic_reads),
            n(&c.aplic_writes),
            n(&c.aplic_forwards),
            n(&c.mrif_msis),
        );
        let st = aia.aplic.lock();
        let e = st.dev.errors();
        crate::println!(
            "ACCT guest={} vaplic_ignored bad_width={} misaligned={} unmapped={} read_only={} ignored_value={}",
            g.name(), e.bad_width, e.misaligned, e.unmapped, e.read_only, e.ignored_value
        );
        for ps in st.phys.iter() {
            let phys = host()
                .and_then(|h| h.aplic)
                .map_or(0, |a| a.target(ps.pirq.0));
            crate::println!(
                "ACCT guest={} aia pirq={} virq={} retriggers={} hyp_claims={} phys_target={:#x} enabled={}",
                g.name(),
                ps.pirq,
                ps.virq,
                ps.retriggers,
                ps.claims,
                phys,
                ps.enabled
            );
        }
    }
    if let Some(h) = host() {
        let r = h.remote_ops.load(Ordering::Relaxed);
        if r != 0 {
            crate::println!("ACCT aia remote_file_ops={r}");
        }
    }
}
