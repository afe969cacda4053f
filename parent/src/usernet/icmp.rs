//! ICMP echo of the user-mode network beyond the gateway: each request the namespace sends to
//! another address goes out on an unprivileged ICMP socket (`SOCK_DGRAM`, `IPPROTO_ICMP` or
//! `IPPROTO_ICMPV6`), one per flow (the namespace's address and echo id, and the address
//! pinged), in a fixed table; a flow idle for half a minute is closed. The kernel gives each
//! socket its own echo id, so replies get the namespace's id back before they go to the tap.
//!
//! Such sockets are allowed only to groups in `net.ipv4.ping_group_range`; when ours is not,
//! the first refusal is warned about once and echo requests beyond the gateway are dropped
//! from then on. The gateway itself always answers (in `mod.rs`).

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::epoll;
use rustix::io::Errno;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, ipproto};

use super::flows::Flows;
use super::wire::{self, Addr};
use super::{Config, KIND_ICMP, Out, tag, watch};

/// The most echo flows at once.
pub(crate) const MAX_FLOWS: usize = 64;
/// How long a flow lives without traffic.
pub(crate) const IDLE: Duration = Duration::from_secs(30);

struct Flow {
    sock: OwnedFd,
    child: Addr,
    /// The namespace's echo id.
    id: u16,
    remote: Addr,
    last: Instant,
}

/// The flow table.
pub(crate) struct Table {
    flows: Flows<Flow>,
    /// Unprivileged ICMP sockets are not allowed to us (`EACCES`).
    denied: bool,
}

impl Table {
    /// An empty table, its slots allocated now.
    pub(crate) fn new() -> Table {
        Table {
            flows: Flows::new(MAX_FLOWS),
            denied: false,
        }
    }

    #[cfg(test)]
    /// How many flows are open.
    pub(crate) fn len(&self) -> usize {
        self.flows.len()
    }

    #[cfg(test)]
    /// Whether unprivileged ICMP sockets were refused to us.
    pub(crate) fn denied(&self) -> bool {
        self.denied
    }

    /// When the next sweep for idle flows is due.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.flows.deadline()
    }

    /// The echo request `message` (type, code, checksum, id, sequence, data; checked) from
    /// `child` in the namespace to `remote`, not the gateway: sent on its flow's socket, the
    /// flow made if needed.
    #[allow(clippy::wrong_self_convention, reason = "input from the child")]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_child(
        &mut self,
        child: Addr,
        remote: Addr,
        message: &[u8],
        out: &mut Out<'_>,
        cfg: &Config,
        ep: &OwnedFd,
        now: Instant,
    ) {
        let [_, _, _, _, a, b, ..] = *message else {
            return;
        };
        let id = u16::from_be_bytes([a, b]);
        let found = self
            .flows
            .find(|f| f.id == id && f.child == child && f.remote == remote);
        let index = match found {
            Some(i) => i,
            None => match self.open(child, id, remote, cfg, ep, now) {
                Some(i) => i,
                None => {
                    out.counters.dropped += 1;
                    return;
                }
            },
        };
        let Some(flow) = self.flows.get_mut(index) else {
            return;
        };
        flow.last = now;
        // The kernel puts in its own id and checksum; a full socket buffer loses the request,
        // as a wire would.
        let _ = rustix::net::send(
            &flow.sock,
            message,
            SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
        );
    }

    fn open(
        &mut self,
        child: Addr,
        id: u16,
        remote: Addr,
        cfg: &Config,
        ep: &OwnedFd,
        now: Instant,
    ) -> Option<usize> {
        if self.denied {
            return None;
        }
        let addr = cfg.host_addr(remote, 0)?;
        let index = match self.flows.free_slot() {
            Ok(i) => i,
            Err(first) => {
                if first {
                    crate::warn(&format!(
                        "user-mode network: more than {MAX_FLOWS} ICMP echo flows, dropping requests of new ones"
                    ));
                }
                return None;
            }
        };
        let (family, proto) = if addr.is_ipv4() {
            (AddressFamily::INET, ipproto::ICMP)
        } else {
            (AddressFamily::INET6, ipproto::ICMPV6)
        };
        let sock = match rustix::net::socket_with(
            family,
            SocketType::DGRAM,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            Some(proto),
        ) {
            Ok(s) => s,
            Err(Errno::ACCESS) | Err(Errno::PERM) => {
                self.denied = true;
                crate::warn(
                    "user-mode network: unprivileged ICMP sockets are not allowed to this group \
                     (net.ipv4.ping_group_range); only the gateway answers ping",
                );
                return None;
            }
            Err(_) => return None,
        };
        rustix::net::connect(&sock, &addr).ok()?;
        let generation = self.flows.renew(index);
        if !watch(
            ep,
            sock.as_fd(),
            tag(KIND_ICMP, generation, index),
            epoll::EventFlags::IN,
        ) {
            return None;
        }
        let flow = Flow {
            sock,
            child,
            id,
            remote,
            last: now,
        };
        self.flows.insert(index, flow, now);
        Some(index)
    }

    /// A flow's socket has replies: each goes to the namespace with its echo id.
    pub(crate) fn socket_ready(
        &mut self,
        index: usize,
        generation: u32,
        out: &mut Out<'_>,
        cfg: &Config,
        now: Instant,
    ) {
        let Some(flow) = self.flows.tagged(index, generation) else {
            return;
        };
        let max = (cfg.mtu as usize)
            .saturating_sub(wire::ip_len(&flow.child))
            .min(65507);
        let proto = if wire::unmapped(&flow.child).is_some() {
            wire::PROTO_ICMP
        } else {
            wire::PROTO_ICMP6
        };
        for _ in 0..32 {
            let at = Out::L4;
            let n = match rustix::net::recv(
                &flow.sock,
                &mut out.buf[at..at + max],
                RecvFlags::DONTWAIT | RecvFlags::TRUNC,
            ) {
                Ok((n, total)) if total <= n => n,
                // Too big for the namespace's MTU: dropped.
                Ok(_) => continue,
                Err(Errno::AGAIN) => break,
                // An ICMP error (unreachable) is reported here: nothing to deliver.
                Err(_) => continue,
            };
            flow.last = now;
            if wire::restore_echo_reply(
                &mut out.buf[at..at + n],
                flow.id,
                &flow.remote,
                &flow.child,
            ) {
                out.send_ip(flow.remote, flow.child, proto, n);
            }
        }
    }

    /// Closes the flows that have been idle too long.
    pub(crate) fn expire(&mut self, ep: &OwnedFd, now: Instant) {
        self.flows.expire(
            now,
            |f| now.duration_since(f.last) >= IDLE,
            |_, _, f| {
                let _ = epoll::delete(ep, &f.sock);
            },
        );
    }
}

impl Default for Table {
    fn default() -> Self {
        Table::new()
    }
}
