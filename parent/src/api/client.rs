//! The API client (`rootlessctl`, and later `rootlesskit-docker-proxy`): one connection per
//! call, and upstream's client error texts (`stat /x: no such file or directory`,
//! `Get "http://rootlesskit/v1/info": dial unix /x: connect: connection refused`, the server's
//! `message`, or `unexpected HTTP status Not Found, body="404 page not found\n"`).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use crate::api::Info;
use crate::api::http::{self, ClientResponse};
use crate::api::json;
use crate::port::{PortSpec, PortStatus};

/// Largest response body the client reads (upstream has no limit; a list of every possible
/// port fits easily).
const MAX_RESPONSE_BODY: usize = 16 << 20;

/// Upstream reads at most this much of an error body.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// A client of one API socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// A client for `socket`, which must exist (upstream `stat`s it first).
    ///
    /// # Errors
    /// `stat /x/api.sock: no such file or directory`.
    pub fn new(socket: &Path) -> Result<Client, String> {
        std::fs::metadata(socket)
            .map_err(|e| format!("stat {}: {}", socket.display(), sys::errno::text(&e)))?;
        Ok(Client {
            socket: socket.to_path_buf(),
        })
    }

    /// One request; the answer whatever its status.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<ClientResponse, String> {
        // Go's `url.Error`: `Get "http://rootlesskit/v1/info": <cause>`.
        let op = match method {
            "POST" => "Post",
            "DELETE" => "Delete",
            _ => "Get",
        };
        let url = format!("http://rootlesskit{path}");
        let fail = |cause: &str| format!("{op} {}: {cause}", sys::golang::quote(url.as_bytes()));
        let sock = self.socket.display();
        let io_fail = |what: &str, e: std::io::Error| {
            fail(&format!(
                "{what} unix {sock}: {what}: {}",
                sys::errno::text(&e)
            ))
        };
        let mut stream = UnixStream::connect(&self.socket).map_err(|e| {
            fail(&format!(
                "dial unix {sock}: connect: {}",
                sys::errno::text(&e)
            ))
        })?;
        stream
            .write_all(&http::encode_request(method, path, body))
            .map_err(|e| io_fail("write", e))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = stream.read(&mut chunk).map_err(|e| io_fail("read", e))?;
            if n == 0 && buf.is_empty() {
                return Err(fail("EOF"));
            }
            buf.extend_from_slice(&chunk[..n]);
            match http::parse_response(&buf, n == 0, MAX_RESPONSE_BODY) {
                Ok(Some(response)) => return Ok(response),
                Ok(None) => {}
                Err(e) => return Err(fail(&e)),
            }
        }
    }

    /// [`Client::call`], failing on any status but 2xx the way upstream does.
    fn call_ok(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Vec<u8>, String> {
        let r = self.call(method, path, body)?;
        if r.status / 100 != 2 {
            return Err(status_error(r.status, &r.body));
        }
        Ok(r.body)
    }

    /// `GET /v1/info`.
    ///
    /// # Errors
    /// Connection, status and JSON errors as upstream words them.
    pub fn info(&self) -> Result<Info, String> {
        json::decode_info(&self.call_ok("GET", "/v1/info", None)?)
    }

    /// `GET /v1/ports`, in the server's order.
    ///
    /// # Errors
    /// As [`Client::info`].
    pub fn list_ports(&self) -> Result<Vec<PortStatus>, String> {
        json::decode_status_list(&self.call_ok("GET", "/v1/ports", None)?)
    }

    /// `POST /v1/ports`.
    ///
    /// # Errors
    /// As [`Client::info`]; a rejected spec gives the server's message (`conflict with ID 1`).
    pub fn add_port(&self, spec: &PortSpec) -> Result<PortStatus, String> {
        let mut body = String::new();
        json::write_spec(&mut body, spec);
        json::decode_status(&self.call_ok("POST", "/v1/ports", Some(body.as_bytes()))?)
    }

    /// `DELETE /v1/ports/{id}`.
    ///
    /// # Errors
    /// As [`Client::info`] (`unknown id: 7`).
    pub fn remove_port(&self, id: i64) -> Result<(), String> {
        self.call_ok("DELETE", &format!("/v1/ports/{id}"), None)
            .map(drop)
    }
}

/// Upstream's `HTTPStatusError` text: the server's `message` when the body is an error object,
/// else `unexpected HTTP status Method Not Allowed, body=""`.
pub(crate) fn status_error(status: u16, body: &[u8]) -> String {
    let body = &body[..body.len().min(MAX_ERROR_BODY)];
    if !body.is_empty()
        && body.len() < MAX_ERROR_BODY
        && let Some(message) = json::decode_error_message(body)
    {
        return message;
    }
    format!(
        "unexpected HTTP status {}, body={}",
        http::reason(status),
        sys::golang::quote(body)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_read_like_upstream() {
        assert_eq!(
            status_error(400, b"{\"message\":\"conflict with ID 1\"}\n"),
            "conflict with ID 1"
        );
        assert_eq!(
            status_error(405, b""),
            "unexpected HTTP status Method Not Allowed, body=\"\""
        );
        assert_eq!(
            status_error(404, b"404 page not found\n"),
            "unexpected HTTP status Not Found, body=\"404 page not found\\n\""
        );
        assert_eq!(
            status_error(599, b"\xff"),
            "unexpected HTTP status , body=\"\\xff\""
        );
        assert_eq!(status_error(500, b"{\"message\":\"\"}"), "");
        let huge = vec![b' '; MAX_ERROR_BODY + 10];
        assert!(
            status_error(400, &huge).starts_with("unexpected HTTP status Bad Request, body=\"   ")
        );
    }

    #[test]
    fn connection_errors_read_like_go() {
        assert_eq!(
            Client::new(Path::new("/nonexist")).err(),
            Some("stat /nonexist: no such file or directory".into())
        );
        // A socket file nobody listens on.
        let dir = std::env::temp_dir().join(format!("rkapi-client-{}", std::process::id()));
        let _ = std::fs::create_dir(&dir);
        let path = dir.join("api.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let c = Client::new(&path).unwrap();
        assert_eq!(
            c.info().err(),
            Some(format!(
                "Get \"http://rootlesskit/v1/info\": dial unix {}: connect: connection refused",
                path.display()
            ))
        );
        assert_eq!(
            c.remove_port(3)
                .err()
                .map(|e| e.split(':').next().unwrap().to_string()),
            Some("Delete \"http".into())
        );
        // A server that hangs up without answering.
        let _ = std::fs::remove_file(&path);
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut got = Vec::new();
            let mut b = [0u8; 1024];
            while !got.ends_with(b"\r\n\r\n") {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&b[..n]),
                }
            }
        });
        assert_eq!(
            c.list_ports().err(),
            Some("Get \"http://rootlesskit/v1/ports\": EOF".into())
        );
        t.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
