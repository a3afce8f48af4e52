//! Members of the `--layout tar` archives: SS-MIX2 storage and FHIR Bundles written as
//! POSIX ustar members instead of one file and up to eight folders each.
//!
//! Why: a million persons make about ten million SS-MIX2 files and eight million folders,
//! more inodes than this machine's 252 GB file system has, and creating them is most of the
//! run's CPU (ext4's inode allocator). A tar keeps the spec's folder tree and file names as
//! member paths, so `tar -xf` gives exactly the tree `--layout tree` writes.
//!
//! Workers build each person's members (header, bytes, padding) in parallel; the run loop
//! only appends them in person order. Headers come from the `tar` crate; nothing in them
//! depends on the machine or the clock (mode 0644, owner 0, mtime = the `--as-of` day), so
//! the archive is as deterministic as the tree.

use std::io;

/// A ustar block.
const BLOCK: usize = 512;

/// Appends one regular-file member `path` holding `bytes` to `out`.
pub fn append_member(out: &mut Vec<u8>, path: &str, bytes: &[u8], mtime: u64) -> io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path)?;
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(bytes.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(bytes);
    let pad = (BLOCK - bytes.len() % BLOCK) % BLOCK;
    out.resize(out.len() + pad, 0);
    Ok(())
}

/// The end-of-archive marker: two zero blocks.
pub const END: [u8; 2 * BLOCK] = [0; 2 * BLOCK];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_block_aligned_and_read_back() {
        let mut out = Vec::new();
        let long = format!(
            "ssmix2/1312345678/standard_storage/123/456/{}/x",
            "9".repeat(90)
        );
        append_member(&mut out, "a/b.txt", b"hello", 1_743_379_200).expect("short");
        append_member(&mut out, &long, &[7u8; 1024], 1_743_379_200).expect("long");
        out.extend_from_slice(&END);
        assert_eq!(out.len() % BLOCK, 0);
        let mut ar = tar::Archive::new(out.as_slice());
        let got: Vec<(String, u64)> = ar
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                (
                    e.path().expect("path").to_string_lossy().into_owned(),
                    e.header().size().expect("size"),
                )
            })
            .collect();
        assert_eq!(got, vec![("a/b.txt".into(), 5), (long, 1024)]);
    }

    #[test]
    fn a_path_ustar_cannot_hold_is_an_error_not_a_truncation() {
        let mut out = Vec::new();
        assert!(append_member(&mut out, &"x".repeat(300), b"", 0).is_err());
    }
}
