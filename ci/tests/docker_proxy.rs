//! `rootlesskit-docker-proxy` as Docker (before v28) uses it, run as the unprivileged test user
//! inside `rootlesskit` with a fake `docker-proxy` first in `$PATH` that records its arguments:
//! the port is published through the API while the shim runs and removed on SIGINT, the real
//! proxy listens on the child IP, a protocol the driver lacks is skipped with success, and
//! without a port driver the real proxy replaces the shim with the same arguments.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use ci::{Scratch, ok, rootlesskit, skip};

/// Records its arguments, reports success on the status pipe as the real one does once it
/// listens, then stays until killed (or for `$FAKE_SLEEP` seconds).
const FAKE_PROXY: &str = "#!/bin/sh
echo \"$@\" > \"$FAKE_DIR/args\"
printf '0\\n' >&3
exec sleep \"${FAKE_SLEEP:-1000}\"
";

fn bin(name: &str) -> String {
    ci::bin_dir().join(name).display().to_string()
}

/// A scratch dir with `bin/docker-proxy`, the fake.
fn scratch(name: &str) -> Scratch {
    let dir = Scratch::new(name);
    let bin_dir = dir.join("bin");
    fs::create_dir_all(&bin_dir).unwrap();
    fs::set_permissions(&bin_dir, fs::Permissions::from_mode(0o755)).unwrap();
    let fake = bin_dir.join("docker-proxy");
    fs::write(&fake, FAKE_PROXY).unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn publishes_through_builtin_and_removes_on_sigint() {
    if !Path::new("/usr/bin/slirp4netns").exists() {
        skip!("slirp4netns is not installed");
    }
    let dir = scratch("dproxy-builtin");
    let port = ci::ports::free_port();
    let script = format!(
        "set -u
export FAKE_DIR={d} PATH={d}/bin:$PATH
cd {d}
{shim} -container-ip 10.0.0.5 -container-port 8000 -host-ip 127.0.0.1 -host-port {port} -proto tcp 3>status 2>shim.err &
pid=$!
i=0
until grep -q 0 status 2>/dev/null; do
  i=$((i+1)); if [ $i -gt 150 ]; then echo 'no status'; cat status shim.err; exit 1; fi; sleep 0.1
done
{ctl} list-ports
echo ---
cat args
echo ---
kill -INT $pid
wait $pid
echo \"shim exit $?\"
echo ---
{ctl} list-ports
echo ---
{shim} -container-ip 10.0.0.5 -container-port 8000 -host-ip 127.0.0.1 -host-port {port} -proto sctp 3>status2
echo \"sctp exit $?\"
cat status2
echo ---
{ctl} list-ports
",
        d = dir.path.display(),
        shim = bin("rootlesskit-docker-proxy"),
        ctl = bin("rootlessctl"),
    );
    let o = rootlesskit([
        format!("--state-dir={}", dir.join("state").display()),
        "--net=slirp4netns".into(),
        "--disable-host-loopback".into(),
        "--port-driver=builtin".into(),
        "sh".into(),
        "-c".into(),
        script,
    ])
    .timeout(Duration::from_secs(60))
    .output();
    ok(&o);
    let parts: Vec<&str> = o.stdout.split("---\n").collect();
    assert_eq!(parts.len(), 6, "{}\n{}", o.stdout, o.stderr);

    // While the shim runs: the host port forwards to the same port on the child's loopback.
    let rows: Vec<Vec<&str>> = parts[0]
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let p = port.to_string();
    assert_eq!(rows.len(), 1, "{}", parts[0]);
    assert_eq!(
        rows[0][1..],
        ["tcp4", "127.0.0.1", p.as_str(), "127.0.0.1", p.as_str()],
        "{}",
        parts[0]
    );
    // The real proxy listens there, in front of the container.
    assert_eq!(
        parts[1],
        format!(
            "-container-ip 10.0.0.5 -container-port 8000 -host-ip 127.0.0.1 -host-port {port} -proto tcp\n"
        )
    );
    assert_eq!(parts[2], "shim exit 0\n", "{}", o.stderr);
    // SIGINT removed the port.
    assert_eq!(parts[3].lines().count(), 1, "{}", parts[3]);
    assert!(parts[3].starts_with("ID"), "{}", parts[3]);
    // sctp: the builtin driver has no sctp4, so nothing is published and success is reported.
    assert_eq!(parts[4], "sctp exit 0\n0\n", "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!(
            "warning: protocol \"sctp4\" is not supported by the RootlessKit port driver \"builtin\", discarding request for \"127.0.0.1:{port}\""
        )),
        "{}",
        o.stderr
    );
    assert_eq!(parts[5].lines().count(), 1, "{}", parts[5]);
}

#[test]
fn execs_the_real_proxy_without_a_port_driver() {
    let dir = scratch("dproxy-exec");
    let script = format!(
        "export FAKE_DIR={d} FAKE_SLEEP=0 PATH={d}/bin:$PATH
cd {d}
{shim} --host-ip=::1 -host-port 8080 -container-ip 10.0.0.5 -container-port=80 -proto udp 3>status
echo \"exit $?\"
cat args status
",
        d = dir.path.display(),
        shim = bin("rootlesskit-docker-proxy"),
    );
    let o = rootlesskit(["--net=none", "sh", "-c", script.as_str()])
        .timeout(Duration::from_secs(30))
        .output();
    ok(&o);
    assert_eq!(
        o.stdout,
        "exit 0\n--host-ip=::1 -host-port 8080 -container-ip 10.0.0.5 -container-port=80 -proto udp\n0\n",
        "{}",
        o.stderr
    );
}

#[test]
fn reports_errors_on_the_status_pipe() {
    let dir = scratch("dproxy-error");
    let script = format!(
        "cd {d}
unset ROOTLESSKIT_STATE_DIR
{shim} -host-port 8080 3>status
echo \"exit $?\"
cat status; echo
{shim} -host-port x
echo \"exit $?\"
",
        d = dir.path.display(),
        shim = bin("rootlesskit-docker-proxy"),
    );
    let o = rootlesskit(["--net=host", "sh", "-c", script.as_str()])
        .timeout(Duration::from_secs(30))
        .output();
    ok(&o);
    assert_eq!(
        o.stdout,
        "exit 1\n1\n$ROOTLESSKIT_STATE_DIR needs to be set\nexit 1\n"
    );
    assert_eq!(
        o.stderr,
        "error: $ROOTLESSKIT_STATE_DIR needs to be set\nerror: invalid value \"x\" for flag -host-port: parse error\n"
    );
}
