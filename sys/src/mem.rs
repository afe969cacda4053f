//! Memory: giving back the resident pages of our own image once a process only supervises.

/// `madvise(MADV_DONTNEED)` over the mappings of our own file that hold no private copy of
/// any page: once a process only supervises, the code and constants that parsed flags and set
/// up namespaces need not stay resident. (`MADV_PAGEOUT` would be gentler but the kernel
/// ignores it for files the caller cannot write, such as a root-owned /usr/bin/rootlesskit.)
/// The pages stay in the page cache and fault back in when used. Best effort.
///
/// # References
/// - [`madvise(2)`](https://man7.org/linux/man-pages/man2/madvise.2.html)
pub fn page_out_own_image() {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    for (start, end) in droppable_mappings(&smaps, &exe.to_string_lossy()) {
        // SAFETY: the range is a private, non-writable mapping of our own file in which no
        // page has a private (anonymous) copy, as smaps reported just now: every page equals
        // the file's bytes, so dropping them loses nothing and the next access reads the same
        // bytes back. Nothing can write it in between: it is not writable and we are the only
        // thread.
        let _ = unsafe {
            rustix::mm::madvise(
                start as *mut _,
                end - start,
                rustix::mm::Advice::LinuxDontNeed,
            )
        };
    }
}

/// The `start-end` ranges of /proc/self/smaps entries that map `path` privately and without
/// write access and have `Anonymous: 0 kB`. That excludes the part of a static-pie image that
/// was relocated at startup and then made read-only (its pages are private copies).
fn droppable_mappings(smaps: &str, path: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for l in smaps.lines() {
        let mut f = l.split_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            // A mapping header: "start-end perms offset dev inode path".
            let perms = f.next().unwrap_or("");
            let name = f.nth(3).unwrap_or("");
            let private_ro = perms.len() == 4 && !perms.contains('w') && perms.ends_with('p');
            current = (name == path && private_ro).then_some((a, b));
        } else if first == "Anonymous:"
            && let Some(range) = current.take()
            && f.next() == Some("0")
        {
            out.push(range);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn droppable_mappings_hold_no_private_copies() {
        let smaps = "55d0-55e0 r--p 00000000 fd:01 12 /usr/bin/rootlesskit\n\
                     Rss: 8 kB\nAnonymous: 0 kB\n\
                     55e0-5600 r-xp 00010000 fd:01 12 /usr/bin/rootlesskit\n\
                     Anonymous: 0 kB\n\
                     5600-5610 r--p 00030000 fd:01 12 /usr/bin/rootlesskit\n\
                     Anonymous: 16 kB\n\
                     5610-5620 rw-p 00040000 fd:01 12 /usr/bin/rootlesskit\n\
                     Anonymous: 0 kB\n\
                     7f00-7f10 r-xp 00000000 fd:01 13 /usr/bin/other\n\
                     Anonymous: 0 kB\n\
                     7ff0-7ff8 rw-p 00000000 00:00 0 [stack]\n\
                     Anonymous: 8 kB\n";
        assert_eq!(
            droppable_mappings(smaps, "/usr/bin/rootlesskit"),
            [(0x55d0, 0x55e0), (0x55e0, 0x5600)]
        );
    }
}
