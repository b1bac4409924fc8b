//! `cargo xtask loom-mutants`: break each lockless protocol of virq-core in one known
//! way and check that a loom model fails. A model that still passes with the protocol
//! broken proves nothing.
//!
//! Each mutant is one textual replacement in one file of `crates/virq-core/src`, applied
//! to a copy of the crate under `target/loom-mutants/` (the work tree is never
//! touched). The copy is built as its own workspace and its loom models run with the
//! same flags as `cargo xtask test`; a mutant is *caught* when a model fails. A
//! replacement that no longer matches exactly once, or a mutant that does not
//! compile, is an error of this list, not a pass.
use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::root;

/// Arguments of `cargo xtask loom-mutants`.
#[derive(clap::Args)]
pub struct MutantArgs {
    /// Run only the mutants whose name contains this.
    pub filter: Option<String>,
    /// List the mutants and stop.
    #[arg(long)]
    pub list: bool,
}

/// One deliberate protocol break.
pub struct Mutant {
    /// Short name.
    pub name: &'static str,
    /// File under `crates/virq-core/src`.
    pub file: &'static str,
    /// Text replaced (must occur exactly once).
    pub find: &'static str,
    /// Replacement.
    pub replace: &'static str,
    /// What breaks.
    pub why: &'static str,
}

/// The checked list. Issue 12 §1 named the first five; the rest cover the block/kick
/// and doorbell protocols.
pub const MUTANTS: &[Mutant] = &[
    Mutant {
        name: "route-guard-drop-relaxed",
        file: "route.rs",
        find: "    fn drop(&mut self) {\n        self.desc.state.fetch_sub(ONE_DELIVERY, Ordering::Release);",
        replace: "    fn drop(&mut self) {\n        self.desc.state.fetch_sub(ONE_DELIVERY, Ordering::Relaxed);",
        why: "the delivery guard's Release half of the seed-001 barrier pair",
    },
    Mutant {
        name: "route-release-wait-relaxed",
        file: "route.rs",
        find: "while desc.state.load(Ordering::Acquire) >> COUNT_SHIFT != 0",
        replace: "while desc.state.load(Ordering::Relaxed) >> COUNT_SHIFT != 0",
        why: "release's Acquire half of the seed-001 barrier pair",
    },
    Mutant {
        name: "route-deliver-relaxed",
        file: "route.rs",
        find: "desc.state.fetch_add(ONE_DELIVERY, Ordering::Acquire)",
        replace: "desc.state.fetch_add(ONE_DELIVERY, Ordering::Relaxed)",
        why: "a delivery can carry a stale generation: its completion is refused",
    },
    Mutant {
        name: "route-publish-relaxed",
        file: "route.rs",
        find: ".fetch_or(Route::pack(guest, virq, trigger).0, Ordering::Release)",
        replace: ".fetch_or(Route::pack(guest, virq, trigger).0, Ordering::Relaxed)",
        why: "route no longer publishes the new generation",
    },
    Mutant {
        name: "pending-lower-relaxed",
        file: "pending.rs",
        find: "self.pending[w].fetch_and(!b, Ordering::Relaxed);\n        self.mask[w].fetch_or(b, Ordering::Release);",
        replace: "self.pending[w].fetch_and(!b, Ordering::Relaxed);\n        self.mask[w].fetch_or(b, Ordering::Relaxed);",
        why: "the consumer takes a lower's mask bit and reads the old level",
    },
    Mutant {
        name: "pending-raise-relaxed",
        file: "pending.rs",
        find: "let old_mask = self.mask[w].fetch_or(b, Ordering::Release);",
        replace: "let old_mask = self.mask[w].fetch_or(b, Ordering::Relaxed);",
        why: "the consumer takes a raise's mask bit and reads the old level",
    },
    Mutant {
        name: "pending-take-relaxed",
        file: "pending.rs",
        find: "let changed = self.mask[w].swap(0, Ordering::Acquire);",
        replace: "let changed = self.mask[w].swap(0, Ordering::Relaxed);",
        why: "the consumer's take does not acquire the producers' pending writes",
    },
    Mutant {
        name: "pending-mask-only-kick",
        file: "pending.rs",
        find: "Ok(old_pending & b == 0 || old_mask & b == 0)",
        replace: "Ok(old_mask & b == 0)",
        why: "seed 000's review finding: lower then raise misses the kick",
    },
    Mutant {
        name: "doorbell-fire-order",
        file: "doorbell.rs",
        find: "        self.pending_last.swap(true, Ordering::SeqCst);\n        if self.state.fetch_or(FIRED, Ordering::SeqCst) == BLOCKING {",
        replace: "        let old = self.state.fetch_or(FIRED, Ordering::SeqCst);\n        self.pending_last.swap(true, Ordering::SeqCst);\n        if old == BLOCKING {",
        why: "fire publishes pending_last after looking at the state",
    },
    Mutant {
        name: "doorbell-put-skips-pending-last",
        file: "doorbell.rs",
        find: "if !self.pending_last.fetch_or(false, Ordering::SeqCst) {",
        replace: "if true {",
        why: "put blocks without reading pending_last",
    },
    Mutant {
        name: "doorbell-ignores-unmask-readback",
        file: "doorbell.rs",
        find: "if hw.unmask() {",
        replace: "if { hw.unmask(); false } {",
        why: "QEMU's stale SGEIP: put trusts the hardware to re-signal",
    },
    Mutant {
        name: "doorbell-publish-before-unmask",
        file: "doorbell.rs",
        find: "        if hw.unmask() {\n",
        replace: "        self.state.swap(BLOCKING, Ordering::SeqCst);\n        if hw.unmask() {\n",
        why: "a fire that masks can run before the unmask: enabled behind a fired vCPU",
    },
    Mutant {
        name: "block-kick-relaxed",
        file: "block.rs",
        find: "self.state.fetch_or(KICKED, Ordering::SeqCst);",
        replace: "self.state.fetch_or(KICKED, Ordering::Relaxed);",
        why: "the kick no longer publishes the raise to the flush (ordering left to the IPI)",
    },
    Mutant {
        name: "block-runnable-ignores-kick",
        file: "block.rs",
        find: "s & BLOCKED == 0 || s & KICKED != 0",
        replace: "s & BLOCKED == 0",
        why: "a kick after the vCPU blocked does not make it runnable",
    },
    Mutant {
        name: "block-wfi-store",
        file: "block.rs",
        find: "if self.state.fetch_or(BLOCKED, Ordering::SeqCst) & KICKED != 0 {",
        replace: "let old = self.state.load(Ordering::SeqCst);\n        self.state.store(old | BLOCKED, Ordering::SeqCst);\n        if old & KICKED != 0 {",
        why: "WFI as load + store, not one RMW: a kick landing in between is erased",
    },
    Mutant {
        name: "block-home-before-kick",
        file: "block.rs",
        find: "        self.state.fetch_or(KICKED, Ordering::SeqCst);\n        self.home.load(Ordering::SeqCst)",
        replace: "        let home = self.home.load(Ordering::SeqCst);\n        self.state.fetch_or(KICKED, Ordering::SeqCst);\n        home",
        why: "the kick reads the home before marking: a migration strands it",
    },
    Mutant {
        name: "remote-announce-after-look",
        file: "remote.rs",
        find: "        clear_latch();\n        sleepers.announce(me);\n        !self.is_served(ticket)",
        replace: "        clear_latch();\n        let sleep = !self.is_served(ticket);\n        sleepers.announce(me);\n        sleep",
        why: "the requester looks, then announces: a serving in between notifies nobody",
    },
    Mutant {
        name: "remote-clear-latch-last",
        file: "remote.rs",
        find: "        clear_latch();\n        sleepers.announce(me);\n        !self.is_served(ticket)",
        replace: "        sleepers.announce(me);\n        let sleep = !self.is_served(ticket);\n        clear_latch();\n        sleep",
        why: "the requester clears its latch after announcing: it erases the notification",
    },
    Mutant {
        name: "remote-notify-before-served",
        file: "remote.rs",
        find: "        flush();\n        // An RMW, like every other access of `done` but the server's own look above.\n        self.done.fetch_max(req, Ordering::SeqCst);\n        let waiting = sleepers.waiting() & !(1 << (me % 64));",
        replace: "        let waiting = sleepers.waiting() & !(1 << (me % 64));\n        flush();\n        self.done.fetch_max(req, Ordering::SeqCst);",
        why: "the server reads the sleepers before it marks the ticket served (Dekker broken)",
    },
    Mutant {
        name: "msimove-save-before-fence",
        file: "msimove.rs",
        find: "    m.retarget();\n    m.fence();\n    m.move_state();\n",
        replace: "    m.retarget();\n    m.move_state();\n    m.fence();\n",
        why: "a file leaving hardware saved before the IOMMU fence: an MSI in flight lands in the scrubbed line",
    },
    Mutant {
        name: "msimove-mrif-take-not-atomic",
        file: "msimove.rs",
        find: "    w.swap(0, Ordering::AcqRel)\n",
        replace: "    let v = w.load(Ordering::Acquire);\n    w.store(0, Ordering::Release);\n    v\n",
        why: "an MRIF word emptied with a load and a store: the device's bit set between them is lost",
    },
];

const MODEL_TIMEOUT: Duration = Duration::from_secs(600);

/// `cargo xtask loom-mutants`.
pub fn run(args: &MutantArgs) -> Result<()> {
    let chosen: Vec<&Mutant> = MUTANTS
        .iter()
        .filter(|m| args.filter.as_deref().is_none_or(|f| m.name.contains(f)))
        .collect();
    if args.list {
        for m in &chosen {
            println!("{:34} {:12} {}", m.name, m.file, m.why);
        }
        return Ok(());
    }
    ensure!(!chosen.is_empty(), "no mutant matches {:?}", args.filter);
    let src = root().join("crates/virq-core");
    let work = prepare_copy(&src)?;
    let t = Instant::now();
    let (ok, out) = run_models(&work)?;
    ensure!(
        ok,
        "the unmutated copy fails its loom models: fix them first\n{out}"
    );
    eprintln!(
        "loom-mutants: baseline passes ({:.0} s)",
        t.elapsed().as_secs_f64()
    );
    let mut survived = Vec::new();
    for m in &chosen {
        let file = work.join("src").join(m.file);
        let orig = std::fs::read_to_string(src.join("src").join(m.file))?;
        let n = orig.matches(m.find).count();
        ensure!(
            n == 1,
            "mutant {}: its text occurs {n} times in {} (the list must be updated with the code)",
            m.name,
            m.file
        );
        std::fs::write(&file, orig.replacen(m.find, m.replace, 1))?;
        let t = Instant::now();
        let result = run_models(&work);
        std::fs::write(&file, &orig)?;
        let (passed, out) = result?;
        ensure!(
            passed || out.contains("test result: FAILED"),
            "mutant {} did not build or run:\n{}",
            m.name,
            tail(&out, 40)
        );
        let failed: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix("test ")?.strip_suffix(" ... FAILED"))
            .collect();
        println!(
            "{:34} {:8} {:4.0} s  {}",
            m.name,
            if passed { "SURVIVED" } else { "caught" },
            t.elapsed().as_secs_f64(),
            if passed {
                m.why.to_string()
            } else {
                format!("by {}", failed.join(", "))
            }
        );
        if passed {
            survived.push(m.name);
        }
    }
    let caught = chosen.len() - survived.len();
    println!(
        "loom-mutants: {caught} of {} mutations caught",
        chosen.len()
    );
    if !survived.is_empty() {
        bail!(
            "mutations survived the loom models: {}",
            survived.join(", ")
        );
    }
    Ok(())
}

/// Copy virq-core to `target/loom-mutants/virq-core` as a standalone workspace.
fn prepare_copy(src: &Path) -> Result<PathBuf> {
    let base = root().join("target/loom-mutants");
    let work = base.join("virq-core");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    for dir in ["src", "benches", "tests"] {
        if src.join(dir).exists() {
            copy_dir(&src.join(dir), &work.join(dir))?;
        }
    }
    let manifest = std::fs::read_to_string(src.join("Cargo.toml"))?;
    std::fs::write(work.join("Cargo.toml"), standalone_manifest(&manifest)?)?;
    std::fs::copy(root().join("Cargo.lock"), work.join("Cargo.lock"))?;
    Ok(work)
}

/// The crate's manifest without workspace inheritance, as its own workspace root.
fn standalone_manifest(manifest: &str) -> Result<String> {
    let workspace: toml::Table = std::fs::read_to_string(root().join("Cargo.toml"))?.parse()?;
    let pkg = workspace
        .get("workspace")
        .and_then(|w| w.get("package"))
        .and_then(|p| p.as_table())
        .context("the workspace has no [workspace.package]")?;
    let mut out = String::new();
    let mut skip_lints = false;
    for line in manifest.lines() {
        if line.starts_with('[') {
            skip_lints = line.trim() == "[lints]";
        }
        if skip_lints {
            continue;
        }
        if let Some((key, rest)) = line.split_once(".workspace") {
            if rest.trim() == "= true" {
                let v = pkg
                    .get(key.trim())
                    .with_context(|| format!("workspace.package.{} missing", key.trim()))?;
                out.push_str(&format!("{} = {v}\n", key.trim()));
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("\n[workspace]\n\n[lints.rust]\nunexpected_cfgs = { level = \"allow\" }\n");
    Ok(out)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), dest)?;
        }
    }
    Ok(())
}

/// Run the loom models of the copy; `(all passed, output)`.
fn run_models(work: &Path) -> Result<(bool, String)> {
    let log = work.join("models.log");
    let file = std::fs::File::create(&log)?;
    let mut child = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["test", "--release", "--lib", "--manifest-path"])
        .arg(work.join("Cargo.toml"))
        .args(["--", "loom"])
        .env("RUSTFLAGS", "--cfg loom")
        .env("LOOM_MAX_PREEMPTIONS", "3")
        .env("CARGO_TARGET_DIR", root().join("target/loom"))
        .stdout(file.try_clone()?)
        .stderr(file)
        .stdin(Stdio::null())
        .spawn()
        .context("starting cargo test for the mutant")?;
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if start.elapsed() > MODEL_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "loom models still running after {} s (see {})",
                MODEL_TIMEOUT.as_secs(),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Ok((status.success(), std::fs::read_to_string(&log)?))
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mutant_matches_its_file_exactly_once() {
        let src = root().join("crates/virq-core/src");
        for m in MUTANTS {
            let text = std::fs::read_to_string(src.join(m.file)).unwrap();
            assert_eq!(text.matches(m.find).count(), 1, "mutant {}", m.name);
            assert_ne!(m.find, m.replace, "mutant {} changes nothing", m.name);
        }
    }

    #[test]
    fn manifest_becomes_standalone() {
        let m = "[package]\nname = \"x\"\nedition.workspace = true\n\n[lints]\nworkspace = true\n\n[dependencies]\nspin = \"0.9\"\n";
        let out = standalone_manifest(m).unwrap();
        assert!(out.contains("edition = \"2021\""), "{out}");
        assert!(!out.contains("workspace = true"), "{out}");
        assert!(out.contains("[dependencies]\nspin"), "{out}");
        assert!(out.contains("\n[workspace]\n"), "{out}");
    }
}
