//! A minimal ELF64 reader that answers one question for `dist`: is this executable statically linked (no `PT_INTERP`, no `DT_NEEDED`)?
//!
//! We parse the headers ourselves instead of running `ldd` or `file`: `ldd` executes the
//! dynamic loader, and neither tool is guaranteed to be installed on a CI machine.
//! Every read is bounds-checked, so a truncated or hostile file gives an error, never a panic.

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_STRSZ: u64 = 10;
/// `e_phnum` value meaning "the real count is in section header 0's `sh_info`".
const PN_XNUM: u16 = 0xffff;
const EHDR_SIZE: u64 = 64;
const PHDR_SIZE: u64 = 56;
const DYN_SIZE: u64 = 16;

/// What the program headers say about linking.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Linkage {
    /// The requested program interpreter (`PT_INTERP`), e.g. `/lib64/ld-linux-x86-64.so.2`.
    pub interp: Option<String>,
    /// Shared libraries named by `DT_NEEDED` entries, in file order.
    pub needed: Vec<String>,
    /// Whether there is a `PT_DYNAMIC` segment (static-pie binaries keep one for self-relocation).
    pub has_dynamic: bool,
}

struct Segment {
    p_type: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

/// Bounds-checked reads in the file's byte order.
struct Reader<'a> {
    data: &'a [u8],
    little: bool,
}

impl Reader<'_> {
    fn bytes(&self, off: u64, len: u64, what: &str) -> Result<&[u8], String> {
        let end = off.checked_add(len);
        match end {
            Some(end) if end <= self.data.len() as u64 => {
                Ok(&self.data[off as usize..end as usize])
            }
            _ => Err(format!(
                "truncated ELF file: {what} at offset {off:#x} (+{len}) is past the end ({} bytes)",
                self.data.len()
            )),
        }
    }

    fn uint<const N: usize>(&self, off: u64, what: &str) -> Result<u64, String> {
        let b = self.bytes(off, N as u64, what)?;
        let mut v = 0u64;
        for i in 0..N {
            let byte = if self.little { b[N - 1 - i] } else { b[i] };
            v = (v << 8) | u64::from(byte);
        }
        Ok(v)
    }

    fn u16(&self, off: u64, what: &str) -> Result<u16, String> {
        self.uint::<2>(off, what).map(|v| v as u16)
    }

    fn u32(&self, off: u64, what: &str) -> Result<u32, String> {
        self.uint::<4>(off, what).map(|v| v as u32)
    }

    fn u64(&self, off: u64, what: &str) -> Result<u64, String> {
        self.uint::<8>(off, what)
    }
}

/// Reads the ELF header, the program headers and the dynamic section of a 64-bit ELF file
/// (either byte order).
pub(crate) fn parse(data: &[u8]) -> Result<Linkage, String> {
    if data.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err("not an ELF file (bad magic)".into());
    }
    match data.get(4) {
        Some(2) => {}
        Some(1) => return Err("32-bit ELF files are not supported".into()),
        _ => return Err("invalid ELF class".into()),
    }
    let little = match data.get(5) {
        Some(1) => true,
        Some(2) => false,
        _ => return Err("invalid ELF byte order".into()),
    };
    let r = Reader { data, little };
    r.bytes(0, EHDR_SIZE, "ELF header")?;
    let phoff = r.u64(0x20, "e_phoff")?;
    let phentsize = u64::from(r.u16(0x36, "e_phentsize")?);
    let mut phnum = u64::from(r.u16(0x38, "e_phnum")?);
    if phnum == u64::from(PN_XNUM) {
        let shoff = r.u64(0x28, "e_shoff")?;
        phnum = u64::from(r.u32(shoff + 0x2c, "section header 0 sh_info")?);
    }
    if phnum > 0 && phentsize < PHDR_SIZE {
        return Err(format!(
            "program header entries are {phentsize} bytes, expected at least {PHDR_SIZE}"
        ));
    }

    let mut segments = Vec::new();
    for i in 0..phnum {
        let base = i
            .checked_mul(phentsize)
            .and_then(|o| o.checked_add(phoff))
            .ok_or("program header table offset overflows")?;
        r.bytes(base, PHDR_SIZE, "program header")?;
        segments.push(Segment {
            p_type: r.u32(base, "p_type")?,
            offset: r.u64(base + 8, "p_offset")?,
            vaddr: r.u64(base + 16, "p_vaddr")?,
            filesz: r.u64(base + 32, "p_filesz")?,
        });
    }

    let mut out = Linkage::default();
    for seg in &segments {
        match seg.p_type {
            PT_INTERP => {
                let raw = r.bytes(seg.offset, seg.filesz, "PT_INTERP")?;
                let path = raw.split(|&b| b == 0).next().unwrap_or_default();
                out.interp = Some(String::from_utf8_lossy(path).into_owned());
            }
            PT_DYNAMIC => {
                out.has_dynamic = true;
                out.needed.extend(needed(&r, seg, &segments)?);
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Walks one `PT_DYNAMIC` segment and resolves its `DT_NEEDED` names through `DT_STRTAB`.
fn needed(r: &Reader, dynamic: &Segment, segments: &[Segment]) -> Result<Vec<String>, String> {
    let mut offsets = Vec::new();
    let (mut strtab, mut strsz) = (None, None);
    for i in 0..dynamic.filesz / DYN_SIZE {
        let at = dynamic.offset + i * DYN_SIZE;
        let tag = r.u64(at, "dynamic entry tag")?;
        let val = r.u64(at + 8, "dynamic entry value")?;
        match tag {
            DT_NULL => break,
            DT_NEEDED => offsets.push(val),
            DT_STRTAB => strtab = Some(val),
            DT_STRSZ => strsz = Some(val),
            _ => {}
        }
    }
    // DT_STRTAB holds a virtual address; a PT_LOAD segment maps it back to a file offset.
    let table = strtab.and_then(|addr| {
        segments
            .iter()
            .filter(|s| s.p_type == PT_LOAD && s.vaddr <= addr && addr - s.vaddr < s.filesz)
            .map(|s| (s.offset + (addr - s.vaddr), s.filesz - (addr - s.vaddr)))
            .next()
    });
    Ok(offsets
        .into_iter()
        .map(|name_off| {
            let resolved = table.and_then(|(start, avail)| {
                let len = strsz.unwrap_or(avail).min(avail);
                let tab = r.bytes(start, len, "string table").ok()?;
                let rest = tab.get(usize::try_from(name_off).ok()?..)?;
                let name = rest.split(|&b| b == 0).next()?;
                Some(String::from_utf8_lossy(name).into_owned())
            });
            resolved.unwrap_or_else(|| format!("<unresolved name at string offset {name_off:#x}>"))
        })
        .collect())
}

/// `Ok` when the file asks for no program interpreter and no shared library.
pub(crate) fn check_static(data: &[u8]) -> Result<(), String> {
    let l = parse(data)?;
    if let Some(interp) = l.interp {
        return Err(format!("dynamically linked: has PT_INTERP {interp}"));
    }
    if !l.needed.is_empty() {
        return Err(format!(
            "dynamically linked: DT_NEEDED {}",
            l.needed.join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One segment of a hand-built image; its data is placed after the program headers.
    struct Seg {
        p_type: u32,
        vaddr: u64,
        data: Vec<u8>,
    }

    fn put(out: &mut [u8], at: usize, v: u64, n: usize, little: bool) {
        for i in 0..n {
            let shift = if little { 8 * i } else { 8 * (n - 1 - i) };
            out[at + i] = (v >> shift) as u8;
        }
    }

    /// Builds an ELF64 executable image: header, program headers, then each segment's bytes.
    fn image(little: bool, segs: &[Seg]) -> Vec<u8> {
        let phoff = EHDR_SIZE as usize;
        let mut data_off = phoff + segs.len() * PHDR_SIZE as usize;
        let total = data_off + segs.iter().map(|s| s.data.len()).sum::<usize>();
        let mut out = vec![0u8; total];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2;
        out[5] = if little { 1 } else { 2 };
        out[6] = 1;
        put(&mut out, 0x10, 3, 2, little); // ET_DYN
        put(&mut out, 0x12, 62, 2, little); // EM_X86_64
        put(&mut out, 0x20, phoff as u64, 8, little);
        put(&mut out, 0x34, EHDR_SIZE, 2, little);
        put(&mut out, 0x36, PHDR_SIZE, 2, little);
        put(&mut out, 0x38, segs.len() as u64, 2, little);
        for (i, s) in segs.iter().enumerate() {
            let ph = phoff + i * PHDR_SIZE as usize;
            let len = s.data.len() as u64;
            put(&mut out, ph, u64::from(s.p_type), 4, little);
            put(&mut out, ph + 8, data_off as u64, 8, little);
            put(&mut out, ph + 16, s.vaddr, 8, little);
            put(&mut out, ph + 24, s.vaddr, 8, little);
            put(&mut out, ph + 32, len, 8, little);
            put(&mut out, ph + 40, len, 8, little);
            out[data_off..data_off + s.data.len()].copy_from_slice(&s.data);
            data_off += s.data.len();
        }
        out
    }

    fn dynamic(entries: &[(u64, u64)], little: bool) -> Vec<u8> {
        let mut out = vec![0u8; entries.len() * DYN_SIZE as usize];
        for (i, &(tag, val)) in entries.iter().enumerate() {
            put(&mut out, i * 16, tag, 8, little);
            put(&mut out, i * 16 + 8, val, 8, little);
        }
        out
    }

    fn load(vaddr: u64, data: &[u8]) -> Seg {
        Seg {
            p_type: PT_LOAD,
            vaddr,
            data: data.to_vec(),
        }
    }

    const STRTAB: &[u8] = b"\0libc.so.6\0libm.so.6\0";

    fn static_image(little: bool) -> Vec<u8> {
        image(little, &[load(0x1000, &[0x90; 32])])
    }

    fn static_pie_image(little: bool) -> Vec<u8> {
        let dynsec = dynamic(
            &[
                (DT_STRTAB, 0x2000),
                (DT_STRSZ, 1),
                (0x6ffffffb, 0x8000000),
                (DT_NULL, 0),
            ],
            little,
        );
        image(
            little,
            &[
                load(0x2000, b"\0"),
                Seg {
                    p_type: PT_DYNAMIC,
                    vaddr: 0x3000,
                    data: dynsec,
                },
            ],
        )
    }

    fn interp_image() -> Vec<u8> {
        let interp = Seg {
            p_type: PT_INTERP,
            vaddr: 0x318,
            data: b"/lib64/ld-linux-x86-64.so.2\0".to_vec(),
        };
        image(true, &[load(0x1000, &[0; 8]), interp])
    }

    fn needed_image(little: bool) -> Vec<u8> {
        let dynsec = dynamic(
            &[
                (DT_NEEDED, 1),
                (DT_STRTAB, 0x2000),
                (DT_NEEDED, 11),
                (DT_STRSZ, STRTAB.len() as u64),
                (DT_NULL, 0),
            ],
            little,
        );
        image(
            little,
            &[
                load(0x2000, STRTAB),
                Seg {
                    p_type: PT_DYNAMIC,
                    vaddr: 0x3000,
                    data: dynsec,
                },
            ],
        )
    }

    #[test]
    fn linkage_of_hand_built_images() {
        let cases: &[(&str, Vec<u8>, Linkage)] = &[
            ("static", static_image(true), Linkage::default()),
            ("static big-endian", static_image(false), Linkage::default()),
            (
                "static-pie",
                static_pie_image(true),
                Linkage {
                    has_dynamic: true,
                    ..Linkage::default()
                },
            ),
            (
                "interp",
                interp_image(),
                Linkage {
                    interp: Some("/lib64/ld-linux-x86-64.so.2".into()),
                    ..Linkage::default()
                },
            ),
            (
                "needed",
                needed_image(true),
                Linkage {
                    needed: vec!["libc.so.6".into(), "libm.so.6".into()],
                    has_dynamic: true,
                    interp: None,
                },
            ),
            (
                "needed big-endian",
                needed_image(false),
                Linkage {
                    needed: vec!["libc.so.6".into(), "libm.so.6".into()],
                    has_dynamic: true,
                    interp: None,
                },
            ),
        ];
        for (name, img, expect) in cases {
            assert_eq!(parse(img).as_ref(), Ok(expect), "{name}");
        }
    }

    #[test]
    fn check_static_verdicts() {
        let cases: &[(&str, Vec<u8>, Result<(), &str>)] = &[
            ("static", static_image(true), Ok(())),
            ("static-pie", static_pie_image(true), Ok(())),
            (
                "interp",
                interp_image(),
                Err("dynamically linked: has PT_INTERP /lib64/ld-linux-x86-64.so.2"),
            ),
            (
                "needed",
                needed_image(true),
                Err("dynamically linked: DT_NEEDED libc.so.6, libm.so.6"),
            ),
            ("empty", Vec::new(), Err("not an ELF file (bad magic)")),
            (
                "script",
                b"#!/bin/sh\necho hi\n".to_vec(),
                Err("not an ELF file (bad magic)"),
            ),
            (
                "elf32",
                b"\x7fELF\x01\x01\x01\0".to_vec(),
                Err("32-bit ELF files are not supported"),
            ),
            (
                "bad order",
                b"\x7fELF\x02\x03\x01\0".to_vec(),
                Err("invalid ELF byte order"),
            ),
            (
                "header only",
                b"\x7fELF\x02\x01\x01\0".to_vec(),
                Err("truncated ELF file: ELF header at offset 0x0 (+64) is past the end (8 bytes)"),
            ),
        ];
        for (name, img, expect) in cases {
            assert_eq!(check_static(img), expect.map_err(String::from), "{name}");
        }
    }

    #[test]
    fn needed_name_outside_the_string_table_is_reported_not_dropped() {
        let dynsec = dynamic(
            &[
                (DT_STRTAB, 0x2000),
                (DT_STRSZ, 4),
                (DT_NEEDED, 100),
                (DT_NULL, 0),
            ],
            true,
        );
        let img = image(
            true,
            &[
                load(0x2000, b"\0abc"),
                Seg {
                    p_type: PT_DYNAMIC,
                    vaddr: 0x3000,
                    data: dynsec,
                },
            ],
        );
        assert_eq!(
            check_static(&img),
            Err("dynamically linked: DT_NEEDED <unresolved name at string offset 0x64>".into())
        );
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        for img in [interp_image(), needed_image(true), static_pie_image(false)] {
            // The segments' bytes sit at the end, so every shorter prefix cuts something we read.
            for len in 0..img.len() {
                assert!(parse(&img[..len]).is_err(), "prefix of {len} bytes parsed");
            }
            assert!(parse(&img).is_ok());
        }
    }

    #[test]
    fn huge_offsets_do_not_overflow() {
        let mut img = static_image(true);
        put(&mut img, 0x20, u64::MAX - 8, 8, true);
        assert!(
            parse(&img)
                .unwrap_err()
                .starts_with("truncated ELF file: program header")
        );
    }

    /// The test binary itself: dynamic against glibc unless it was built with crt-static.
    #[test]
    fn real_file_this_test_binary() {
        let data = std::fs::read("/proc/self/exe").expect("read /proc/self/exe");
        let l = parse(&data).expect("parse our own executable");
        if cfg!(target_feature = "crt-static") {
            assert_eq!(check_static(&data), Ok(()));
        } else if cfg!(target_env = "gnu") {
            assert!(
                l.interp.as_deref().is_some_and(|i| i.contains("ld-")),
                "{l:?}"
            );
            assert!(l.needed.iter().any(|n| n.starts_with("libc.so")), "{l:?}");
        }
    }

    /// Debian ships ldconfig as a static-pie executable; elsewhere it may be dynamic.
    #[test]
    fn real_file_static_pie_ldconfig_if_present() {
        let Ok(data) = std::fs::read("/sbin/ldconfig") else {
            return;
        };
        let l = parse(&data).expect("parse /sbin/ldconfig");
        // A dynamic executable has both an interpreter and libraries; a static one neither.
        assert_eq!(l.interp.is_some(), !l.needed.is_empty(), "{l:?}");
    }
}
