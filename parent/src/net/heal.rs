//! `--restart-net-driver`: a network driver (slirp4netns, pasta) that dies while the target runs
//! is started again, at most [`MAX_RESTARTS`] times with a growing delay, from the parent's one
//! epoll loop and without blocking it.
//!
//! The [`Healer`] owns an epoll set of its own (the driver's pidfd, a relaunched driver's
//! readiness descriptor, a timerfd for the delays and deadlines) that the supervision loop
//! watches as one descriptor. Once a relaunched driver is ready, the child is asked to configure
//! the new interface again (`NetReconfigure`; slirp4netns makes a new, bare tap, pasta configures
//! its own) and the ports published through the slirp4netns or pesto port driver are added to
//! the new slirp4netns or pasta, once its API or control socket accepts (retried every
//! [`REAPPLY_RETRY`]; slirp4netns binds it a moment after its ready byte). With the flag off,
//! or for vpnkit and lxc-user-nic, a dying driver is reported once and the target keeps running
//! without a network, as upstream.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use proto::Msg;
use rustix::event::epoll;
use rustix::io::Errno;
use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
    timerfd_settime,
};

use super::{Driver, Readiness, Target};
use crate::port::pesto::PestoPorts;
use crate::port::slirp4netns::{NotYet, Slirp4netnsPorts};
use crate::warn;

/// How many times a dead driver is started again over the whole run.
pub(crate) const MAX_RESTARTS: u32 = 5;
/// The delay before the first restart; it doubles with each one (50, 100, 200, 400, 800 ms).
pub(crate) const FIRST_DELAY: Duration = Duration::from_millis(50);
/// How long a relaunched driver may take to become ready before it counts as failed.
pub(crate) const READY_LIMIT: Duration = Duration::from_secs(10);
/// How often the published ports are tried again while the new driver's socket is not up yet,
/// and for how many times.
pub(crate) const REAPPLY_RETRY: Duration = Duration::from_millis(10);
const REAPPLY_TRIES: u32 = 300;

/// A port driver whose ports live in the network driver's program and die with it.
pub(crate) trait Reapply {
    /// Adds every published port to the restarted program, keeping the API's ids; a warning
    /// for each one it refuses now. `Err` while its socket does not accept yet.
    fn reapply(&self) -> Result<Vec<String>, NotYet>;
}

impl Reapply for Slirp4netnsPorts {
    fn reapply(&self) -> Result<Vec<String>, NotYet> {
        Slirp4netnsPorts::reapply(self)
    }
}

impl Reapply for PestoPorts {
    fn reapply(&self) -> Result<Vec<String>, NotYet> {
        PestoPorts::reapply(self)
    }
}

/// The delay before restart number `done + 1`.
pub(crate) fn delay(done: u32) -> Duration {
    FIRST_DELAY * (1u32 << done.min(16))
}

// Tags in the healer's own epoll set.
const EXIT: u64 = 0;
const READY: u64 = 1;
const TIMER: u64 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The driver runs (or died for good: nothing is registered then).
    Running,
    /// Dead; the timer starts it again.
    Waiting,
    /// Relaunched; waiting for its readiness, the timer is the deadline.
    Starting,
    /// Ready; the published ports wait for its API socket, the timer is the next try.
    Reapplying(u32),
}

/// Watches the network driver under a running target and restarts it.
pub(crate) struct Healer {
    ep: OwnedFd,
    timer: OwnedFd,
    enabled: bool,
    restarts: u32,
    phase: Phase,
    child_pid: i32,
    netns: Option<PathBuf>,
    state_dir: PathBuf,
}

impl Healer {
    /// A healer for `driver`, whose program runs for the child `child_pid` (in the detached
    /// namespace `netns` if any); `enabled` is `--restart-net-driver`.
    ///
    /// # Errors
    /// `epoll`/`timerfd` failures, worded.
    pub(crate) fn new(
        driver: &dyn Driver,
        enabled: bool,
        child_pid: i32,
        netns: Option<PathBuf>,
        state_dir: PathBuf,
    ) -> Result<Healer, String> {
        let fail = |what: &str, e: Errno| format!("{what}: {}", sys::errno::text(e));
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(|e| fail("epoll", e))?;
        let timer = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::CLOEXEC | TimerfdFlags::NONBLOCK,
        )
        .map_err(|e| fail("timerfd", e))?;
        let h = Healer {
            ep,
            timer,
            enabled,
            restarts: 0,
            phase: Phase::Running,
            child_pid,
            netns,
            state_dir,
        };
        h.add(h.timer.as_fd(), TIMER)
            .map_err(|e| fail("epoll", e))?;
        if let Some(fd) = driver.exit_fd() {
            h.add(fd, EXIT).map_err(|e| fail("epoll", e))?;
        }
        Ok(h)
    }

    fn add(&self, fd: BorrowedFd<'_>, tag: u64) -> Result<(), Errno> {
        epoll::add(
            &self.ep,
            fd,
            epoll::EventData::new_u64(tag),
            epoll::EventFlags::IN,
        )
    }

    fn arm(&self, after: Option<Duration>) {
        // A zero value disarms the timer: a due time of zero is made 1 ns; one too far to carry
        // (never, here) disarms it as well, as it would never come.
        let value = after
            .and_then(|d| Timespec::try_from(d.max(Duration::from_nanos(1))).ok())
            .unwrap_or_default();
        let spec = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: value,
        };
        let _ = timerfd_settime(&self.timer, TimerfdTimerFlags::empty(), &spec);
    }

    /// Whether the timer expired since it was last set (setting it resets the count).
    fn timer_fired(&self) -> bool {
        let mut buf = [0u8; 8];
        matches!(rustix::io::read(&self.timer, &mut buf), Ok(8))
    }

    /// Handles whatever is ready in the healer's set; the supervision loop calls this when
    /// [`Healer::as_fd`] is readable. `sock` is the child's proto socket, `ports` the
    /// slirp4netns or pesto port driver if one is in use.
    pub(crate) fn ready(
        &mut self,
        driver: &mut dyn Driver,
        sock: &mut UnixStream,
        ports: Option<&dyn Reapply>,
    ) {
        let mut events = [epoll::Event {
            flags: epoll::EventFlags::empty(),
            data: epoll::EventData::new_u64(0),
        }; 4];
        let n = match epoll::wait(&self.ep, &mut events, Some(&Timespec::default())) {
            Ok(n) => n,
            Err(_) => return,
        };
        let has = |tag: u64| events[..n].iter().any(|e| e.data.u64() == tag);
        let (exited, readable, timer) = (has(EXIT), has(READY), has(TIMER));
        // Readiness first (it disarms the deadline), then the timer, then a death (which arms
        // the timer anew, for the next round).
        if readable && self.phase == Phase::Starting {
            match driver.check_ready() {
                Ok(Readiness::Ready) => {
                    self.arm(None);
                    self.on_ready(driver, sock, ports);
                }
                Ok(Readiness::NotYet | Readiness::Closed) => {}
                Err(e) => {
                    warn(&format!("network driver {}: {e}", driver.name()));
                    self.forget(driver);
                    driver.stop();
                    self.schedule(driver);
                }
            }
        }
        if timer && self.timer_fired() {
            match self.phase {
                Phase::Waiting => self.relaunch(driver),
                Phase::Starting => {
                    warn(&format!(
                        "network driver {} did not become ready within {READY_LIMIT:?} after a restart",
                        driver.name()
                    ));
                    self.forget(driver);
                    driver.stop();
                    self.schedule(driver);
                }
                Phase::Reapplying(tries) => self.reapply(driver.name(), ports, tries),
                Phase::Running => {}
            }
        }
        if exited && driver.exit_fd().is_some() {
            self.forget(driver);
            // As upstream, the death is reported, each time.
            let how = driver.describe_exit();
            warn(&format!(
                "network driver {} exited while the target was running: {how}",
                driver.name()
            ));
            self.arm(None);
            self.schedule(driver);
        }
    }

    /// Takes the driver's descriptors out of the set (a dead program's pidfd and a closed
    /// ready pipe stay readable).
    fn forget(&self, driver: &dyn Driver) {
        if let Some(fd) = driver.exit_fd() {
            let _ = epoll::delete(&self.ep, fd);
        }
        if let Some(fd) = driver.ready_fd() {
            let _ = epoll::delete(&self.ep, fd);
        }
    }

    /// After a death: the next restart after its delay, or the end of restarting.
    fn schedule(&mut self, driver: &dyn Driver) {
        self.phase = Phase::Running;
        if !self.enabled || !driver.restartable() {
            return;
        }
        if self.restarts >= MAX_RESTARTS {
            crate::error(
                "parent",
                &format!(
                    "network driver {} died again after {MAX_RESTARTS} restarts; not restarting it any more (the command keeps running without a network)",
                    driver.name()
                ),
            );
            return;
        }
        self.arm(Some(delay(self.restarts)));
        self.phase = Phase::Waiting;
    }

    fn relaunch(&mut self, driver: &mut dyn Driver) {
        self.restarts += 1;
        let target = Target {
            child_pid: self.child_pid,
            netns: self.netns.as_deref(),
            state_dir: &self.state_dir,
        };
        if let Err(e) = driver.relaunch(target) {
            warn(&format!(
                "restarting network driver {} failed: {e}",
                driver.name()
            ));
            driver.stop();
            self.schedule(driver);
            return;
        }
        let mut registered = Ok(());
        if let Some(fd) = driver.exit_fd() {
            registered = registered.and(self.add(fd, EXIT));
        }
        if let Some(fd) = driver.ready_fd() {
            registered = registered.and(self.add(fd, READY));
        }
        if let Err(e) = registered {
            warn(&format!(
                "restarting network driver {} failed: epoll: {}",
                driver.name(),
                sys::errno::text(e)
            ));
            self.forget(driver);
            driver.stop();
            self.schedule(driver);
            return;
        }
        self.arm(Some(READY_LIMIT));
        self.phase = Phase::Starting;
    }

    fn on_ready(
        &mut self,
        driver: &mut dyn Driver,
        sock: &mut UnixStream,
        ports: Option<&dyn Reapply>,
    ) {
        self.phase = Phase::Running;
        if let Some(net) = driver.reconfigure()
            && let Err(e) = proto::write_frame(sock, &Msg::NetReconfigure(net))
        {
            warn(&format!(
                "network driver {} restarted, but the child could not be asked to configure {} again: {e}",
                driver.name(),
                net.ifname_str()
            ));
        }
        warn(&format!(
            "network driver {} restarted ({} of at most {MAX_RESTARTS} restarts)",
            driver.name(),
            self.restarts
        ));
        self.reapply(driver.name(), ports, 0);
    }

    fn reapply(&mut self, name: &str, ports: Option<&dyn Reapply>, tries: u32) {
        self.phase = Phase::Running;
        let Some(ports) = ports else {
            return;
        };
        match ports.reapply() {
            Ok(warnings) => warnings.iter().for_each(|w| warn(w)),
            Err(_) if tries < REAPPLY_TRIES => {
                self.arm(Some(REAPPLY_RETRY));
                self.phase = Phase::Reapplying(tries + 1);
            }
            Err(_) => warn(&format!(
                "the published ports were not added to the restarted {name}: its socket does not answer"
            )),
        }
    }
}

impl AsFd for Healer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ep.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_fifty_milliseconds() {
        let ms: Vec<u128> = (0..MAX_RESTARTS).map(|n| delay(n).as_millis()).collect();
        assert_eq!(ms, [50, 100, 200, 400, 800]);
        // Every restart of the allowed ones begins within a second of the death.
        assert!(delay(MAX_RESTARTS - 1) < Duration::from_secs(1));
        // No overflow whatever the count.
        assert!(delay(u32::MAX) >= delay(16));
    }
}
