//! The raw syscall instruction, for the few calls rustix does not wrap (or wraps only in a form
//! that allocates or cannot name every signal). Private to this crate: every public wrapper
//! argues its own call in a `// SAFETY:` line.

use std::io;

#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn syscall6(n: u32, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the x86_64 syscall ABI: number in rax, arguments in rdi, rsi, rdx, r10, r8, r9;
    // the kernel clobbers rcx and r11 and touches no stack. The caller vouches for the arguments.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a[0], in("rsi") a[1], in("rdx") a[2],
            in("r10") a[3], in("r8") a[4], in("r9") a[5],
            lateout("rcx") _, lateout("r11") _,
            options(nostack)
        );
    }
    ret
}

#[cfg(target_arch = "aarch64")]
pub(crate) unsafe fn syscall6(n: u32, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the aarch64 syscall ABI: number in x8, arguments in x0..x5, result in x0.
    // The caller vouches for the arguments.
    unsafe {
        core::arch::asm!(
            "svc 0",
            in("x8") n as usize,
            inlateout("x0") a[0] as isize => ret,
            in("x1") a[1], in("x2") a[2], in("x3") a[3], in("x4") a[4], in("x5") a[5],
            options(nostack)
        );
    }
    ret
}

pub(crate) fn check(ret: isize) -> io::Result<usize> {
    if (-4095..0).contains(&ret) {
        Err(io::Error::from_raw_os_error(-ret as i32))
    } else {
        Ok(ret as usize)
    }
}
