//! No import circles between hyp's modules (docs/hyp.md, "Layers"): the graph whose
//! nodes are the files of `hyp/hv/src` and whose edges are their `crate::…` and
//! `super::…` paths (resolved to the longest module they name) must have no strongly
//! connected component of more than one file. Part of `cargo xtask test`.
use anyhow::{ensure, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`["topology", "aia"]`) of each `.rs` file under `src`.
fn modules(src: &Path) -> Result<BTreeMap<Vec<String>, String>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(src)?.with_extension("");
                let mut m: Vec<String> = rel
                    .iter()
                    .map(|c| c.to_string_lossy().into_owned())
                    .collect();
                if matches!(m.last().map(String::as_str), Some("mod" | "main" | "lib")) {
                    m.pop();
                }
                out.insert(m, std::fs::read_to_string(&p)?);
            }
        }
    }
    Ok(out)
}

/// The module paths a file's text refers to with `crate::` or `super::`, from module
/// `me`, resolved against the known modules (longest prefix).
fn references(me: &[String], text: &str, known: &BTreeSet<Vec<String>>) -> BTreeSet<Vec<String>> {
    let mut out = BTreeSet::new();
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let bytes = code.as_bytes();
    for (start, prefix) in [("crate::", None), ("super::", Some(()))] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start) {
            let at = from + i;
            from = at + start.len();
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
                continue;
            }
            let mut path: Vec<String> = match prefix {
                None => Vec::new(),
                // `super::` from a file module is its parent (mod.rs files are their
                // folder's module, so their `super` is the folder's parent).
                Some(()) => me[..me.len().saturating_sub(1)].to_vec(),
            };
            let rest = &code[from..];
            let mut seg_start = 0;
            let rb = rest.as_bytes();
            loop {
                let mut end = seg_start;
                while end < rb.len() && (rb[end].is_ascii_alphanumeric() || rb[end] == b'_') {
                    end += 1;
                }
                if end == seg_start {
                    break;
                }
                let seg = &rest[seg_start..end];
                if seg == "super" {
                    path.pop();
                } else {
                    path.push(seg.to_string());
                }
                if rest[end..].starts_with("::") {
                    seg_start = end + 2;
                } else {
                    break;
                }
            }
            while !path.is_empty() && !known.contains(&path) {
                path.pop();
            }
            if !path.is_empty() && path != me {
                out.insert(path);
            }
        }
    }
    out
}

/// The strongly connected components of more than one node (Tarjan).
fn circles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<Vec<String>>> {
    struct T<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on: BTreeSet<&'a Vec<String>>,
        next: usize,
        out: Vec<Vec<Vec<String>>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a Vec<String>) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        if let Some(ws) = t.edges.get(v) {
            for w in ws {
                let Some((w, _)) = t.edges.get_key_value(w) else {
                    continue;
                };
                if !t.index.contains_key(w) {
                    visit(t, w);
                    let l = t.low[w].min(t.low[v]);
                    t.low.insert(v, l);
                } else if t.on.contains(w) {
                    let l = t.index[w].min(t.low[v]);
                    t.low.insert(v, l);
                }
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

/// Check `src` (hyp's `hv/src`); returns the module count.
pub fn check(src: &Path) -> Result<usize> {
    let mods = modules(src)?;
    let known: BTreeSet<Vec<String>> = mods.keys().cloned().collect();
    let edges = mods
        .iter()
        .map(|(m, text)| (m.clone(), references(m, text, &known)))
        .collect();
    let found = circles(&edges);
    ensure!(
        found.is_empty(),
        "import circles between hyp's modules (docs/hyp.md, \"Layers\"): {}",
        found
            .iter()
            .map(|c| c
                .iter()
                .map(|m| m.join("::"))
                .collect::<Vec<_>>()
                .join(" <-> "))
            .collect::<Vec<_>>()
            .join("; ")
    );
    Ok(mods.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(files: &[(&str, &str)]) -> Result<usize> {
        let dir = std::env::temp_dir().join(format!("virq-layers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (name, text) in files {
            let p = dir.join(name);
            std::fs::create_dir_all(p.parent().unwrap())?;
            std::fs::write(p, text)?;
        }
        let r = check(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    #[test]
    fn layers_pass_and_a_circle_fails() {
        let ok = [
            ("main.rs", "mod a; mod b; use crate::b::x;"),
            ("a.rs", "pub fn f() {}"),
            ("b/mod.rs", "mod c; use crate::a::f; // crate::main_thing"),
            ("b/c.rs", "use super::*; use crate::a::f;"),
        ];
        assert_eq!(graph(&ok).unwrap(), 4);
        let bad = [
            ("main.rs", "mod a; mod b;"),
            ("a.rs", "use crate::b::c::h;"),
            ("b/mod.rs", "mod c;"),
            ("b/c.rs", "fn h() { super::super::a::f() }"),
        ];
        let e = graph(&bad).unwrap_err().to_string();
        assert!(e.contains("a <-> b::c"), "{e}");
    }

    #[test]
    fn hyp_has_no_import_circles() {
        let n = check(&crate::util::root().join("hyp/hv/src")).unwrap();
        assert!(n > 50, "{n} modules");
    }
}
