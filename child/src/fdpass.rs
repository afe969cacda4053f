//! One proto frame plus, optionally, one descriptor over a Unix stream socket (SCM_RIGHTS):
//! how the child hands a connected socket to the parent for the builtin port driver.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use proto::{HEADER_LEN, MAX_FRAME, Msg};
use rustix::io::Errno;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
};

/// Sends `msg`, with `fd` attached to its first byte when given.
pub fn send(sock: impl AsFd, msg: &Msg, fd: Option<BorrowedFd<'_>>) -> Result<(), String> {
    let mut buf = [0u8; MAX_FRAME];
    let n = msg.encode(&mut buf);
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds;
    if let Some(fd) = fd {
        fds = [fd];
        control.push(SendAncillaryMessage::ScmRights(&fds));
    }
    let mut sent = 0;
    while sent < n {
        let iov = [IoSlice::new(&buf[sent..n])];
        match sendmsg(&sock, &iov, &mut control, SendFlags::NOSIGNAL) {
            Ok(k) => {
                sent += k;
                // The descriptor went with the first bytes.
                control = SendAncillaryBuffer::new(&mut []);
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(format!("sending {}: {e}", msg.name())),
        }
    }
    Ok(())
}

/// Receives one frame and the descriptor that came with it, if any.
pub fn recv(sock: impl AsFd) -> Result<(Msg, Option<OwnedFd>), proto::Error> {
    let mut buf = [0u8; MAX_FRAME];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut fd = None;
    let mut got = 0;
    let mut want = HEADER_LEN;
    while got < want {
        let mut iov = [IoSliceMut::new(&mut buf[got..want])];
        let r = match recvmsg(&sock, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
            Ok(r) => r,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(proto::Error::Io(std::io::Error::from(e).kind())),
        };
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = m {
                for f in fds {
                    // Keep the first; any extra one is closed when dropped here.
                    if fd.is_none() {
                        fd = Some(f);
                    }
                }
            }
        }
        if r.bytes == 0 {
            return Err(if got == 0 {
                proto::Error::Eof
            } else {
                proto::Error::Truncated
            });
        }
        got += r.bytes;
        if got == HEADER_LEN && want == HEADER_LEN {
            let header: [u8; HEADER_LEN] = buf[..HEADER_LEN].try_into().unwrap_or_default();
            want = HEADER_LEN + proto::check_header(&header)?;
        }
    }
    Ok((Msg::decode(&buf[..want])?, fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_frame_and_a_descriptor_travel_together() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut x, y) = UnixStream::pair().unwrap();
        send(&a, &Msg::PortConnected(0), Some(y.as_fd())).unwrap();
        drop(y);
        let (msg, fd) = recv(&b).unwrap();
        assert_eq!(msg, Msg::PortConnected(0));
        let mut y = UnixStream::from(fd.expect("a descriptor"));
        x.write_all(b"hi").unwrap();
        let mut got = [0u8; 2];
        y.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
        // Without a descriptor, and then end of file.
        send(&a, &Msg::PortConnected(111), None).unwrap();
        let (msg, fd) = recv(&b).unwrap();
        assert_eq!((msg, fd.is_none()), (Msg::PortConnected(111), true));
        drop(a);
        assert_eq!(recv(&b).unwrap_err(), proto::Error::Eof);
    }
}
