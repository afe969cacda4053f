//! nf_tables over netlink (`NETLINK_NETFILTER`): the one table `--source-ip-transparent` adds so
//! that connections the namespace forwards onward (Docker's `userland-proxy=false` DNAT to a
//! container on a bridge) come back to the parent's transparent sockets.
//!
//! Upstream v3 runs `iptables -t mangle … CONNMARK` for this. We run no program: the ruleset
//! below is sent as one nf_tables batch, encoded by pure functions into a fixed buffer (tested
//! byte for byte against what `nft -f` of the same text sends), and the kernel confirms each
//! message (`NLM_F_ACK`), which [`sys::netlink::scan_reply`] reads.
//!
//! ```text
//! table inet rootlesskit {
//!     chain output {
//!         type route hook output priority mangle;
//!         meta mark 100 ct direction original ct mark set 100 meta mark set 0
//!     }
//!     chain prerouting {
//!         type filter hook prerouting priority mangle;
//!         ct mark 100 meta mark set 100
//!     }
//! }
//! ```
//!
//! Our transparent sockets (TCP and UDP) carry the routing mark (see [`crate::ports`]). The
//! output chain moves it from their packets to their connection and clears it on the packet:
//! the mark would route everything to the `local` table, so a connection DNATed to a container
//! would be delivered here instead of reaching it; cleared, it is routed by the main table (a
//! `route` chain routes the packet again when it changes the mark, and NAT does after a DNAT).
//! The prerouting chain puts the mark back on every packet of such a connection that arrives
//! (the container's replies from the bridge, or our own packets looped back to a server in the
//! namespace, whose accepted TCP socket inherits it through `tcp_fwmark_accept`), so the fwmark
//! rule routes them to the `local` table and they reach the socket bound to the client's
//! address. Only the original direction is cleared: a server's accepted socket keeps the mark
//! on its replies.

use rustix::io::{self, Errno};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

use linux_raw_sys::netlink as nl;

use crate::routing::TRANSPARENT_MARK;
use sys::netlink::{Request, from_kernel, retry, scan_reply};

/// Size of the batch and reply buffer: the batch is 824 bytes, an error echoes one message
/// (the largest is 364) after a 20-byte header.
pub(crate) const BUF_LEN: usize = 2048;

/// `NFNL_SUBSYS_NFTABLES` (`linux/netfilter/nfnetlink.h`): the high byte of nf_tables'
/// message types, and the `res_id` of a batch.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFNL_MSG_BATCH_BEGIN` and `NFNL_MSG_BATCH_END` (`NLMSG_MIN_TYPE` and the next).
const BATCH_BEGIN: u16 = 0x10;
const BATCH_END: u16 = 0x11;
/// `enum nf_tables_msg_types` (`linux/netfilter/nf_tables.h`).
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
/// `NFPROTO_INET`: one table for IPv4 and IPv6.
const NFPROTO_INET: u8 = 1;
const NFPROTO_UNSPEC: u8 = 0;

/// Attributes (`enum nft_*_attributes`).
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_FLAGS: u16 = 2;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_META_SREG: u16 = 3;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFTA_CT_SREG: u16 = 4;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;

/// Values: `NFT_META_MARK`, `NFT_CT_DIRECTION`, `NFT_CT_MARK`, `NFT_CMP_EQ`, `NFT_REG_1`,
/// `IP_CT_DIR_ORIGINAL`, the hooks `NF_INET_PRE_ROUTING` and `NF_INET_LOCAL_OUT`, and
/// `NF_IP_PRI_MANGLE`.
const NFT_META_MARK: u32 = 3;
const NFT_CT_DIRECTION: u32 = 1;
const NFT_CT_MARK: u32 = 3;
const NFT_CMP_EQ: u32 = 0;
const NFT_REG_1: u32 = 1;
const IP_CT_DIR_ORIGINAL: u8 = 0;
const NF_INET_PRE_ROUTING: u32 = 0;
const NF_INET_LOCAL_OUT: u32 = 3;
const PRIORITY_MANGLE: i32 = -150;

const TABLE: &[u8] = b"rootlesskit\0";
const OUTPUT: &[u8] = b"output\0";
const PREROUTING: &[u8] = b"prerouting\0";

/// Every message of the batch asks for an acknowledgement, so success is seen, not assumed.
const ACK: u16 = nl::NLM_F_ACK as u16;
const REQUEST: u16 = nl::NLM_F_REQUEST as u16;
const CREATE: u16 = nl::NLM_F_CREATE as u16;
const APPEND: u16 = nl::NLM_F_APPEND as u16;

/// How many messages between the batch's begin and end; each gets an acknowledgement.
pub(crate) const MESSAGES: u32 = 5;

/// Starts a message with its `struct nfgenmsg` (family, `NFNETLINK_V0`, `res_id` big-endian).
fn nfnl<'a>(
    buf: &'a mut [u8],
    ty: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
) -> io::Result<Request<'a>> {
    let mut r = Request::new(buf, ty, flags, seq)?;
    let id = res_id.to_be_bytes();
    r.put(&[family, 0, id[0], id[1]])?;
    Ok(r)
}

/// An nf_tables message about the `inet` family.
fn nft<'a>(buf: &'a mut [u8], cmd: u16, flags: u16, seq: u32) -> io::Result<Request<'a>> {
    nfnl(
        buf,
        NFNL_SUBSYS_NFTABLES << 8 | cmd,
        REQUEST | ACK | flags,
        seq,
        NFPROTO_INET,
        0,
    )
}

fn be32(r: &mut Request, ty: u16, v: u32) -> io::Result<()> {
    r.attr(ty, &v.to_be_bytes())
}

/// One `NFTA_LIST_ELEM` of a rule: an expression named `name` (NUL-terminated) with the
/// attributes `data` appends.
fn expr(
    r: &mut Request,
    name: &[u8],
    data: impl FnOnce(&mut Request) -> io::Result<()>,
) -> io::Result<()> {
    r.nest(NFTA_LIST_ELEM, |r| {
        r.attr(NFTA_EXPR_NAME, name)?;
        r.nest(NFTA_EXPR_DATA, data)
    })
}

/// `[ meta load <key> => reg 1 ]`
fn meta_load(r: &mut Request, key: u32) -> io::Result<()> {
    expr(r, b"meta\0", |r| {
        be32(r, NFTA_META_KEY, key)?;
        be32(r, NFTA_META_DREG, NFT_REG_1)
    })
}

/// `[ meta set <key> with reg 1 ]`
fn meta_set(r: &mut Request, key: u32) -> io::Result<()> {
    expr(r, b"meta\0", |r| {
        be32(r, NFTA_META_KEY, key)?;
        be32(r, NFTA_META_SREG, NFT_REG_1)
    })
}

/// `[ ct load <key> => reg 1 ]`
fn ct_load(r: &mut Request, key: u32) -> io::Result<()> {
    expr(r, b"ct\0", |r| {
        be32(r, NFTA_CT_KEY, key)?;
        be32(r, NFTA_CT_DREG, NFT_REG_1)
    })
}

/// `[ ct set <key> with reg 1 ]`
fn ct_set(r: &mut Request, key: u32) -> io::Result<()> {
    expr(r, b"ct\0", |r| {
        be32(r, NFTA_CT_KEY, key)?;
        be32(r, NFTA_CT_SREG, NFT_REG_1)
    })
}

/// `[ cmp eq reg 1 <value> ]`: the rule stops here unless register 1 holds `value`.
fn cmp_eq(r: &mut Request, value: &[u8]) -> io::Result<()> {
    expr(r, b"cmp\0", |r| {
        be32(r, NFTA_CMP_SREG, NFT_REG_1)?;
        be32(r, NFTA_CMP_OP, NFT_CMP_EQ)?;
        r.nest(NFTA_CMP_DATA, |r| r.attr(NFTA_DATA_VALUE, value))
    })
}

/// `[ immediate reg 1 <value> ]`
fn immediate(r: &mut Request, value: &[u8]) -> io::Result<()> {
    expr(r, b"immediate\0", |r| {
        be32(r, NFTA_IMMEDIATE_DREG, NFT_REG_1)?;
        r.nest(NFTA_IMMEDIATE_DATA, |r| r.attr(NFTA_DATA_VALUE, value))
    })
}

/// `NFT_MSG_NEWCHAIN`: base chain `name` of `kind` on `hook` at priority mangle.
fn encode_chain(
    buf: &mut [u8],
    seq: u32,
    name: &[u8],
    kind: &[u8],
    hook: u32,
) -> io::Result<usize> {
    let mut r = nft(buf, NFT_MSG_NEWCHAIN, CREATE, seq)?;
    r.attr(NFTA_CHAIN_TABLE, TABLE)?;
    r.attr(NFTA_CHAIN_NAME, name)?;
    r.attr(NFTA_CHAIN_TYPE, kind)?;
    r.nest(NFTA_CHAIN_HOOK, |r| {
        be32(r, NFTA_HOOK_HOOKNUM, hook)?;
        be32(r, NFTA_HOOK_PRIORITY, PRIORITY_MANGLE as u32)
    })?;
    Ok(r.finish())
}

/// `NFT_MSG_NEWRULE` appending to `chain` the expressions `exprs` appends.
fn encode_rule(
    buf: &mut [u8],
    seq: u32,
    chain: &[u8],
    exprs: impl FnOnce(&mut Request) -> io::Result<()>,
) -> io::Result<usize> {
    let mut r = nft(buf, NFT_MSG_NEWRULE, CREATE | APPEND, seq)?;
    r.attr(NFTA_RULE_TABLE, TABLE)?;
    r.attr(NFTA_RULE_CHAIN, chain)?;
    r.nest(NFTA_RULE_EXPRESSIONS, exprs)?;
    Ok(r.finish())
}

/// The whole batch (the ruleset in the module's documentation), with sequence numbers `seq`
/// (the batch's begin) to `seq + MESSAGES + 1` (its end), into `buf`; returns its length.
///
/// # Errors
/// `ENOBUFS` when `buf` is too small.
pub(crate) fn encode_ruleset(buf: &mut [u8], seq: u32) -> io::Result<usize> {
    let mark = TRANSPARENT_MARK.to_ne_bytes();
    let mut len = 0;
    let mut next = |len: &mut usize,
                    f: &mut dyn FnMut(&mut [u8], u32) -> io::Result<usize>,
                    seq: u32|
     -> io::Result<()> {
        *len += f(buf.get_mut(*len..).ok_or(Errno::NOBUFS)?, seq)?;
        Ok(())
    };
    let batch = |ty: u16| {
        move |buf: &mut [u8], seq: u32| {
            let r = nfnl(buf, ty, REQUEST, seq, NFPROTO_UNSPEC, NFNL_SUBSYS_NFTABLES)?;
            Ok(r.finish())
        }
    };
    next(&mut len, &mut batch(BATCH_BEGIN), seq)?;
    next(
        &mut len,
        &mut |buf, seq| {
            let mut r = nft(buf, NFT_MSG_NEWTABLE, 0, seq)?;
            r.attr(NFTA_TABLE_NAME, TABLE)?;
            be32(&mut r, NFTA_TABLE_FLAGS, 0)?;
            Ok(r.finish())
        },
        seq.wrapping_add(1),
    )?;
    next(
        &mut len,
        &mut |buf, seq| encode_chain(buf, seq, OUTPUT, b"route\0", NF_INET_LOCAL_OUT),
        seq.wrapping_add(2),
    )?;
    next(
        &mut len,
        &mut |buf, seq| encode_chain(buf, seq, PREROUTING, b"filter\0", NF_INET_PRE_ROUTING),
        seq.wrapping_add(3),
    )?;
    // meta mark 100 ct direction original ct mark set 100 meta mark set 0
    next(
        &mut len,
        &mut |buf, seq| {
            encode_rule(buf, seq, OUTPUT, |r| {
                meta_load(r, NFT_META_MARK)?;
                cmp_eq(r, &mark)?;
                ct_load(r, NFT_CT_DIRECTION)?;
                cmp_eq(r, &[IP_CT_DIR_ORIGINAL])?;
                immediate(r, &mark)?;
                ct_set(r, NFT_CT_MARK)?;
                immediate(r, &0u32.to_ne_bytes())?;
                meta_set(r, NFT_META_MARK)
            })
        },
        seq.wrapping_add(4),
    )?;
    // ct mark 100 meta mark set 100
    next(
        &mut len,
        &mut |buf, seq| {
            encode_rule(buf, seq, PREROUTING, |r| {
                ct_load(r, NFT_CT_MARK)?;
                cmp_eq(r, &mark)?;
                immediate(r, &mark)?;
                meta_set(r, NFT_META_MARK)
            })
        },
        seq.wrapping_add(MESSAGES),
    )?;
    next(
        &mut len,
        &mut batch(BATCH_END),
        seq.wrapping_add(MESSAGES + 1),
    )?;
    Ok(len)
}

/// Adds the table of the module's documentation to the calling thread's network namespace,
/// in one transaction: all of it or, on an error, nothing.
///
/// # Errors
/// A socket error, or the errno the kernel refused the batch with (for example `EPERM`
/// without CAP_NET_ADMIN, `EOPNOTSUPP` or `ENOENT` on a kernel without nf_tables or one of
/// its expressions); `ETIMEDOUT` when the acknowledgements do not all come within a second.
pub fn add_reply_marks() -> io::Result<()> {
    let fd = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        Some(rustix::net::netlink::NETFILTER),
    )?;
    // The kernel answers a batch while it takes it in; the timeout only bounds a surprise.
    rustix::net::sockopt::set_socket_timeout(
        &fd,
        rustix::net::sockopt::Timeout::Recv,
        Some(std::time::Duration::from_secs(1)),
    )?;
    let mut buf = [0u8; BUF_LEN];
    let first = 1;
    let len = encode_ruleset(&mut buf, first)?;
    let sent = retry(|| rustix::net::send(&fd, &buf[..len], SendFlags::empty()))?;
    if sent != len {
        return Err(Errno::MSGSIZE);
    }
    let last = first + MESSAGES;
    loop {
        let (n, _, from) = match retry(|| rustix::net::recvfrom(&fd, &mut buf, RecvFlags::empty()))
        {
            Err(Errno::AGAIN) => return Err(Errno::TIMEDOUT),
            r => r?,
        };
        if !from_kernel(from) {
            continue;
        }
        if let Some(result) = batch_reply(&buf[..n], first, last) {
            return result;
        }
    }
}

/// What one received datagram says about the batch whose messages run from `first` (its
/// begin) to `last` (its last acknowledged message): an error for any of them fails it
/// (the kernel then undoes all of it, and errors come before the acknowledgements that
/// follow them), the acknowledgement of `last` ends it, anything else says nothing yet.
fn batch_reply(reply: &[u8], first: u32, last: u32) -> Option<io::Result<()>> {
    for seq in first..=last {
        if let Some(Err(e)) = scan_reply(reply, seq) {
            return Some(Err(e));
        }
    }
    scan_reply(reply, last)
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;

    /// What nftables 1.0.6 (Debian 12) sends for `nft -f` of the ruleset in the module's
    /// documentation, taken with `strace -e trace=sendmsg -e write=3` in a fresh network
    /// namespace: sequence numbers 0 to 6, and no message asks for an acknowledgement.
    const NFT_1_0_6: &[&str] = &[
        // batch begin
        "140000001000010000000000000000000000000a",
        // table
        "2c000000000a010001000000000000000100000010000100726f6f746c6573736b6974000800020000000000",
        // chain output
        "50000000030a010402000000000000000100000010000100726f6f746c6573736b6974000b0003006f75747075740000",
        "0a000700726f75746500000014000480080001000000000308000200ffffff6a",
        // chain prerouting
        "54000000030a010403000000000000000100000010000100726f6f746c6573736b6974000f000300707265726f757469",
        "6e6700000b00070066696c746572000014000480080001000000000008000200ffffff6a",
        // rule output
        "6c010000060a010c04000000000000000100000010000100726f6f746c6573736b6974000b0002006f75747075740000",
        "3c01048024000180090001006d6574610000000014000280080002000000000308000100000000012c00018008000100",
        "636d700020000280080001000000000108000200000000000c0003800800010064000000200001800700010063740000",
        "14000280080002000000000108000100000000012c00018008000100636d700020000280080001000000000108000200",
        "000000000c00038005000100000000002c0001800e000100696d6d656469617465000000180002800800010000000001",
        "0c000280080001006400000020000180070001006374000014000280080002000000000308000400000000012c000180",
        "0e000100696d6d6564696174650000001800028008000100000000010c00028008000100000000002400018009000100",
        "6d657461000000001400028008000200000000030800030000000001",
        // rule prerouting
        "d4000000060a010c05000000000000000100000010000100726f6f746c6573736b6974000f000200707265726f757469",
        "6e670000a000048020000180070001006374000014000280080002000000000308000100000000012c00018008000100",
        "636d700020000280080001000000000108000200000000000c00038008000100640000002c0001800e000100696d6d65",
        "64696174650000001800028008000100000000010c000280080001006400000024000180090001006d65746100000000",
        "1400028008000200000000030800030000000001",
        // batch end
        "140000001100010006000000000000000000000a",
    ];

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Splits a batch into its messages by their length fields.
    fn messages(mut b: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        while b.len() >= 4 {
            let len = u32::from_ne_bytes(b[..4].try_into().unwrap()) as usize;
            let (m, rest) = b.split_at(len.div_ceil(4) * 4);
            out.push(m);
            b = rest;
        }
        out
    }

    #[test]
    fn the_batch_is_what_nft_sends_plus_acknowledgements() {
        let mut expect = hex(&NFT_1_0_6.concat());
        // The five nf_tables messages (not the batch's begin and end) ask for an ACK here.
        let mut off = 0;
        for i in 0..7 {
            let len = u32::from_ne_bytes(expect[off..off + 4].try_into().unwrap()) as usize;
            if (1..=5).contains(&i) {
                expect[off + 6] |= nl::NLM_F_ACK as u8;
            }
            off += len;
        }
        assert_eq!(off, expect.len());
        let mut buf = [0xAAu8; BUF_LEN];
        let len = encode_ruleset(&mut buf, 0).unwrap();
        // Message by message first, for a readable failure.
        for (i, (got, want)) in messages(&buf[..len])
            .into_iter()
            .zip(messages(&expect))
            .enumerate()
        {
            assert_eq!(got, want, "message {i}");
        }
        assert_eq!(&buf[..len], &expect[..]);
        assert!(len <= BUF_LEN / 2, "an error reply echoing it still fits");
    }

    #[test]
    fn sequence_numbers_count_from_the_batch_begin() {
        let mut buf = [0u8; BUF_LEN];
        let len = encode_ruleset(&mut buf, 41).unwrap();
        let seqs: Vec<u32> = messages(&buf[..len])
            .iter()
            .map(|m| u32::from_ne_bytes(m[8..12].try_into().unwrap()))
            .collect();
        assert_eq!(seqs, (41..=41 + MESSAGES + 1).collect::<Vec<_>>());
    }

    #[test]
    fn a_short_buffer_is_an_error_not_a_panic() {
        let mut buf = [0u8; BUF_LEN];
        let full = encode_ruleset(&mut buf, 1).unwrap();
        for len in [0, 4, 19, 20, 63, 64, 300, full - 1] {
            assert_eq!(
                encode_ruleset(&mut buf[..len], 1),
                Err(Errno::NOBUFS),
                "{len}"
            );
        }
    }

    /// An `NLMSG_ERROR` for `seq` with `code` (0: an acknowledgement).
    fn error_msg(seq: u32, code: i32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&36u32.to_ne_bytes());
        m.extend_from_slice(&(nl::NLMSG_ERROR as u16).to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&code.to_ne_bytes());
        m.extend_from_slice(&[0; 16]);
        m
    }

    #[test]
    fn replies() {
        // An acknowledgement of an earlier message says nothing yet; the last one ends it.
        assert_eq!(batch_reply(&error_msg(3, 0), 1, 6), None);
        assert_eq!(batch_reply(&error_msg(6, 0), 1, 6), Some(Ok(())));
        // An error for any message of the batch, the begin included, fails it.
        assert_eq!(batch_reply(&error_msg(1, -1), 1, 6), Some(Err(Errno::PERM)));
        assert_eq!(
            batch_reply(&error_msg(4, -95), 1, 6),
            Some(Err(Errno::OPNOTSUPP))
        );
        let mut both = error_msg(2, -2);
        both.extend(error_msg(6, 0));
        assert_eq!(batch_reply(&both, 1, 6), Some(Err(Errno::NOENT)));
        // Other sequence numbers and garbage are not answers.
        assert_eq!(batch_reply(&error_msg(7, -1), 1, 6), None);
        assert_eq!(batch_reply(&[1, 2, 3], 1, 6), None);
        assert_eq!(batch_reply(&[], 1, 6), None);
    }
}
