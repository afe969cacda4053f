//! Port specs against address families, run as the unprivileged test user: a parent IP of the
//! other family (`[::1]…/tcp4`, `[2001:db8::1]…/udp4`) is refused by the API (400) and at start
//! (`-p`) and nothing listens; IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`) are the IPv4
//! address as parent IP and as child IP, with the builtin and the slirp4netns port drivers;
//! a bad `-p` is refused before the child exists.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use ci::ports::{Running, free_port, host_ipv4, seen_from};
use ci::{Scratch, rootlesskit, skip};

/// Inside the namespace: a dual-stack TCP echo server on [::]:8000, and on 127.0.0.1:8002 a
/// server that tells each connection the address it came from.
const SERVERS: &str = "import socket,threading
def peer():
  p=socket.socket();p.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
  p.bind(('127.0.0.1',8002));p.listen(64)
  while True:
    c,a=p.accept();c.sendall(('%s %d\\n'%a).encode());c.close()
threading.Thread(target=peer,daemon=True).start()
s=socket.socket(socket.AF_INET6)
s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,0)
s.bind(('::',8000));s.listen(64)
def h(c):
  while True:
    d=c.recv(65536)
    if not d: break
    c.sendall(d)
  c.close()
while True:
  c,_=s.accept();threading.Thread(target=h,args=(c,),daemon=True).start()
";

fn have_tools() -> bool {
    Path::new("/usr/bin/slirp4netns").exists() && Path::new("/usr/bin/python3").exists()
}

/// rootlesskit with slirp4netns, `driver` and `extra` flags, running [`SERVERS`].
fn start(name: &str, driver: &str, extra: &[String]) -> Running {
    let mut flags = vec![
        "--net=slirp4netns".into(),
        "--disable-host-loopback".into(),
        format!("--port-driver={driver}"),
    ];
    flags.extend(extra.iter().cloned());
    Running::start(name, &flags, SERVERS)
}

/// One raw `POST /v1/ports`: the status code and the body.
fn post_port(r: &Running, json: &str) -> (u16, String) {
    ci::api_request(&r.state.join("api.sock"), "POST", "/v1/ports", json)
}

/// The local addresses (`0100007F:1F90` style, as the kernel prints them) of every socket on
/// `port` in the host's network namespace: TCP listeners and bound UDP sockets, both families.
fn bound_on(port: u16) -> Vec<String> {
    let mut found = Vec::new();
    for (file, tcp) in [
        ("/proc/net/tcp", true),
        ("/proc/net/tcp6", true),
        ("/proc/net/udp", false),
        ("/proc/net/udp6", false),
    ] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state)) = (cols.get(1), cols.get(3)) else {
                continue;
            };
            let on_port = local
                .rsplit_once(':')
                .is_some_and(|(_, p)| u16::from_str_radix(p, 16) == Ok(port));
            if on_port && (!tcp || *state == "0A") {
                found.push(format!("{file} {local}"));
            }
        }
    }
    found
}

/// Sends `ping` and expects it back.
fn echoes(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut back = [0u8; 4];
    s.write_all(b"ping").is_ok() && s.read_exact(&mut back).is_ok() && &back == b"ping"
}

fn wait_echo(addr: SocketAddr) {
    assert!(
        ci::wait_until(Duration::from_secs(15), || echoes(addr)),
        "no echo through {addr}"
    );
}

#[test]
fn api_refuses_a_parent_ip_of_the_other_family() {
    if !have_tools() {
        skip!("slirp4netns or python3 is not installed");
    }
    let r = start("families-api", "builtin", &[]);
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    for (json, proto, ip, port) in [
        (
            format!(
                r#"{{"proto":"tcp4","parentIP":"::1","parentPort":{p1},"childIP":"127.0.0.1","childPort":8000}}"#
            ),
            "tcp4",
            "::1",
            p1,
        ),
        (
            format!(
                r#"{{"proto":"udp4","parentIP":"2001:db8::1","parentPort":{p2},"childPort":8000}}"#
            ),
            "udp4",
            "2001:db8::1",
            p2,
        ),
        (
            format!(
                r#"{{"proto":"tcp6","parentIP":"127.0.0.1","parentPort":{p3},"childPort":8000}}"#
            ),
            "tcp6",
            "127.0.0.1",
            p3,
        ),
    ] {
        let (code, body) = post_port(&r, &json);
        assert_eq!(code, 400, "{json}: {body}");
        let want = format!("listen {proto}: address {ip}: no suitable address found");
        assert!(body.contains(&want), "{json}: {body}");
        assert_eq!(bound_on(port), Vec::<String>::new(), "{json}");
    }
    // The same through rootlessctl, upstream's example.
    let spec = format!("[::1]:{p1}:127.0.0.1:7001/tcp4");
    let o = r.ctl(&["add-ports", &spec]);
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert_eq!(
        o.stderr.trim(),
        "error: listen tcp4: address ::1: no suitable address found"
    );
    assert_eq!(bound_on(p1), Vec::<String>::new());
    assert_eq!(r.ctl(&["list-ports", "--json"]).stdout, "");
}

#[test]
fn start_refuses_a_parent_ip_of_the_other_family() {
    if !have_tools() {
        skip!("slirp4netns or python3 is not installed");
    }
    let tmp = Scratch::new("families-start");
    let (p1, p2) = (free_port(), free_port());
    for (spec, want, port) in [
        (
            format!("[::1]:{p1}:80/tcp4"),
            format!(
                "failed to expose port {{tcp4 ::1 {p1} 80 }}: listen tcp4: address ::1: no suitable address found"
            ),
            p1,
        ),
        (
            format!("[2001:db8::1]:{p2}:127.0.0.1:80/udp4"),
            format!(
                "failed to expose port {{udp4 2001:db8::1 {p2} 80 127.0.0.1}}: listen udp4: address 2001:db8::1: no suitable address found"
            ),
            p2,
        ),
    ] {
        // `sleep` would hold the port open long enough to be seen, if it were bound.
        let args = [
            "--net=slirp4netns",
            "--port-driver=builtin",
            "-p",
            spec.as_str(),
            "sleep",
            "3",
        ];
        ci::assert_rejected(&args, &want, &tmp.path);
        assert_eq!(bound_on(port), Vec::<String>::new(), "{spec}");
    }
}

#[test]
fn a_bad_publish_spec_is_refused_before_the_child_exists() {
    if !have_tools() {
        skip!("slirp4netns is not installed");
    }
    let tmp = Scratch::new("families-early");
    for (spec, want) in [
        (
            "127.0.0.1:80:x/tcp",
            r#"unexpected ChildPort in PortSpec string: "127.0.0.1:80:x/tcp": strconv.Atoi: parsing "x": invalid syntax"#,
        ),
        ("", r#"missing proto in PortSpec string: """#),
        (
            "127.0.0.1:8080:80/tcp,",
            r#"missing proto in PortSpec string: """#,
        ),
    ] {
        let args = [
            "--net=slirp4netns",
            "--port-driver=builtin",
            "-p",
            spec,
            "true",
        ];
        let o = rootlesskit(args)
            .env("TMPDIR", tmp.path.to_str().unwrap())
            .timeout(Duration::from_secs(30))
            .output();
        assert_eq!(o.code, 1, "{spec:?}: {}", o.stderr);
        assert_eq!(
            o.stderr.lines().last(),
            Some(format!("[rootlesskit:parent] error: {want}").as_str()),
            "{spec:?}"
        );
        // Only the parent speaks: no child was made, so none of its warnings shows.
        for line in o.stderr.lines() {
            assert!(
                line.starts_with("[rootlesskit:parent] "),
                "{spec:?}: {line}"
            );
        }
        assert_eq!(
            std::fs::read_dir(&tmp.path).unwrap().count(),
            0,
            "{spec:?} left a state dir"
        );
    }
}

#[test]
fn a_mapped_parent_ip_listens_on_the_ipv4_address() {
    if !have_tools() {
        skip!("slirp4netns or python3 is not installed");
    }
    let (p1, p2) = (free_port(), free_port());
    let r = start(
        "families-mapped-parent",
        "builtin",
        &["-p".into(), format!("[::ffff:127.0.0.1]:{p1}:8000/tcp")],
    );
    let loopback = |port: u16| format!("0100007F:{port:04X}");
    wait_echo(format!("127.0.0.1:{p1}").parse().unwrap());
    let bound = bound_on(p1);
    assert_eq!(bound.len(), 1, "{bound:?}");
    assert!(
        bound[0] == format!("/proc/net/tcp {}", loopback(p1)),
        "{bound:?}"
    );

    // Through the API, with tcp4; the spec is listed as it was given, as upstream does.
    let spec = format!("[::ffff:127.0.0.1]:{p2}:8000/tcp4");
    let o = r.ctl(&["add-ports", &spec]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    wait_echo(format!("127.0.0.1:{p2}").parse().unwrap());
    assert_eq!(bound_on(p2), [format!("/proc/net/tcp {}", loopback(p2))]);
    let o = r.ctl(&["list-ports", "--json"]);
    assert!(
        o.stdout.contains(&format!(
            r#""parentIP":"::ffff:127.0.0.1","parentPort":{p2}"#
        )),
        "{}",
        o.stdout
    );
    // tcp6 has no IPv4 address to give it.
    let (code, body) = post_port(
        &r,
        &format!(
            r#"{{"proto":"tcp6","parentIP":"::ffff:127.0.0.1","parentPort":{p1},"childPort":8000}}"#
        ),
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("listen tcp6: address ::ffff:127.0.0.1: no suitable address found"),
        "{body}"
    );
}

#[test]
fn a_mapped_child_ip_is_the_ipv4_address_with_the_builtin_driver() {
    if !have_tools() {
        skip!("slirp4netns or python3 is not installed");
    }
    let Some(ip) = host_ipv4() else {
        skip!("the host has no non-loopback IPv4 address");
    };
    let (p1, p2) = (free_port(), free_port());
    let r = start(
        "families-mapped-child",
        "builtin",
        &[
            "--source-ip-transparent=true".into(),
            "-p".into(),
            format!("0.0.0.0:{p1}:[::ffff:127.0.0.1]:8002/tcp"),
        ],
    );
    // The target is 127.0.0.1 itself: a loopback target, so the client's address is kept
    // inside, exactly as with `0.0.0.0:P:127.0.0.1:8002/tcp`.
    let to: SocketAddr = format!("{ip}:{p1}").parse().unwrap();
    let got = ci::wait_for(Duration::from_secs(15), || seen_from(to));
    let (client, seen) = got.unwrap_or_else(|| panic!("no answer through {to}"));
    assert_eq!(seen, client);

    let o = r.ctl(&[
        "add-ports",
        &format!("127.0.0.1:{p2}:[::ffff:127.0.0.1]:8000/tcp"),
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    wait_echo(format!("127.0.0.1:{p2}").parse().unwrap());
}

#[test]
fn a_mapped_child_ip_works_with_the_slirp4netns_driver() {
    if !have_tools() {
        skip!("slirp4netns or python3 is not installed");
    }
    let (p1, p2) = (free_port(), free_port());
    // Docker 28 sends the child's address in this form to the slirp4netns driver.
    let r = start(
        "families-mapped-s4nn",
        "slirp4netns",
        &[
            "-p".into(),
            format!("127.0.0.1:{p1}:[::ffff:10.0.2.100]:8000/tcp"),
        ],
    );
    wait_echo(format!("127.0.0.1:{p1}").parse().unwrap());
    let spec = format!("[::ffff:127.0.0.1]:{p2}:[::ffff:10.0.2.100]:8000/tcp4");
    let o = r.ctl(&["add-ports", &spec]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    wait_echo(format!("127.0.0.1:{p2}").parse().unwrap());
    let o = r.ctl(&["list-ports", "--json"]);
    assert!(
        o.stdout.contains(r#""childIP":"::ffff:10.0.2.100""#),
        "{}",
        o.stdout
    );
    // A real IPv6 child address still cannot go through slirp4netns.
    let o = r.ctl(&[
        "add-ports",
        &format!("127.0.0.1:{}:[fd00::1]:8000/tcp", free_port()),
    ]);
    assert_eq!(o.code, 1);
    assert_eq!(o.stderr.trim(), "error: unsupported IP (v6?): fd00::1");
}
