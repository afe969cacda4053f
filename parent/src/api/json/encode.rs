//! JSON encoding of the API objects (spec, status, info, error) with Go's field names and
//! `omitempty`, and Go's `json.Indent`.

use std::fmt::Write as _;

use crate::api::Info;
use crate::port::{PortSpec, PortStatus};

pub(crate) use crate::gojson::write_str;

/// Writes `{` … `}` with `"key":` prefixes and commas managed by [`Obj::key`].
struct Obj<'a> {
    pub(super) out: &'a mut String,
    pub(super) first: bool,
}

impl<'a> Obj<'a> {
    pub(super) fn new(out: &'a mut String) -> Obj<'a> {
        out.push('{');
        Obj { out, first: true }
    }

    pub(super) fn key(&mut self, k: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push('"');
        self.out.push_str(k);
        self.out.push_str("\":");
        self.out
    }

    pub(super) fn str(&mut self, k: &str, v: &str) {
        write_str(self.key(k), v);
    }

    fn num(&mut self, k: &str, v: i64) {
        let _ = write!(self.key(k), "{v}");
    }

    pub(super) fn end(self) {
        self.out.push('}');
    }
}

/// A list of strings; `null` when empty, as Go writes a nil slice.
fn write_str_list(out: &mut String, list: &[String]) {
    if list.is_empty() {
        out.push_str("null");
        return;
    }
    for (i, s) in list.iter().enumerate() {
        out.push(if i == 0 { '[' } else { ',' });
        write_str(out, s);
    }
    out.push(']');
}

/// Appends a `Spec` object. Every field is `omitempty`, in upstream's declaration order
/// (proto, parentIP, parentPort, childPort, childIP).
pub(crate) fn write_spec(out: &mut String, spec: &PortSpec) {
    let mut o = Obj::new(out);
    if !spec.proto.is_empty() {
        o.str("proto", &spec.proto);
    }
    if !spec.parent_ip.is_empty() {
        o.str("parentIP", &spec.parent_ip);
    }
    if spec.parent_port != 0 {
        o.num("parentPort", spec.parent_port);
    }
    if spec.child_port != 0 {
        o.num("childPort", spec.child_port);
    }
    if !spec.child_ip.is_empty() {
        o.str("childIP", &spec.child_ip);
    }
    o.end();
}

/// Appends a `Status` object: `{"id":1,"spec":{…}}`.
pub fn write_status(out: &mut String, status: &PortStatus) {
    let mut o = Obj::new(out);
    o.num("id", i64::from(status.id));
    write_spec(o.key("spec"), &status.spec);
    o.end();
}

/// The body of `GET /v1/ports`: an array of statuses, or `null` when there are none.
pub(crate) fn encode_status_list(list: &[PortStatus]) -> String {
    let mut out = String::new();
    if list.is_empty() {
        out.push_str("null");
        return out;
    }
    for (i, s) in list.iter().enumerate() {
        out.push(if i == 0 { '[' } else { ',' });
        write_status(&mut out, s);
    }
    out.push(']');
    out
}

/// The body of `GET /v1/info`, compact.
pub fn encode_info(info: &Info) -> String {
    let mut out = String::new();
    let mut o = Obj::new(&mut out);
    o.str("apiVersion", &info.api_version);
    o.str("version", &info.version);
    o.str("stateDir", &info.state_dir);
    o.num("childPID", i64::from(info.child_pid));
    if let Some(n) = &info.network_driver {
        let mut no = Obj::new(o.key("networkDriver"));
        no.str("driver", &n.driver);
        if !n.dns.is_empty() {
            write_str_list(no.key("dns"), &n.dns);
        }
        if !n.child_ip.is_empty() {
            no.str("childIP", &n.child_ip);
        }
        if n.dynamic_child_ip {
            no.key("dynamicChildIP").push_str("true");
        }
        no.end();
    }
    if let Some(p) = &info.port_driver {
        let mut po = Obj::new(o.key("portDriver"));
        po.str("driver", &p.driver);
        write_str_list(po.key("protos"), &p.protos);
        if p.disallow_loopback_child_ip {
            po.key("disallowLoopbackChildIP").push_str("true");
        }
        po.end();
    }
    o.end();
    out
}

/// An error body: `{"message":"…"}` and a newline, as Go's `json.Encoder` writes it.
pub(crate) fn encode_error(message: &str) -> String {
    let mut out = String::new();
    let mut o = Obj::new(&mut out);
    o.str("message", message);
    o.end();
    out.push('\n');
    out
}

/// Go's `json.Indent(compact, "", "    ")` for JSON we wrote ourselves (no whitespace outside
/// strings): one member per line, `"key": value`, empty objects and arrays kept as `{}`/`[]`.
pub fn indent(compact: &str) -> String {
    fn newline(out: &mut String, depth: usize) {
        out.push('\n');
        for _ in 0..depth {
            out.push_str("    ");
        }
    }
    let mut out = String::with_capacity(compact.len() * 2);
    let (mut depth, mut need_indent, mut in_str, mut escaped) = (0usize, false, false, false);
    for c in compact.chars() {
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
            continue;
        }
        if need_indent && c != '}' && c != ']' {
            need_indent = false;
            depth += 1;
            newline(&mut out, depth);
        }
        match c {
            '"' => {
                in_str = true;
                out.push(c);
            }
            '{' | '[' => {
                need_indent = true;
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            '}' | ']' => {
                if need_indent {
                    need_indent = false;
                } else {
                    depth = depth.saturating_sub(1);
                    newline(&mut out, depth);
                }
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::json::tests::{full_info, spec};

    #[test]
    fn encodes_exact_bytes() {
        let mut out = String::new();
        write_spec(&mut out, &spec("tcp", "127.0.0.1", 8080, "", 80));
        assert_eq!(
            out,
            r#"{"proto":"tcp","parentIP":"127.0.0.1","parentPort":8080,"childPort":80}"#
        );
        out.clear();
        write_spec(&mut out, &spec("udp6", "::1", -1, "::2", 65535));
        assert_eq!(
            out,
            r#"{"proto":"udp6","parentIP":"::1","parentPort":-1,"childPort":65535,"childIP":"::2"}"#
        );
        out.clear();
        write_spec(&mut out, &PortSpec::default());
        assert_eq!(out, "{}");
        assert_eq!(encode_status_list(&[]), "null");
        let list = [
            PortStatus {
                id: 1,
                spec: spec("tcp", "", 80, "", 80),
            },
            PortStatus {
                id: 4294967295,
                spec: PortSpec::default(),
            },
        ];
        assert_eq!(
            encode_status_list(&list),
            r#"[{"id":1,"spec":{"proto":"tcp","parentPort":80,"childPort":80}},{"id":4294967295,"spec":{}}]"#
        );
        assert_eq!(
            encode_error("invalid ParentIP: \"<&>\"\t\u{1}\u{7f}\u{2028}é"),
            "{\"message\":\"invalid ParentIP: \\\"\\u003c\\u0026\\u003e\\\"\\t\\u0001\u{7f}\\u2028é\"}\n"
        );
    }

    #[test]
    fn indents_like_go() {
        let info = full_info();
        let expect = r#"{
    "apiVersion": "1.1.1",
    "version": "2.3.4",
    "stateDir": "/tmp/rk",
    "childPID": 15666,
    "networkDriver": {
        "driver": "slirp4netns",
        "dns": [
            "10.0.2.3",
            "fd00::3"
        ],
        "childIP": "10.0.2.100",
        "dynamicChildIP": true
    },
    "portDriver": {
        "driver": "slirp4netns",
        "protos": [
            "tcp",
            "tcp4",
            "udp",
            "udp4"
        ],
        "disallowLoopbackChildIP": true
    }
}"#;
        assert_eq!(indent(&encode_info(&info)), expect);
        assert_eq!(
            indent(r#"{"a":[],"b":{},"c":"x\":{[,"}"#),
            "{\n    \"a\": [],\n    \"b\": {},\n    \"c\": \"x\\\":{[,\"\n}"
        );
        assert_eq!(indent("null"), "null");
    }
}
