//! The API server: a Unix socket that only its owner may use, served from the parent's loop
//! through one epoll set of the listener and a bounded set of connections, and the router with
//! upstream's routes, status codes and bodies.
//!
//! Every connection is non-blocking and holds at most one request head and body
//! ([`Limits`]); pipelined requests wait in the socket until the answer before them is sent.
//! A request's head must arrive within the head timeout and the whole request within the read
//! timeout, an idle keep-alive connection is closed after the idle timeout, and when every slot
//! is taken the connection that has gone longest without a finished request (idle, or holding
//! a partial one) makes room for a new one, so a slow-loris flood cannot keep a good client
//! out. Port-driver calls run on the parent's one thread, one at a time, between its other work.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use rustix::event::{PollFd, PollFlags, Timespec, epoll, poll};
use rustix::net::SendFlags;

use crate::api::Backend;
use crate::api::http::{
    self, CONTINUE, Limits, Parsed, Reject, Request, Response, clean_path, escape_path,
};
use crate::api::json;
use crate::backoff::AcceptPause;
use crate::port::go_atoi;

/// Tunables of the server; [`Config::default`] is what rootlesskit uses.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub(crate) limits: Limits,
    /// Connections served at once.
    pub(crate) max_conns: usize,
    /// Time for a request to arrive whole once it has begun, and for an answer to be taken.
    pub(crate) read_timeout: Duration,
    /// Time for a request's head to arrive once it has begun (capped by `read_timeout`).
    pub(crate) head_timeout: Duration,
    /// Time a keep-alive connection may wait for its next request.
    pub(crate) idle_timeout: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            limits: Limits::default(),
            max_conns: 64,
            read_timeout: Duration::from_secs(10),
            head_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Chunk framing may make a body longer on the wire than decoded; this much slack is allowed.
const CHUNK_SLACK: usize = 8 * 1024;
/// The most client connections [`Config::max_conns`] may ask for.
pub(crate) const MAX_CONNS: usize = 64;

// ---------------------------------------------------------------------------------------------
// Routing

/// Answers one request as upstream's gorilla/mux router does: a path that is not clean gets a
/// 301 to the clean one, a known path with another method 405 (empty body), anything else 404.
pub(crate) fn route(backend: &Backend, req: &Request) -> Response {
    let clean = clean_path(&req.path);
    if clean != req.path {
        let mut location = format!("{}{}", req.origin, escape_path(&clean));
        if !req.query.is_empty() {
            location.push('?');
            location.push_str(&req.query);
        }
        return Response {
            location: Some(location),
            ..Response::empty(301)
        };
    }
    let method = req.method.as_str();
    match req.path.as_str() {
        "/v1/info" if method == "GET" => Response::json(200, json::encode_info(&backend.info())),
        "/v1/info" => Response::empty(405),
        "/v1/ports" if method == "GET" => list_ports(backend),
        "/v1/ports" if method == "POST" => add_port(backend, &req.body),
        "/v1/ports" => Response::empty(405),
        path => match path.strip_prefix("/v1/ports/") {
            Some(id) if !id.is_empty() && !id.contains('/') => {
                if method == "DELETE" {
                    remove_port(backend, id)
                } else {
                    Response::empty(405)
                }
            }
            _ => Response::not_found(),
        },
    }
}

const NO_DRIVER: &str = "no PortDriver is available";

fn list_ports(backend: &Backend) -> Response {
    match &backend.port_driver {
        None => Response::error(400, NO_DRIVER),
        Some(d) => Response::json(200, json::encode_status_list(&d.list())),
    }
}

fn add_port(backend: &Backend, body: &[u8]) -> Response {
    let Some(d) = &backend.port_driver else {
        return Response::error(400, NO_DRIVER);
    };
    let spec = match json::decode_spec(body) {
        Ok(s) => s,
        Err(e) => return Response::error(400, &e),
    };
    match d.add(spec) {
        Ok(status) => {
            let mut out = String::new();
            json::write_status(&mut out, &status);
            Response::json(201, out)
        }
        Err(e) => Response::error(400, &e),
    }
}

fn remove_port(backend: &Backend, id_text: &str) -> Response {
    let Some(d) = &backend.port_driver else {
        return Response::error(400, NO_DRIVER);
    };
    let id = match go_atoi(id_text) {
        Ok(n) => n,
        Err(e) => return Response::error(400, &format!("bad id {id_text}: {e}")),
    };
    // Our ids are u32; any other number names no port (upstream's builtin driver says the same).
    let Ok(id) = u32::try_from(id) else {
        return Response::error(400, &format!("unknown id: {id}"));
    };
    match d.remove(id) {
        Ok(()) => Response::empty(200),
        Err(e) => Response::error(400, &e),
    }
}

// ---------------------------------------------------------------------------------------------
// The socket

/// Binds `path` as a listening Unix socket of mode 0600, replacing any file there.
///
/// The socket is bound under a temporary name of the same length in the same directory,
/// restricted, then renamed into place, so it never exists at `path` with looser permissions.
///
/// # Errors
/// Go's form: `listen unix /x/api.sock: bind: invalid argument` (the path is too long for a
/// socket address), `…: bind: permission denied`.
pub(crate) fn listen(path: &Path) -> Result<UnixListener, String> {
    let fail = |e: &io::Error| {
        format!(
            "listen unix {}: bind: {}",
            path.display(),
            sys::errno::text(e)
        )
    };
    let name = path.file_name().map(OsStrExt::as_bytes).unwrap_or_default();
    // sun_path holds 108 bytes including the terminating NUL.
    if name.is_empty() || path.as_os_str().len() >= 108 {
        return Err(fail(&io::Error::from_raw_os_error(22)));
    }
    let mut tmp_name = name.to_vec();
    tmp_name[0] = if tmp_name[0] == b'.' { b'_' } else { b'.' };
    let tmp = path.with_file_name(std::ffi::OsStr::from_bytes(&tmp_name));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(|e| fail(&e))?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&tmp, path))
        .and_then(|()| listener.set_nonblocking(true));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(&e));
    }
    Ok(listener)
}

/// The accept-and-serve loop over one listener.
///
/// The listener and every connection sit in one epoll set of the server's own, registered
/// once and re-armed only when a connection switches between reading and writing; the set
/// itself is what a caller's loop watches ([`Server::as_fd`]), so the parent waits on one
/// epoll set for everything and nothing is rebuilt per turn.
pub struct Server {
    listener: UnixListener,
    backend: Backend,
    config: Config,
    epoll: OwnedFd,
    /// Connections by slot; a slot's epoll tag is its index + 1 (0 is the listener).
    slots: Vec<Option<Conn>>,
    live: usize,
    /// Whether the listener is registered for `EPOLLIN` (it is not while every slot is busy).
    listening: bool,
    /// After an accept error such as EMFILE the listener is left alone for a while.
    accept_pause: AcceptPause,
    /// The socket file, removed when the server is dropped ([`Server::bind`] only: the parent's
    /// socket goes with the state dir).
    path: Option<PathBuf>,
}

/// The listener's epoll tag.
const LISTENER: u64 = 0;

/// How many events one [`Server::serve_ready`] takes at most; more wait for the next call.
const EVENTS: usize = 16;

impl Server {
    /// A server on a listener from [`listen`] (it must be non-blocking).
    ///
    /// # Errors
    /// When the epoll set cannot be made or the listener not added to it.
    pub(crate) fn new(
        listener: UnixListener,
        backend: Backend,
        mut config: Config,
    ) -> Result<Server, String> {
        config.max_conns = config.max_conns.clamp(1, MAX_CONNS);
        let fail = |e: rustix::io::Errno| format!("API server: {}", sys::errno::text(e));
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(fail)?;
        epoll::add(
            &epoll,
            &listener,
            epoll::EventData::new_u64(LISTENER),
            epoll::EventFlags::IN,
        )
        .map_err(fail)?;
        Ok(Server {
            listener,
            backend,
            slots: std::iter::repeat_with(|| None)
                .take(config.max_conns)
                .collect(),
            live: 0,
            config,
            epoll,
            listening: true,
            accept_pause: AcceptPause::default(),
            path: None,
        })
    }

    /// [`listen`] on `path` and [`Server::new`] on it; the socket file goes when the server
    /// does.
    ///
    /// # Errors
    /// As [`listen`] and [`Server::new`].
    pub fn bind(path: &Path, backend: Backend, config: Config) -> Result<Server, String> {
        let listener = listen(path)?;
        let mut server = Server::new(listener, backend, config).inspect_err(|_| {
            let _ = std::fs::remove_file(path);
        })?;
        server.path = Some(path.to_path_buf());
        Ok(server)
    }

    /// Serves on the calling thread while `client` runs on a thread of its own, and returns what
    /// `client` returned (or goes on with its panic). The server is driven as the parent's loop
    /// drives it ([`Server::as_fd`], [`Server::timeout`], [`Server::serve_ready`]) and, with its
    /// port driver, never leaves this thread. For tests and tools.
    ///
    /// # Errors
    /// When the wake-up pipe cannot be made; `client` has not run then.
    pub fn serve_while<T: Send>(&mut self, client: impl FnOnce() -> T + Send) -> Result<T, String> {
        let (stop_rd, stop_wr) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| format!("API server: {}", sys::errno::text(e)))?;
        std::thread::scope(|scope| {
            let client = scope.spawn(move || {
                // Closed when the client ends, even by a panic: that ends `run` below.
                let _stop = stop_wr;
                client()
            });
            let served = self.run(stop_rd.as_fd());
            let out = client
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            served.map(|()| out)
        })
    }

    /// Serves until `stop` becomes readable or hangs up: the parent's loop with nothing else
    /// in it.
    ///
    /// # Errors
    /// Only when `poll` itself fails.
    pub(crate) fn run(&mut self, stop: BorrowedFd<'_>) -> Result<(), String> {
        loop {
            let timeout = self
                .timeout(Instant::now())
                .and_then(|d| Timespec::try_from(d).ok());
            let mut fds = [
                PollFd::from_borrowed_fd(stop, PollFlags::IN),
                PollFd::new(&self.epoll, PollFlags::IN),
            ];
            match poll(&mut fds, timeout.as_ref()) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(format!("poll: {}", sys::errno::text(e))),
            }
            if !fds[0].revents().is_empty() {
                return Ok(());
            }
            self.serve_ready();
        }
    }

    /// The epoll set of the listener and the connections: readable when [`Server::serve_ready`]
    /// has something to do, apart from timeouts ([`Server::timeout`]).
    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.as_fd()
    }

    /// How long a caller may wait for [`Server::as_fd`] before [`Server::serve_ready`] must
    /// run anyway (a connection's deadline, or the end of an accept pause); `None` is forever.
    pub(crate) fn timeout(&self, now: Instant) -> Option<Duration> {
        let mut wake = self.accept_pause.deadline();
        for c in self.slots.iter().flatten() {
            wake = Some(wake.map_or(c.deadline, |w| w.min(c.deadline)));
        }
        // A millisecond late rather than early: waking before the deadline would only wait again.
        wake.map(|w| w.saturating_duration_since(now) + Duration::from_millis(1))
    }

    /// Handles what is ready without blocking: expired connections, new connections, requests
    /// and answers. Call it when [`Server::as_fd`] is readable or [`Server::timeout`] ran out.
    pub(crate) fn serve_ready(&mut self) {
        let now = Instant::now();
        self.expire(now);
        self.accept_pause.is_paused(now);
        self.arm_listener();
        let mut events = [epoll::Event {
            flags: epoll::EventFlags::empty(),
            data: epoll::EventData::new_u64(0),
        }; EVENTS];
        let n = match epoll::wait(&self.epoll, &mut events, Some(&Timespec::default())) {
            Ok(n) => n,
            Err(_) => return,
        };
        let mut accept = false;
        for ev in &events[..n] {
            let tag = ev.data.u64();
            if tag == LISTENER {
                accept = true;
                continue;
            }
            let i = (tag - 1) as usize;
            let Some(c) = self.slots.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            if c.on_ready(&self.backend, &self.config) {
                c.arm(&self.epoll);
            } else {
                self.close(i);
            }
        }
        if accept {
            self.accept();
        }
        self.arm_listener();
    }

    /// The connection to close for a new one when every slot is taken: of those not sending an
    /// answer, the one that has gone longest without finishing a request (accepted or last
    /// answered earliest), be it idle or holding a partial request.
    fn evictable(&self) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().filter(|c| !c.writing()).map(|c| (i, c.since)))
            .min_by_key(|&(_, since)| since)
            .map(|(i, _)| i)
    }

    /// Listens for new connections exactly when one could be taken.
    fn arm_listener(&mut self) {
        let want = self.accept_pause.deadline().is_none()
            && (self.live < self.slots.len() || self.slots.iter().flatten().any(|c| !c.writing()));
        if want != self.listening {
            let flags = if want {
                epoll::EventFlags::IN
            } else {
                epoll::EventFlags::empty()
            };
            if epoll::modify(
                &self.epoll,
                &self.listener,
                epoll::EventData::new_u64(LISTENER),
                flags,
            )
            .is_ok()
            {
                self.listening = want;
            }
        }
    }

    /// Closing the socket also takes it out of the epoll set (nobody else holds it).
    fn close(&mut self, i: usize) {
        if self.slots[i].take().is_some() {
            self.live -= 1;
            // A descriptor is free again: a listener paused for want of one may try now.
            self.accept_pause.resume();
        }
    }

    fn expire(&mut self, now: Instant) {
        for i in 0..self.slots.len() {
            if let Some(c) = &mut self.slots[i]
                && now >= c.deadline
            {
                c.on_timeout();
                self.close(i);
            }
        }
    }

    fn accept(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(_) => {
                    // Out of descriptors or memory: retry a little later instead of spinning.
                    self.accept_pause.pause(Instant::now());
                    self.arm_listener();
                    return;
                }
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let slot = match self.slots.iter().position(Option::is_none) {
                Some(i) => i,
                None => match self.evictable() {
                    Some(i) => {
                        if let Some(c) = &mut self.slots[i] {
                            // A partial request gets its 408, if the socket takes it now.
                            c.on_timeout();
                        }
                        self.close(i);
                        i
                    }
                    // Every slot is sending an answer: this one is turned away.
                    None => return,
                },
            };
            let tag = slot as u64 + 1;
            let data = epoll::EventData::new_u64(tag);
            if epoll::add(&self.epoll, &stream, data, epoll::EventFlags::IN).is_err() {
                continue;
            }
            self.slots[slot] = Some(Conn::new(stream, &self.config, tag));
            self.live += 1;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// One client connection.
struct Conn {
    stream: UnixStream,
    /// Received bytes not yet parsed into a request.
    buf: Vec<u8>,
    /// Parsing is pointless before `buf` holds this many bytes.
    need: usize,
    /// An answer being sent, and how much of it is gone.
    out: Vec<u8>,
    sent: usize,
    /// Close once `out` is sent.
    close_after: bool,
    continue_sent: bool,
    eof: bool,
    deadline: Instant,
    /// When it was accepted or last finished a request: the oldest gives way first.
    since: Instant,
    /// When the request in `buf` began, and whether its head is in.
    began: Instant,
    head_in: bool,
    read_timeout: Duration,
    head_timeout: Duration,
    idle_timeout: Duration,
    limits: Limits,
    /// Registered for `EPOLLOUT` (sending an answer) rather than `EPOLLIN`.
    armed_out: bool,
    /// Its epoll tag (its slot + 1).
    tag: u64,
}

impl Conn {
    fn new(stream: UnixStream, config: &Config, tag: u64) -> Conn {
        let now = Instant::now();
        Conn {
            stream,
            buf: Vec::new(),
            need: 0,
            out: Vec::new(),
            sent: 0,
            close_after: false,
            continue_sent: false,
            eof: false,
            deadline: now + config.idle_timeout,
            since: now,
            began: now,
            head_in: false,
            read_timeout: config.read_timeout,
            head_timeout: config.head_timeout.min(config.read_timeout),
            idle_timeout: config.idle_timeout,
            limits: config.limits,
            armed_out: false,
            tag,
        }
    }

    /// Re-registers for what the connection waits for now, if that changed: `EPOLLOUT` while
    /// an answer is pending, else `EPOLLIN` (pipelined requests wait in the socket meanwhile).
    fn arm(&mut self, ep: &OwnedFd) {
        let out = self.writing();
        if out == self.armed_out {
            return;
        }
        let flags = if out {
            epoll::EventFlags::OUT
        } else {
            epoll::EventFlags::IN
        };
        // The tag stays what `accept` gave: only the interest changes.
        if epoll::modify(ep, &self.stream, epoll::EventData::new_u64(self.tag), flags).is_ok() {
            self.armed_out = out;
        }
    }

    fn writing(&self) -> bool {
        self.sent < self.out.len()
    }

    fn capacity(&self) -> usize {
        self.limits.max_header + self.limits.max_body + CHUNK_SLACK
    }

    /// A request that began but did not finish in time gets a 408; an idle one just closes.
    fn on_timeout(&mut self) {
        if !self.buf.is_empty() && !self.writing() {
            self.respond_reject(Reject {
                status: 408,
                detail: "request not received in time",
            });
        }
    }

    fn respond_reject(&mut self, r: Reject) {
        Response::rejected(r).write(&mut self.out, false, false, false, unix_now());
        self.close_after = true;
        self.buf = Vec::new();
        self.flush();
    }

    /// Sends what it can without blocking; false when the peer is gone.
    fn flush(&mut self) -> bool {
        while self.writing() {
            match rustix::net::send(&self.stream, &self.out[self.sent..], SendFlags::NOSIGNAL) {
                Ok(n) => self.sent += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::AGAIN) => return true,
                Err(_) => return false,
            }
        }
        self.out.clear();
        if self.out.capacity() > 16 * 1024 {
            self.out = Vec::new();
        }
        self.sent = 0;
        true
    }

    /// Handles readiness; false when the connection is done.
    fn on_ready(&mut self, backend: &Backend, config: &Config) -> bool {
        let now = Instant::now();
        if self.writing() {
            let before = self.sent;
            if !self.flush() {
                return false;
            }
            if self.writing() {
                if self.sent > before {
                    self.deadline = now + self.read_timeout;
                }
                return true;
            }
            if self.close_after {
                return false;
            }
        } else if !self.read(now) {
            return false;
        }
        self.process(backend, config)
    }

    /// Reads what is there, up to the buffer's capacity; false on a read error.
    fn read(&mut self, now: Instant) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        while self.buf.len() < self.capacity() {
            let room = (self.capacity() - self.buf.len()).min(chunk.len());
            match self.stream.read(&mut chunk[..room]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => {
                    if self.buf.is_empty() {
                        // A request begins: its head has the head timeout to arrive, the
                        // whole of it the read timeout.
                        self.began = now;
                        self.head_in = false;
                        self.deadline = now + self.head_timeout;
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    /// Answers every whole request in the buffer, stopping while an answer waits to be sent.
    fn process(&mut self, backend: &Backend, config: &Config) -> bool {
        loop {
            if self.writing() {
                return true;
            }
            if self.buf.is_empty() || self.buf.len() < self.need {
                if self.eof {
                    return false;
                }
                if self.buf.is_empty() {
                    self.deadline = Instant::now() + self.idle_timeout;
                    if self.buf.capacity() > 16 * 1024 {
                        self.buf = Vec::new();
                    }
                }
                return true;
            }
            match http::parse_request(&self.buf, config.limits) {
                Ok(Parsed::Partial {
                    need,
                    wants_continue,
                }) => {
                    self.need = need;
                    if !self.head_in && http::head_received(&self.buf, config.limits) {
                        self.head_in = true;
                        self.deadline = self.began + self.read_timeout;
                    }
                    if self.buf.len() >= self.capacity() {
                        // Only chunk framing can get here: too much of it for one body.
                        self.respond_reject(Reject {
                            status: 413,
                            detail: "request body too large",
                        });
                        return self.writing();
                    }
                    if wants_continue && !self.continue_sent {
                        self.continue_sent = true;
                        self.out.extend_from_slice(CONTINUE);
                        if !self.flush() {
                            return false;
                        }
                    }
                    return !self.eof;
                }
                Ok(Parsed::Done(req, used)) => {
                    self.buf.drain(..used);
                    self.need = 0;
                    self.began = Instant::now();
                    self.head_in = false;
                    self.continue_sent = false;
                    let response = route(backend, &req);
                    let head = req.method == "HEAD";
                    response.write(&mut self.out, req.http10, req.keep_alive, head, unix_now());
                    self.close_after = !req.keep_alive;
                    let now = Instant::now();
                    self.deadline = now + self.read_timeout;
                    self.since = now;
                    if !self.flush() {
                        return false;
                    }
                    if self.close_after && !self.writing() {
                        return false;
                    }
                }
                Err(reject) => {
                    self.respond_reject(reject);
                    return self.writing();
                }
            }
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Info, NetworkDriverInfo, PortDriverInfo};
    use crate::port::PortDriver;
    use crate::port::fake::FakePorts;
    use std::io::Write;
    use std::rc::Rc;

    fn backend(driver: Option<Rc<dyn PortDriver>>) -> Backend {
        Backend {
            state_dir: "/run/user/1000/rk".into(),
            child_pid: 4242,
            network_driver: Some(NetworkDriverInfo {
                driver: "slirp4netns".into(),
                dns: vec!["10.0.2.3".into()],
                child_ip: "10.0.2.100".into(),
                dynamic_child_ip: false,
            }),
            port_driver: driver,
        }
    }

    fn get(method: &str, target: &str, body: &[u8]) -> Request {
        let raw = format!(
            "{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut raw = raw.into_bytes();
        raw.extend_from_slice(body);
        match http::parse_request(&raw, Limits::default()) {
            Ok(Parsed::Done(r, _)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn answer(backend: &Backend, method: &str, target: &str, body: &str) -> (u16, String) {
        let r = route(backend, &get(method, target, body.as_bytes()));
        (r.status, String::from_utf8(r.body).unwrap())
    }

    #[test]
    fn routes_and_errors_match_upstream() {
        let with = backend(Some(Rc::new(FakePorts::default())));
        let without = backend(None);
        let err = |m: &str| {
            format!("{{\"message\":{}}}\n", {
                let mut s = String::new();
                crate::gojson::write_str(&mut s, m);
                s
            })
        };
        let info = r#"{"apiVersion":"1.1.1","version":"3.0.1","stateDir":"/run/user/1000/rk","childPID":4242,"networkDriver":{"driver":"slirp4netns","dns":["10.0.2.3"],"childIP":"10.0.2.100"}"#;
        let cases: Vec<(&Backend, &str, &str, &str, u16, String)> = vec![
            (&without, "GET", "/v1/info", "", 200, format!("{info}}}")),
            (&with, "GET", "/v1/info", "", 200, format!("{info},\"portDriver\":{{\"driver\":\"builtin\",\"protos\":[\"tcp\",\"tcp4\",\"tcp6\",\"udp\",\"udp4\",\"udp6\"]}}}}")),
            (&with, "GET", "/v1/ports", "", 200, "null".into()),
            (&with, "POST", "/v1/ports", r#"{"proto":"tcp","parentIP":"127.0.0.1","parentPort":8080,"childPort":80}"#, 201,
                r#"{"id":1,"spec":{"proto":"tcp","parentIP":"127.0.0.1","parentPort":8080,"childPort":80}}"#.into()),
            (&with, "GET", "/v1/ports", "", 200, r#"[{"id":1,"spec":{"proto":"tcp","parentIP":"127.0.0.1","parentPort":8080,"childPort":80}}]"#.into()),
            (&with, "POST", "/v1/ports", r#"{"proto":"tcp","parentIP":"127.0.0.1","parentPort":8080,"childPort":81}"#, 400, err("conflict with ID 1")),
            (&with, "POST", "/v1/ports", r#"{"proto":"tcp","parentIP":"1.2.3.4","parentPort":18201,"childPort":80}"#, 400,
                err("listen tcp 1.2.3.4:18201: bind: cannot assign requested address")),
            (&with, "POST", "/v1/ports", "{b", 400, err("invalid character 'b' looking for beginning of object key string")),
            (&with, "POST", "/v1/ports", "", 400, err("EOF")),
            (&with, "POST", "/v1/ports", "null", 400, err("unknown proto: \"\"")),
            (&with, "POST", "/v1/ports", r#"{"proto":"tcp","parentPort":0,"childPort":80}"#, 400, err("invalid ParentPort: 0")),
            (&with, "POST", "/v1/ports", r#"{"proto":"tcp","parentIP":"<x>","parentPort":1,"childPort":80}"#, 400, err("invalid ParentIP: \"<x>\"")),
            (&with, "DELETE", "/v1/ports/abc", "", 400, err("bad id abc: strconv.Atoi: parsing \"abc\": invalid syntax")),
            (&with, "DELETE", "/v1/ports/99999999999999999999", "", 400,
                err("bad id 99999999999999999999: strconv.Atoi: parsing \"99999999999999999999\": value out of range")),
            (&with, "DELETE", "/v1/ports/-5", "", 400, err("unknown id: -5")),
            (&with, "DELETE", "/v1/ports/4294967296", "", 400, err("unknown id: 4294967296")),
            (&with, "DELETE", "/v1/ports/99", "", 400, err("unknown id: 99")),
            (&with, "DELETE", "/v1/ports/+1", "", 200, String::new()),
            (&with, "DELETE", "/v1/ports/1", "", 400, err("unknown id: 1")),
            (&without, "GET", "/v1/ports", "", 400, err("no PortDriver is available")),
            (&without, "POST", "/v1/ports", "{b", 400, err("no PortDriver is available")),
            (&without, "DELETE", "/v1/ports/abc", "", 400, err("no PortDriver is available")),
            // Unknown paths, trailing slashes and other versions are 404 with Go's body.
            (&with, "GET", "/v1/info/", "", 404, "404 page not found\n".into()),
            (&with, "GET", "/v2/info", "", 404, "404 page not found\n".into()),
            (&with, "GET", "/", "", 404, "404 page not found\n".into()),
            (&with, "DELETE", "/v1/ports/1/", "", 404, "404 page not found\n".into()),
            (&with, "FOO", "/x", "", 404, "404 page not found\n".into()),
            // A known path with another method is 405 with an empty body.
            (&with, "POST", "/v1/info", "", 405, String::new()),
            (&with, "HEAD", "/v1/info", "", 405, String::new()),
            (&with, "DELETE", "/v1/ports", "", 405, String::new()),
            (&with, "PUT", "/v1/ports", "", 405, String::new()),
            (&with, "GET", "/v1/ports/1", "", 405, String::new()),
            (&without, "GET", "/v1/ports/1", "", 405, String::new()),
            (&with, "FOO", "/v1/info", "", 405, String::new()),
            // Escapes are decoded before routing, as in Go.
            (&without, "GET", "/v1/%69nfo", "", 200, format!("{info}}}")),
        ];
        for (b, method, target, body, status, expect) in cases {
            assert_eq!(
                answer(b, method, target, body),
                (status, expect),
                "{method} {target} {body}"
            );
        }
    }

    #[test]
    fn unclean_paths_redirect_like_gorilla() {
        let b = backend(None);
        let check = |target: &str, location: &str| {
            let r = route(&b, &get("GET", target, b""));
            assert_eq!(
                (r.status, r.location.as_deref(), r.body.len()),
                (301, Some(location), 0),
                "{target}"
            );
        };
        check("/v1//info", "/v1/info");
        check("/v1/./info?a=b", "/v1/info?a=b");
        check("http://foo/v1/ports/../info", "http://foo/v1/info");
        check("*", "/%2A");
    }

    #[test]
    fn answers_carry_upstream_headers() {
        let b = backend(Some(Rc::new(FakePorts::default())));
        let wire = |method: &str, target: &str| {
            let mut out = Vec::new();
            route(&b, &get(method, target, b"")).write(&mut out, false, true, false, 0);
            String::from_utf8(out).unwrap()
        };
        let date = "Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n";
        assert_eq!(
            wire("GET", "/v1/ports"),
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{date}Content-Length: 4\r\n\r\nnull"
            )
        );
        let body = "{\"message\":\"bad id x: strconv.Atoi: parsing \\\"x\\\": invalid syntax\"}\n";
        assert_eq!(
            wire("DELETE", "/v1/ports/x"),
            format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n{date}Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
        );
        assert_eq!(
            wire("GET", "/nope"),
            format!(
                "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n{date}Content-Length: 19\r\n\r\n404 page not found\n"
            )
        );
        assert_eq!(
            wire("POST", "/v1/info"),
            format!("HTTP/1.1 405 Method Not Allowed\r\n{date}Content-Length: 0\r\n\r\n")
        );
        assert_eq!(
            wire("GET", "/v1//info"),
            format!(
                "HTTP/1.1 301 Moved Permanently\r\nLocation: /v1/info\r\n{date}Content-Length: 0\r\n\r\n"
            )
        );
    }

    // -----------------------------------------------------------------------------------------
    // Over a real socket

    /// A fresh directory under the system temp dir, removed on drop.
    pub(super) use crate::testutil::TempDir;

    /// What the clients know of a server: where its socket is.
    struct Handle(PathBuf);

    impl Handle {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    /// A server on `api.sock` in a fresh directory, with the fake port driver; the test serves
    /// it on its own thread ([`Server::serve_while`]) while its clients run on another.
    fn start(tag: &str, config: Config) -> (TempDir, Handle, Server, Rc<FakePorts>) {
        let dir = TempDir::new(tag);
        let driver = Rc::new(FakePorts::default());
        let path = dir.0.join("api.sock");
        let server = Server::bind(&path, backend(Some(driver.clone())), config).unwrap();
        (dir, Handle(path), server, driver)
    }

    fn connect(h: &Handle) -> UnixStream {
        let s = UnixStream::connect(h.path()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// Reads until the peer closes.
    fn read_all(s: &mut UnixStream) -> String {
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Reads one response with a Content-Length.
    fn read_response(s: &mut UnixStream) -> String {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Ok(Some(_)) = http::parse_response(&buf, false, 1 << 20) {
                return String::from_utf8_lossy(&buf).into_owned();
            }
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn strip_date(s: &str) -> String {
        s.lines()
            .filter(|l| !l.starts_with("Date: "))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    #[test]
    fn socket_is_owner_only_and_removed_on_stop() {
        let (dir, _, server, _) = start("mode", Config::default());
        let path = dir.0.join("api.sock");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()));
        assert!(!dir.0.join(".pi.sock").exists());
        drop(server);
        assert!(!path.exists());
        assert!(UnixStream::connect(&path).is_err());
    }

    #[test]
    fn listen_errors_read_like_go() {
        let long = PathBuf::from(format!("/tmp/{}/api.sock", "x".repeat(100)));
        assert_eq!(
            listen(&long).err(),
            Some(format!(
                "listen unix {}: bind: invalid argument",
                long.display()
            ))
        );
        assert_eq!(
            listen(Path::new("/nonexistent-dir/api.sock")).err(),
            Some("listen unix /nonexistent-dir/api.sock: bind: no such file or directory".into())
        );
    }

    #[test]
    fn keep_alive_and_pipelining() {
        let (_dir, h, mut server, _) = start("pipe", Config::default());
        server
            .serve_while(|| {
        let mut s = connect(&h);
        // Two requests on one connection, one after the other.
        s.write_all(b"GET /v1/ports HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert!(read_response(&mut s).ends_with("\r\n\r\nnull"));
        let body = br#"{"proto":"tcp","parentPort":8080,"childPort":80}"#;
        let post = format!(
            "POST /v1/ports HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(post.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        assert!(read_response(&mut s).starts_with("HTTP/1.1 201 Created\r\n"));
        // Three pipelined in one write; the last asks to close.
        s.write_all(b"GET /v1/ports HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\nDELETE /v1/ports/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let all = strip_date(&read_all(&mut s));
        assert_eq!(
            all,
            "HTTP/1.1 200 OK\nContent-Type: application/json\nContent-Length: 66\n\n[{\"id\":1,\"spec\":{\"proto\":\"tcp\",\"parentPort\":8080,\"childPort\":80}}]HTTP/1.1 404 Not Found\nContent-Type: text/plain; charset=utf-8\nX-Content-Type-Options: nosniff\nContent-Length: 19\n\n404 page not found\nHTTP/1.1 200 OK\nContent-Length: 0\nConnection: close\n\n"
        );
            })
            .unwrap();
    }

    #[test]
    fn byte_by_byte_and_expect_continue() {
        let (_dir, h, mut server, _) = start("slow", Config::default());
        server
            .serve_while(|| {
        let mut s = connect(&h);
        let req = b"POST /v1/ports HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n";
        for b in req.iter() {
            s.write_all(&[*b]).unwrap();
        }
        let mut cont = [0u8; 25];
        s.read_exact(&mut cont).unwrap();
        assert_eq!(&cont, CONTINUE);
        for b in b"null" {
            s.write_all(&[*b]).unwrap();
        }
        let r = read_response(&mut s);
        assert!(r.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{r}");
        assert!(
            r.ends_with("{\"message\":\"unknown proto: \\\"\\\"\"}\n"),
            "{r}"
        );
            })
            .unwrap();
    }

    #[test]
    fn oversized_and_malformed_requests_are_answered_and_closed() {
        let (_dir, h, mut server, _) = start("big", Config::default());
        server
            .serve_while(|| {
                let check = |input: &[u8], status_line: &str| {
                    let mut s = connect(&h);
                    let _ = s.write_all(input);
                    let got = read_all(&mut s);
                    assert!(got.starts_with(status_line), "{got:?}");
                    assert!(got.contains("Connection: close\r\n"), "{got:?}");
                };
                let mut big_head = b"GET /v1/info HTTP/1.1\r\nHost: x\r\nX: ".to_vec();
                big_head.resize(20_000, b'a');
                check(
                    &big_head,
                    "HTTP/1.1 431 Request Header Fields Too Large\r\n",
                );
                check(
                    b"POST /v1/ports HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n",
                    "HTTP/1.1 413 Request Entity Too Large\r\n",
                );
                check(
                    b"GET /v1/info HTTP/1.1\r\n\r\n",
                    "HTTP/1.1 400 Bad Request\r\n",
                );
                check(
                    b"G\x00T /v1/info HTTP/1.1\r\nHost: x\r\n\r\n",
                    "HTTP/1.1 400 Bad Request\r\n",
                );
                check(
                    b"GET /v1/info HTTP/3.0\r\nHost: x\r\n\r\n",
                    "HTTP/1.1 505 HTTP Version Not Supported\r\n",
                );
                // A good request before a bad one is still answered.
                check(
                    b"GET /v1/ports HTTP/1.1\r\nHost: x\r\n\r\nBAD\r\n\r\n",
                    "HTTP/1.1 200 OK\r\n",
                );
                // An oversized chunked body.
                let mut chunked =
                    b"POST /v1/ports HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                        .to_vec();
                for _ in 0..70 {
                    chunked.extend_from_slice(b"400\r\n");
                    chunked.extend_from_slice(&[b' '; 1024]);
                    chunked.extend_from_slice(b"\r\n");
                }
                check(&chunked, "HTTP/1.1 413 Request Entity Too Large\r\n");
                // Tiny chunks whose framing outgrows the buffer.
                let mut tiny =
                    b"POST /v1/ports HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                        .to_vec();
                while tiny.len() < 100_000 {
                    tiny.extend_from_slice(b"1;aaaaaaaaaaaaaaaaaaaa\r\n \r\n");
                }
                check(&tiny, "HTTP/1.1 413 Request Entity Too Large\r\n");
                // The server is still fine.
                let mut s = connect(&h);
                s.write_all(b"GET /v1/info HTTP/1.0\r\n\r\n").unwrap();
                assert!(read_all(&mut s).starts_with("HTTP/1.0 200 OK\r\n"));
            })
            .unwrap();
    }

    #[test]
    fn timeouts() {
        let config = Config {
            read_timeout: Duration::from_millis(200),
            idle_timeout: Duration::from_millis(400),
            ..Config::default()
        };
        let (_dir, h, mut server, _) = start("timeout", config);
        server
            .serve_while(|| {
                // A request that never finishes gets a 408.
                let mut partial = connect(&h);
                partial.write_all(b"GET /v1/info HTTP/1.1\r\n").unwrap();
                // An idle keep-alive connection is closed without a word.
                let mut idle = connect(&h);
                let t = Instant::now();
                idle.write_all(b"GET /v1/ports HTTP/1.1\r\nHost: x\r\n\r\n")
                    .unwrap();
                let first = read_response(&mut idle);
                assert!(first.starts_with("HTTP/1.1 200 OK"));
                assert!(read_all(&mut partial).starts_with("HTTP/1.1 408 Request Timeout\r\n"));
                assert_eq!(read_all(&mut idle), "");
                assert!(
                    t.elapsed() >= Duration::from_millis(350),
                    "{:?}",
                    t.elapsed()
                );
            })
            .unwrap();
    }

    #[test]
    fn connections_are_bounded_and_the_oldest_gives_way() {
        let config = Config {
            max_conns: 4,
            ..Config::default()
        };
        let (_dir, h, mut server, _) = start("bound", config);
        server
            .serve_while(|| {
                // Four connections that each sent half a request hold every slot.
                let mut busy: Vec<UnixStream> = (0..4)
                    .map(|_| {
                        let mut s = connect(&h);
                        s.write_all(b"GET /v1/info HTTP/1.1\r\n").unwrap();
                        std::thread::sleep(Duration::from_millis(20));
                        s
                    })
                    .collect();
                // Finishing one request makes it the youngest.
                busy[1].write_all(b"Host: x\r\n\r\n").unwrap();
                assert!(read_response(&mut busy[1]).starts_with("HTTP/1.1 200 OK"));
                // A fifth is served at once: the oldest partial request gives way with a 408.
                let mut fifth = connect(&h);
                fifth
                    .write_all(b"GET /v1/ports HTTP/1.1\r\nHost: x\r\n\r\n")
                    .unwrap();
                assert!(read_response(&mut fifth).ends_with("null"));
                assert!(read_all(&mut busy[0]).starts_with("HTTP/1.1 408 Request Timeout\r\n"));
                // A sixth takes the next oldest partial's slot, not the one answered since.
                let mut sixth = connect(&h);
                sixth
                    .write_all(b"GET /v1/ports HTTP/1.1\r\nHost: x\r\n\r\n")
                    .unwrap();
                assert!(read_response(&mut sixth).ends_with("null"));
                assert!(read_all(&mut busy[2]).starts_with("HTTP/1.1 408"));
                busy[1]
                    .write_all(b"GET /v1/ports HTTP/1.1\r\nHost: x\r\n\r\n")
                    .unwrap();
                assert!(read_response(&mut busy[1]).ends_with("null"));
                busy[3].write_all(b"Host: x\r\n\r\n").unwrap();
                assert!(read_response(&mut busy[3]).starts_with("HTTP/1.1 200 OK"));
            })
            .unwrap();
    }

    #[test]
    fn a_head_has_less_time_than_a_body() {
        let config = Config {
            head_timeout: Duration::from_millis(200),
            read_timeout: Duration::from_secs(5),
            ..Config::default()
        };
        let (_dir, h, mut server, _) = start("head", config);
        server
            .serve_while(|| {
                let t = Instant::now();
                // Leading empty lines do not count as a head.
                let mut slow_head = connect(&h);
                slow_head
                    .write_all(b"\r\n\r\nGET /v1/info HTTP/1.1\r\nHo")
                    .unwrap();
                let mut slow_body = connect(&h);
                slow_body
                    .write_all(b"POST /v1/ports HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{")
                    .unwrap();
                assert!(read_all(&mut slow_head).starts_with("HTTP/1.1 408 Request Timeout\r\n"));
                let took = t.elapsed();
                assert!(
                    took >= Duration::from_millis(150) && took < Duration::from_secs(4),
                    "{took:?}"
                );
                // The body still has the read timeout.
                std::thread::sleep(Duration::from_millis(200));
                slow_body.write_all(b"}").unwrap();
                assert!(read_response(&mut slow_body).starts_with("HTTP/1.1 400 Bad Request"));
            })
            .unwrap();
    }

    #[test]
    fn many_concurrent_clients() {
        let (_dir, h, mut server, driver) = start("many", Config::default());
        server
            .serve_while(|| {
        let path = h.path().to_path_buf();
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let mut s = UnixStream::connect(&path).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    for i in 0..20 {
                        let body = format!(r#"{{"proto":"udp","parentPort":{},"childPort":53}}"#, 10000 + t * 100 + i);
                        let req = format!("POST /v1/ports HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                        s.write_all(req.as_bytes()).unwrap();
                        assert!(read_response(&mut s).starts_with("HTTP/1.1 201 Created"));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
            })
            .unwrap();
        let mut ids: Vec<u32> = driver.list().iter().map(|p| p.id).collect();
        ids.sort();
        assert_eq!(ids, (1..=320).collect::<Vec<_>>());
    }

    /// Upstream's Go client (Debian's rootlessctl 1.1.0) against our server.
    #[test]
    fn go_rootlessctl_works_against_us() {
        let go = Path::new("/usr/bin/rootlessctl");
        if !go.exists() {
            println!(
                "skipped: {} is not installed (Debian package rootlesskit)",
                go.display()
            );
            return;
        }
        let (_dir, h, mut server, _) = start("go", Config::default());
        server
            .serve_while(|| {
        let sock = h.path().to_str().unwrap().to_string();
        let run = |args: &[&str]| -> (i32, String) {
            let mut argv: Vec<std::ffi::OsString> = vec!["--socket".into(), sock.clone().into()];
            argv.extend(args.iter().map(Into::into));
            let (status, out) = crate::exec::run_with_output(go, &argv).unwrap();
            (
                status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out).into_owned(),
            )
        };
        assert_eq!(
            run(&["list-ports"]),
            (
                0,
                "ID    PROTO    PARENTIP    PARENTPORT    CHILDIP    CHILDPORT    \n".into()
            )
        );
        assert_eq!(
            run(&[
                "add-ports",
                "127.0.0.1:18090:80/tcp",
                "[::1]:18091:[::2]:81/udp6"
            ]),
            (0, "1\n2\n".into())
        );
        assert_eq!(
            run(&["add-ports", "--json", ":18092:82/tcp"]),
            (
                0,
                "{\"id\":3,\"spec\":{\"proto\":\"tcp\",\"parentPort\":18092,\"childPort\":82}}\n"
                    .into()
            )
        );
        assert_eq!(
            run(&["add-ports", "127.0.0.1:18090:80/tcp"]),
            (1, "error: conflict with ID 1\n".into())
        );
        assert_eq!(
            run(&["add-ports", "127.0.0.1:0:80/tcp"]),
            (1, "error: invalid ParentPort: 0\n".into())
        );
        assert_eq!(
            run(&["list-ports"]),
            (
                0,
                concat!(
                    "ID    PROTO    PARENTIP     PARENTPORT    CHILDIP    CHILDPORT    \n",
                    "1     tcp      127.0.0.1    18090                    80           \n",
                    "2     udp6     ::1          18091         ::2        81           \n",
                    "3     tcp                   18092                    82           \n",
                )
                .into()
            )
        );
        assert_eq!(
            run(&["list-ports", "--json"]),
            (
                0,
                concat!(
                    "{\"id\":1,\"spec\":{\"proto\":\"tcp\",\"parentIP\":\"127.0.0.1\",\"parentPort\":18090,\"childPort\":80}}\n",
                    "{\"id\":2,\"spec\":{\"proto\":\"udp6\",\"parentIP\":\"::1\",\"parentPort\":18091,\"childPort\":81,\"childIP\":\"::2\"}}\n",
                    "{\"id\":3,\"spec\":{\"proto\":\"tcp\",\"parentPort\":18092,\"childPort\":82}}\n",
                )
                .into()
            )
        );
        assert_eq!(run(&["remove-ports", "2", "3"]), (0, "2\n3\n".into()));
        assert_eq!(
            run(&["remove-ports", "2"]),
            (1, "error: unknown id: 2\n".into())
        );
        assert_eq!(
            run(&["info"]),
            (
                0,
                concat!(
                    "- REST API version: 1.1.1\n",
                    "- Implementation version: 3.0.1\n",
                    "- State Directory: /run/user/1000/rk\n",
                    "- Child PID: 4242\n",
                    "- Network Driver: slirp4netns\n",
                    "  - DNS: [10.0.2.3]\n",
                    "  - IP: 10.0.2.100\n",
                    "- Port Driver: builtin\n",
                    "  - Supported protocols: [tcp tcp4 tcp6 udp udp4 udp6]\n",
                )
                .into()
            )
        );
        let (code, out) = run(&["info", "--json"]);
        assert_eq!(code, 0);
        let expect = json::indent(&json::encode_info(&Info {
            port_driver: Some(PortDriverInfo::builtin()),
            ..backend(None).info()
        })) + "\n";
        assert_eq!(out, expect);
            })
            .unwrap();
    }
}
