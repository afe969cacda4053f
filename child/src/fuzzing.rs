//! The child's fuzz-target bodies live beside their parsers (`dhcp::fuzz_reply`); this module
//! replays the committed corpus of each under `cargo test`, as `parent::fuzzing` does for the
//! parent's.

#[cfg(test)]
mod tests {
    /// Runs `f` on every input the fuzzers kept for `target` (and every crash they found, once
    /// fixed); returns how many there were.
    fn replay(target: &str, f: fn(&[u8])) -> usize {
        let dir = format!("{}/../fuzz/corpus/{target}", env!("CARGO_MANIFEST_DIR"));
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return 0;
        };
        let mut n = 0;
        for e in entries.flatten() {
            f(&std::fs::read(e.path()).unwrap());
            n += 1;
        }
        n
    }

    #[test]
    fn dhcp_reply_corpus_replays() {
        assert!(
            replay("dhcp_reply", crate::dhcp::fuzz_reply) > 0,
            "no dhcp_reply corpus"
        );
    }
}
