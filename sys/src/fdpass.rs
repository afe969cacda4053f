//! One proto frame plus descriptors over a Unix stream socket (SCM_RIGHTS): how the child
//! hands sockets made in its namespace to the parent for the builtin port driver.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use proto::{HEADER_LEN, MAX_FRAME, Msg};
use rustix::io::Errno;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
};

/// The most descriptors one frame carries.
pub const MAX_FDS: usize = proto::MAX_SOCKETS as usize;

/// Sends `msg`, with `fds` (at most [`MAX_FDS`]) attached to its first byte.
pub fn send(sock: impl AsFd, msg: &Msg, fds: &[BorrowedFd<'_>]) -> Result<(), String> {
    let mut buf = [0u8; MAX_FRAME];
    let n = msg.encode(&mut buf);
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if fds.len() > MAX_FDS || !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds))
    {
        return Err(format!("sending {}: too many descriptors", msg.name()));
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

/// Receives one frame; the descriptors that came with it are pushed onto `fds` (those
/// beyond its spare capacity are closed, so a caller that reserved room allocates nothing).
pub fn recv(sock: impl AsFd, fds: &mut Vec<OwnedFd>) -> Result<Msg, proto::Error> {
    let mut buf = [0u8; MAX_FRAME];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
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
            if let RecvAncillaryMessage::ScmRights(received) = m {
                for f in received {
                    if fds.len() < fds.capacity() {
                        fds.push(f);
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
    Msg::decode(&buf[..want])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    fn made(count: u8) -> Msg {
        Msg::SocketsMade(proto::SocketsMade {
            count,
            transparent: 0,
            errno: if count == 0 { 24 } else { 0 },
        })
    }

    #[test]
    fn a_frame_and_its_descriptors_travel_together() {
        let (a, b) = UnixStream::pair().unwrap();
        let pairs: Vec<(UnixStream, UnixStream)> =
            (0..MAX_FDS).map(|_| UnixStream::pair().unwrap()).collect();
        let theirs: Vec<BorrowedFd<'_>> = pairs.iter().map(|(_, y)| y.as_fd()).collect();
        send(&a, &made(MAX_FDS as u8), &theirs).unwrap();
        let mut fds = Vec::with_capacity(MAX_FDS);
        assert_eq!(recv(&b, &mut fds).unwrap(), made(MAX_FDS as u8));
        assert_eq!(fds.len(), MAX_FDS);
        // The last one received is the last one sent.
        let (mut x, _) = pairs.into_iter().last().unwrap();
        let mut y = UnixStream::from(fds.pop().unwrap());
        x.write_all(b"hi").unwrap();
        let mut got = [0u8; 2];
        y.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
        // Without descriptors, and then end of file.
        fds.clear();
        send(&a, &made(0), &[]).unwrap();
        assert_eq!((recv(&b, &mut fds).unwrap(), fds.len()), (made(0), 0));
        drop(a);
        assert_eq!(recv(&b, &mut fds).unwrap_err(), proto::Error::Eof);
    }

    #[test]
    fn descriptors_beyond_the_room_reserved_are_closed_not_kept() {
        let (a, b) = UnixStream::pair().unwrap();
        let (x, y) = UnixStream::pair().unwrap();
        send(&a, &made(1), &[y.as_fd()]).unwrap();
        drop(y);
        let mut fds = Vec::new();
        assert_eq!(recv(&b, &mut fds).unwrap(), made(1));
        assert!(fds.is_empty());
        // The only other end was closed on receipt: the peer sees end of file.
        let mut buf = [0u8; 1];
        assert_eq!((&x).read(&mut buf).unwrap(), 0);
        let too_many: Vec<BorrowedFd<'_>> = (0..=MAX_FDS).map(|_| x.as_fd()).collect();
        assert!(send(&a, &made(1), &too_many).is_err());
    }
}
