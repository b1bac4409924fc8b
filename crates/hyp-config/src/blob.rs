//! A bounds-checked reader of the flattened device tree format (DTSpec 0.4, ch. 5),
//! enough for the config blob: the root node's properties and its children's.
//!
//! Not the `fdt` crate hyp uses for the firmware's DTB: the blob is input, and
//! `fdt` 0.1.5 indexes past the buffer when a property's length is damaged (found by
//! the `decoding_a_damaged_blob_does_not_panic` property test). Every read here is a
//! checked slice, and nesting and counts are bounded.
use alloc::vec::Vec;

const MAGIC: u32 = 0xd00d_feed;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;
/// The blob never nests deeper than root → `guest@N`.
const MAX_DEPTH: usize = 2;
/// Structure tokens read before giving up (a damaged blob could loop on NOPs).
const MAX_TOKENS: usize = 4096;

/// A node: its name, properties and (for the root) children.
#[derive(Debug, Default)]
pub(crate) struct Node<'a> {
    pub(crate) name: &'a str,
    props: Vec<(&'a str, &'a [u8])>,
    pub(crate) children: Vec<Node<'a>>,
}

impl<'a> Node<'a> {
    /// The value of property `name`.
    pub(crate) fn prop(&self, name: &str) -> Option<&'a [u8]> {
        self.props.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}

fn be32(b: &[u8], at: usize) -> Result<u32, &'static str> {
    let s = b
        .get(at..at.checked_add(4).ok_or("offset overflow")?)
        .ok_or("truncated")?;
    Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// A NUL-terminated string starting at `at` in `b`.
fn cstr(b: &[u8], at: usize) -> Result<&str, &'static str> {
    let rest = b.get(at..).ok_or("string outside the blob")?;
    let len = rest
        .iter()
        .position(|&c| c == 0)
        .ok_or("unterminated string")?;
    core::str::from_utf8(&rest[..len]).map_err(|_| "a name is not UTF-8")
}

fn align4(n: usize) -> Option<usize> {
    n.checked_add(3).map(|v| v & !3)
}

/// Parse `blob` into its root node.
pub(crate) fn parse(blob: &[u8]) -> Result<Node<'_>, &'static str> {
    if be32(blob, 0)? != MAGIC {
        return Err("not a flattened device tree (bad magic)");
    }
    let total = be32(blob, 4)? as usize;
    let blob = blob.get(..total).ok_or("shorter than its totalsize")?;
    let (off_struct, off_strings) = (be32(blob, 8)? as usize, be32(blob, 12)? as usize);
    let (size_strings, size_struct) = (be32(blob, 32)? as usize, be32(blob, 36)? as usize);
    let structure = blob
        .get(off_struct..off_struct.checked_add(size_struct).ok_or("bad size")?)
        .ok_or("structure block outside the blob")?;
    let strings = blob
        .get(off_strings..off_strings.checked_add(size_strings).ok_or("bad size")?)
        .ok_or("strings block outside the blob")?;

    // The open nodes, root first.
    let mut stack: Vec<Node<'_>> = Vec::new();
    let mut root = None;
    let mut at = 0;
    for _ in 0..MAX_TOKENS {
        let token = be32(structure, at)?;
        at += 4;
        match token {
            BEGIN_NODE => {
                if stack.len() > MAX_DEPTH || root.is_some() {
                    return Err("nodes nested too deep");
                }
                let name = cstr(structure, at)?;
                at = align4(at + name.len() + 1).ok_or("bad name")?;
                stack.push(Node {
                    name,
                    ..Node::default()
                });
            }
            PROP => {
                let len = be32(structure, at)? as usize;
                let name = cstr(strings, be32(structure, at + 4)? as usize)?;
                let start = at + 8;
                let value = structure
                    .get(start..start.checked_add(len).ok_or("bad length")?)
                    .ok_or("property value outside the structure block")?;
                at = align4(start + len).ok_or("bad length")?;
                stack
                    .last_mut()
                    .ok_or("property outside a node")?
                    .props
                    .push((name, value));
            }
            END_NODE => {
                let node = stack.pop().ok_or("unbalanced END_NODE")?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => root = Some(node),
                }
            }
            NOP => {}
            END => {
                return match (root, stack.is_empty()) {
                    (Some(r), true) => Ok(r),
                    _ => Err("END before the root node closed"),
                };
            }
            _ => return Err("unknown structure token"),
        }
    }
    Err("too many structure tokens")
}
