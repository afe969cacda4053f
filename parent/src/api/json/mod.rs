//! JSON for the API's fixed schema, written by hand: an encoder for spec, status, info and
//! error objects, and strict decoders that behave like Go's `encoding/json` where a client can
//! tell (field names, `omitempty`, `null` for an empty list, error texts).
//!
//! Decoding runs in two passes, as Go's does: a byte-at-a-time port of Go's syntax scanner
//! finds the first value and reports `invalid character 'b' looking for beginning of object key
//! string` and friends at the same byte Go would; then a cursor walks the checked value and
//! fills the typed fields, recording the first type mismatch in Go's words
//! (`json: cannot unmarshal string into Go struct field Spec.parentPort of type int`) and
//! skipping unknown keys. Neither pass recurses, so nesting depth cannot exhaust the stack
//! (Go's limit of 10000 levels is kept).

mod decode;
mod encode;

#[cfg(any(test, fuzzing))]
pub(crate) use decode::read_value;
pub(crate) use decode::{
    decode_error_message, decode_info, decode_spec, decode_status, decode_status_list,
};
pub(crate) use encode::{encode_error, encode_status_list, write_spec};
pub use encode::{encode_info, indent, write_status};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Info, NetworkDriverInfo};
    use crate::port::{PortDriverInfo, PortSpec, PortStatus};

    pub(super) fn spec(proto: &str, parent_ip: &str, pp: i64, child_ip: &str, cp: i64) -> PortSpec {
        PortSpec {
            proto: proto.into(),
            parent_ip: parent_ip.into(),
            parent_port: pp,
            child_ip: child_ip.into(),
            child_port: cp,
        }
    }

    pub(super) fn full_info() -> Info {
        Info {
            api_version: "1.1.1".into(),
            version: "2.3.4".into(),
            state_dir: "/tmp/rk".into(),
            child_pid: 15666,
            network_driver: Some(NetworkDriverInfo {
                driver: "slirp4netns".into(),
                dns: vec!["10.0.2.3".into(), "fd00::3".into()],
                child_ip: "10.0.2.100".into(),
                dynamic_child_ip: true,
            }),
            port_driver: Some(PortDriverInfo::slirp4netns()),
        }
    }

    #[test]
    fn info_round_trips() {
        let compact = concat!(
            r#"{"apiVersion":"1.1.1","version":"2.3.4","stateDir":"/tmp/rk","childPID":15666,"#,
            r#""networkDriver":{"driver":"slirp4netns","dns":["10.0.2.3","fd00::3"],"childIP":"10.0.2.100","dynamicChildIP":true},"#,
            r#""portDriver":{"driver":"slirp4netns","protos":["tcp","tcp4","udp","udp4"],"disallowLoopbackChildIP":true}}"#
        );
        assert_eq!(encode_info(&full_info()), compact);
        assert_eq!(decode_info(compact.as_bytes()), Ok(full_info()));

        // What upstream's server sent for builtin + slirp4netns.
        let upstream = concat!(
            r#"{"apiVersion":"1.1.1","version":"1.1.0","stateDir":"/tmp/rkgo","childPID":15666,"#,
            r#""networkDriver":{"driver":"slirp4netns","dns":["10.0.2.3"],"childIP":"10.0.2.100"},"#,
            r#""portDriver":{"driver":"builtin","protos":["tcp","tcp4","tcp6","udp","udp4","udp6"]}}"#
        );
        let info = decode_info(upstream.as_bytes()).unwrap();
        assert_eq!(info.port_driver, Some(PortDriverInfo::builtin()));
        assert_eq!(encode_info(&info), upstream);

        let host = Info {
            api_version: "1.1.1".into(),
            version: "2.3.4".into(),
            state_dir: "/s".into(),
            child_pid: 1,
            network_driver: None,
            port_driver: None,
        };
        let text = r#"{"apiVersion":"1.1.1","version":"2.3.4","stateDir":"/s","childPID":1}"#;
        assert_eq!(encode_info(&host), text);
        assert_eq!(decode_info(text.as_bytes()), Ok(host));
        let none = Info {
            network_driver: Some(NetworkDriverInfo {
                driver: "none".into(),
                ..Default::default()
            }),
            port_driver: Some(PortDriverInfo {
                driver: "x".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            encode_info(&none),
            r#"{"apiVersion":"","version":"","stateDir":"","childPID":0,"networkDriver":{"driver":"none"},"portDriver":{"driver":"x","protos":null}}"#
        );
    }

    #[test]
    fn statuses_round_trip() {
        let body = br#"[{"id":4,"spec":{"proto":"udp","parentPort":18207,"childPort":80}},{"id":1,"spec":{"proto":"tcp","parentIP":"127.0.0.1","parentPort":8080,"childPort":80,"childIP":"::1"}}]"#;
        let list = decode_status_list(body).unwrap();
        assert_eq!(
            list,
            vec![
                PortStatus {
                    id: 4,
                    spec: spec("udp", "", 18207, "", 80)
                },
                PortStatus {
                    id: 1,
                    spec: spec("tcp", "127.0.0.1", 8080, "::1", 80)
                },
            ]
        );
        assert_eq!(encode_status_list(&list).as_bytes(), body);
        assert_eq!(decode_status_list(b"null"), Ok(vec![]));
        assert_eq!(
            decode_status_list(b"[null]"),
            Ok(vec![PortStatus::default()])
        );
        assert_eq!(
            decode_status_list(b"{}"),
            Err("json: cannot unmarshal object into Go value of type []port.Status".into())
        );
        assert_eq!(
            decode_status_list(b"[1]"),
            Err("json: cannot unmarshal number into Go value of type port.Status".into())
        );
        assert_eq!(
            decode_status_list(br#"[{"spec":{"parentPort":"x"}}]"#),
            Err("json: cannot unmarshal string into Go struct field Spec.spec.parentPort of type int".into())
        );
        assert_eq!(
            decode_status(br#"{"id":1,"spec":{"proto":"tcp","parentIP":"::1","parentPort":8080,"childPort":80}}"#),
            Ok(PortStatus { id: 1, spec: spec("tcp", "::1", 8080, "", 80) })
        );
        assert_eq!(
            decode_status(br#"{"id":-1}"#),
            Err(
                "json: cannot unmarshal number -1 into Go struct field Status.id of type int"
                    .into()
            )
        );
        assert_eq!(
            decode_status(br#"{"spec":1}"#),
            Err(
                "json: cannot unmarshal number into Go struct field Status.spec of type port.Spec"
                    .into()
            )
        );
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            decode_error_message(b"{\"message\":\"conflict with ID 2\"}\n"),
            Some("conflict with ID 2".into())
        );
        assert_eq!(
            decode_error_message(b"{\"Message\":\"a\",\"x\":1}"),
            Some("a".into())
        );
        assert_eq!(decode_error_message(b"{}"), Some(String::new()));
        assert_eq!(decode_error_message(b"null"), Some(String::new()));
        for bad in [
            &b""[..],
            b"404 page not found\n",
            b"{\"message\":1}",
            b"{\"message\":\"a\"}x",
            b"[]",
            b"\"m\"",
        ] {
            assert_eq!(
                decode_error_message(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
