//! The client side of vpnkit's vmnet protocol (frames in `proto::vmnet`) on a connected Unix
//! socket: the session setup and the DHCP exchange that learns the interface's address. The
//! parent opens the first session, the child its own for the frames; `sys` is the crate both
//! link, hence here.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use proto::vmnet;

/// How long each step of the session setup may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// On a connected socket: the init exchange and the request for the interface `uuid`, each read
/// bounded by a timeout (which stays set). Shared with the parent, which opens the first session.
///
/// # Errors
/// The I/O error or the protocol's complaint.
pub fn session(mut s: UnixStream, uuid: &[u8; 16]) -> Result<(UnixStream, vmnet::Vif), String> {
    // Writes are a few hundred bytes into an empty socket buffer: only reads can wait.
    s.set_read_timeout(Some(SETUP_TIMEOUT)).map_err(io_error)?;
    s.write_all(&vmnet::init_message()).map_err(io_error)?;
    let mut init = [0u8; vmnet::INIT_LEN];
    s.read_exact(&mut init).map_err(io_error)?;
    vmnet::parse_init(&init).map_err(|_| String::from("not a vmnet server (bad init magic)"))?;
    s.write_all(&vmnet::connect_request(uuid))
        .map_err(io_error)?;
    let mut reply = [0u8; vmnet::VIF_REPLY_LEN];
    s.read_exact(&mut reply[..2]).map_err(io_error)?;
    let len = vmnet::vif_reply_len(&reply[..2]).unwrap_or(2);
    s.read_exact(&mut reply[2..len]).map_err(io_error)?;
    let vif = vmnet::parse_vif_reply(&reply[..len]).map_err(|e| match e {
        vmnet::Error::Refused(why) => why,
        _ => String::from("truncated vmnet message"),
    })?;
    Ok((s, vif))
}

/// [`session`] and [`dhcp`]: the parent's whole exchange with vpnkit on a connected socket,
/// giving the open session, the interface's MAC and its IPv4 address.
///
/// # Errors
/// As [`session`] and [`dhcp`].
pub fn interface(s: UnixStream, uuid: &[u8; 16]) -> Result<(UnixStream, [u8; 6], [u8; 4]), String> {
    let (mut s, vif) = session(s, uuid)?;
    let ip = dhcp(&mut s, vif.mac)?;
    Ok((s, vif.mac, ip))
}

/// The interface's IPv4 address by DHCP on a session from [`session`]: up to ten discovers, one
/// a second (or after a hundred other frames), until an offer for `mac` arrives. Frames that are
/// not the offer are skipped. Used by the parent.
///
/// # Errors
/// The I/O error, or `no DHCP offer` after the last discover.
pub fn dhcp(s: &mut UnixStream, mac: [u8; 6]) -> Result<[u8; 4], String> {
    let mut wire = [0u8; vmnet::FRAME_HEAD + vmnet::DISCOVER_LEN];
    wire[..2].copy_from_slice(&(vmnet::DISCOVER_LEN as u16).to_le_bytes());
    wire[2..].copy_from_slice(&vmnet::dhcp_discover(mac));
    let mut frame = vec![0u8; vmnet::MAX_FRAME];
    s.set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(io_error)?;
    for _ in 0..10 {
        s.write_all(&wire).map_err(io_error)?;
        for _ in 0..100 {
            let mut head = [0u8; vmnet::FRAME_HEAD];
            match s.read_exact(&mut head) {
                Ok(()) => {}
                // A second without an answer: ask again.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(io_error(e)),
            }
            let len = usize::from(u16::from_le_bytes(head));
            s.read_exact(&mut frame[..len]).map_err(io_error)?;
            if let Some(ip) = vmnet::dhcp_offer(&frame[..len], mac) {
                return Ok(ip);
            }
        }
    }
    Err("no DHCP offer: i/o timeout".into())
}

/// An I/O error of the session; a read timeout in Go's words.
pub fn io_error(e: std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::WouldBlock {
        return "i/o timeout".into();
    }
    crate::errno::text(&e)
}
