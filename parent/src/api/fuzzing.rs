//! The bodies of the fuzz targets for the API's parsers (HTTP requests and responses, the JSON
//! decoders, the port-spec grammar), shared by `fuzz/` and by the unit tests that replay the
//! committed corpus. Each must end in a value or an error for any input, never in a panic, and
//! checks what it can: prefixes, round trips, and agreement with a second implementation.

use std::rc::Rc;

use crate::api::http::{self, Limits, Parsed, Response};
use crate::api::{Backend, json, server};
use crate::port::fake::FakePorts;
use crate::port::spec::{is_ip, parse_ip};
use crate::port::{PortStatus, go_atoi, validate_port_spec};
use crate::port::{check_family, parse_port_spec};

/// The request parser on a connection's bytes, every parsed request routed and answered, and
/// the client's response parser on the same bytes.
pub fn http(data: &[u8]) {
    let backend = Backend {
        state_dir: "/s".into(),
        child_pid: 1,
        network_driver: None,
        port_driver: Some(Rc::new(FakePorts::default())),
    };
    for limits in [
        Limits::default(),
        Limits {
            max_header: 64,
            max_body: 16,
        },
    ] {
        let mut rest = data;
        // Pipelined requests, as the server consumes them.
        for _ in 0..16 {
            match http::parse_request(rest, limits) {
                Ok(Parsed::Done(req, used)) => {
                    assert!(used > 0 && used <= rest.len());
                    // The server's head deadline ends once a head is in: a whole request has one.
                    assert!(http::head_received(&rest[..used], limits));
                    assert!(req.body.len() <= limits.max_body);
                    // A request parses the same from exactly its own bytes.
                    assert_eq!(
                        http::parse_request(&rest[..used], limits),
                        Ok(Parsed::Done(req.clone(), used))
                    );
                    let answer = server::route(&backend, &req);
                    let mut out = Vec::new();
                    answer.write(&mut out, req.http10, req.keep_alive, false, 0);
                    let parsed = http::parse_response(&out, false, usize::MAX);
                    assert_eq!(
                        parsed.map(|r| r.map(|r| (r.status, r.body))),
                        Ok(Some((answer.status, answer.body)))
                    );
                    rest = &rest[used..];
                }
                Ok(Parsed::Partial { need, .. }) => {
                    assert!(need > rest.len());
                    // A body is awaited only after a whole head.
                    if need > rest.len() + 1 {
                        assert!(http::head_received(rest, limits));
                    }
                    break;
                }
                Err(reject) => {
                    assert!(reject.status >= 400 && !http::reason(reject.status).is_empty());
                    let mut out = Vec::new();
                    Response::rejected(reject).write(&mut out, false, false, false, 0);
                    break;
                }
            }
        }
    }
    for eof in [false, true] {
        if let Ok(Some(r)) = http::parse_response(data, eof, 1 << 16) {
            assert!(r.body.len() <= 1 << 16);
        }
    }
}

/// Every JSON decoder, with round trips through the encoder (compact and indented).
pub fn json(data: &[u8]) {
    if let Ok(end) = json::read_value(data) {
        assert!(end <= data.len());
    }
    if let Ok(spec) = json::decode_spec(data) {
        let mut out = String::new();
        json::write_spec(&mut out, &spec);
        assert_eq!(json::decode_spec(out.as_bytes()), Ok(spec.clone()));
        assert_eq!(json::decode_spec(json::indent(&out).as_bytes()), Ok(spec));
    }
    if let Ok(status) = json::decode_status(data) {
        let mut out = String::new();
        json::write_status(&mut out, &status);
        assert_eq!(json::decode_status(out.as_bytes()), Ok(status));
    }
    if let Ok(list) = json::decode_status_list(data) {
        let out = json::encode_status_list(&list);
        assert_eq!(json::decode_status_list(out.as_bytes()), Ok(list));
    }
    if let Ok(info) = json::decode_info(data) {
        let out = json::encode_info(&info);
        assert_eq!(json::decode_info(out.as_bytes()).as_ref(), Ok(&info));
        assert_eq!(json::decode_info(json::indent(&out).as_bytes()), Ok(info));
    }
    if let Some(message) = json::decode_error_message(data) {
        let out = json::encode_error(&message);
        assert_eq!(json::decode_error_message(out.as_bytes()), Some(message));
    }
}

/// The port-spec grammar: a parsed spec prints back to a string that parses to the same spec,
/// validation never panics, and `go_atoi` and `is_ip` agree with Rust's own parsers.
pub fn port_spec(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    assert_eq!(go_atoi(&text).ok(), text.parse::<i64>().ok());
    assert_eq!(
        is_ip(&text),
        text.parse::<std::net::IpAddr>().is_ok(),
        "{text:?}"
    );
    // Go's To4(): exactly the IPv4-mapped IPv6 addresses (::ffff:0:0/96) become IPv4 ones.
    if let Ok(std::net::IpAddr::V6(a)) = text.parse::<std::net::IpAddr>() {
        let o = a.octets();
        let mapped = o[..10] == [0; 10] && o[10..12] == [0xff, 0xff];
        assert_eq!(
            parse_ip(&text).is_some_and(|ip| ip.is_ipv4()),
            mapped,
            "{text:?}"
        );
    }
    let Ok(spec) = parse_port_spec(&text) else {
        return;
    };
    // The family check decides on the parent IP alone, and an IPv4 address always fits `tcp4`.
    let family = check_family(&spec);
    if let Err(e) = &family {
        assert!(e.ends_with("no suitable address found"), "{e}");
        assert!(spec.proto.ends_with('4') || spec.proto.ends_with('6'));
    }
    if spec.proto.ends_with('4') && parse_ip(&spec.parent_ip).is_some_and(|ip| ip.is_ipv4()) {
        assert_eq!(family, Ok(()));
    }
    assert!(spec.parent_ip.is_empty() || is_ip(&spec.parent_ip));
    assert!(spec.child_ip.is_empty() || is_ip(&spec.child_ip));
    let host = |ip: &str| {
        if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_string()
        }
    };
    let mut again = format!("{}:{}", host(&spec.parent_ip), spec.parent_port);
    if !spec.child_ip.is_empty() {
        again.push(':');
        again.push_str(&host(&spec.child_ip));
    }
    again.push_str(&format!(":{}/{}", spec.child_port, spec.proto));
    assert_eq!(parse_port_spec(&again), Ok(spec.clone()), "{again}");
    let existing = [PortStatus {
        id: 1,
        spec: spec.clone(),
    }];
    if validate_port_spec(&spec, &[]).is_ok() {
        assert_eq!(
            validate_port_spec(&spec, &existing),
            Err("conflict with ID 1".to_string())
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::fuzzing::replay;

    #[test]
    fn http_corpus_replays() {
        replay("http", super::http);
        for input in [
            &b"GET /v1/info HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/ports HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"POST /v1/ports HTTP/1.1\r\nHost: x\r\nContent-Length: 49\r\n\r\n{\"proto\":\"tcp\",\"parentPort\":8080,\"childPort\":80}DELETE /v1/ports/1 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /v1/ports HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nnull\r\n0\r\n\r\n",
            b"GET /v1//../%2e%2E/info?x HTTP/1.0\n\n",
            b"\r\n\r\nGET * HTTP/1.9\r\nHost: \xff\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999\r\n\r\n",
        ] {
            super::http(input);
        }
    }

    #[test]
    fn json_corpus_replays() {
        replay("json", super::json);
        for input in [
            &br#"{"proto":"tcp","parentIP":"::1","parentPort":8080,"childIP":"::2","childPort":80}"#[..],
            br#"[{"id":1,"spec":{"proto":"tcp"}},null,{"id":4294967295}]"#,
            br#"{"apiVersion":"1.1.1","childPID":-1,"networkDriver":{"dns":["a",null]},"portDriver":{"protos":[]}}"#,
            b"{\"message\":\"\\ud800\\udc00\\u0000<>&\\u2028\"}",
            b"{\"\\u0050arentPort\":-0,\"a\":[[[[{}]]]],\"proto\":\"\xff\xfe\"}",
            b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
            b"-1.5e+10x",
        ] {
            super::json(input);
        }
    }

    #[test]
    fn port_spec_corpus_replays() {
        replay("port_spec", super::port_spec);
        for input in [
            &b"127.0.0.1:8080:80/tcp"[..],
            b"[::ffff:1.2.3.4]:+1:[::]:-9223372036854775808/udp6",
            b":0:0/sctp",
            b" [ ::1 ] : 1 :2/tcp",
            b"1.2.3.4:1:1.2.3.5:2:80/tcp",
            b"-9223372036854775809",
            b"+",
        ] {
            super::port_spec(input);
        }
    }
}
