//! Brute-force protection: failed credential attempts per client address, in fixed memory.
//!
//! After `max_failures` failures from one address within `window`, that address is refused for
//! `lockout` without its credentials being checked, and the caller learns how long (an HTTP
//! `Retry-After`, a log line for a DIMSE association). Knows nothing of HTTP or DIMSE: the
//! listeners ask [`Throttle::check`] before checking a credential and report the outcome with
//! [`Throttle::failed`] or [`Throttle::succeeded`].
//!
//! Memory is fixed: at most `max_tracked` addresses are remembered (least recently seen dropped
//! first), so a flood from many addresses costs a bounded map, never more. An IPv6 client is
//! tracked by its /64 prefix: one host usually holds a whole /64, and counting each of its 2^64
//! addresses apart would let it rotate past the limit.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;

/// How many failures are tolerated, over what time, and what follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Failures from one address within `window` that lock it out (at least 1).
    pub max_failures: u32,
    /// The period failures are counted over, from an address's first counted failure.
    pub window: Duration,
    /// How long a locked-out address is refused.
    pub lockout: Duration,
    /// Most addresses remembered at once (at least 1).
    pub max_tracked: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_failures: 10,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(300),
            max_tracked: 65_536,
        }
    }
}

/// What is remembered of one address.
#[derive(Debug, Clone, Copy)]
struct Record {
    /// When the failures now counted began.
    since: Instant,
    /// Failures since `since`.
    failures: u32,
    /// Refused until then.
    locked_until: Option<Instant>,
}

/// Failed attempts per client address (see the module documentation). Shared by reference
/// between connections; each call holds a lock for a map operation only.
pub struct Throttle {
    limits: Limits,
    records: Mutex<LruCache<IpAddr, Record>>,
}

impl Throttle {
    /// A throttle with `limits` (zero counts are taken as 1).
    pub fn new(limits: Limits) -> Self {
        let limits = Limits {
            max_failures: limits.max_failures.max(1),
            ..limits
        };
        let capacity = NonZeroUsize::new(limits.max_tracked).unwrap_or(NonZeroUsize::MIN);
        Throttle {
            limits,
            records: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// `Ok` when `ip` may present a credential now; otherwise how long it is still refused.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.check_at(ip, Instant::now())
    }

    /// Notes a failed credential from `ip`; returns how long it is now locked out, if this
    /// failure locked it.
    pub fn failed(&self, ip: IpAddr) -> Option<Duration> {
        self.failed_at(ip, Instant::now())
    }

    /// Notes an accepted credential from `ip`: its failures are forgotten. Other addresses are
    /// untouched, so one client's success never clears an attacker's count.
    pub fn succeeded(&self, ip: IpAddr) {
        self.lock().pop(&key(ip));
    }

    /// Addresses remembered now (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.lock().len()
    }

    fn check_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        // `peek`: a refused address must not refresh its place, or a flood of refused
        // attempts would keep one record alive while others are dropped.
        match self.lock().peek(&key(ip)).and_then(|r| r.locked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    fn failed_at(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let limits = self.limits;
        let mut records = self.lock();
        let record = records.get_or_insert_mut(key(ip), || Record {
            since: now,
            failures: 0,
            locked_until: None,
        });
        match record.locked_until {
            // Still locked out (the caller should not have checked a credential): the lockout
            // stands as it is, neither extended nor lifted.
            Some(until) if until > now => return None,
            _ => {}
        }
        // A lockout that has ended, or a window that has passed, starts a fresh count.
        if record.locked_until.is_some()
            || now.saturating_duration_since(record.since) > limits.window
        {
            *record = Record {
                since: now,
                failures: 0,
                locked_until: None,
            };
        }
        record.failures = record.failures.saturating_add(1);
        if record.failures >= limits.max_failures {
            record.locked_until = Some(now + limits.lockout);
            return Some(limits.lockout);
        }
        None
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<IpAddr, Record>> {
        // A panic elsewhere while holding the lock leaves a consistent map (each update is one
        // assignment), so keep using it.
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The address a client is counted under: IPv4 as is, IPv6 by its /64 prefix (an IPv4-mapped
/// IPv6 address as its IPv4 address).
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    fn limits(max_failures: u32) -> Limits {
        Limits {
            max_failures,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(300),
            max_tracked: 100,
        }
    }

    fn fail(t: &Throttle, ip: IpAddr, n: u32, now: Instant) -> Option<Duration> {
        (0..n).map(|_| t.failed_at(ip, now)).last().flatten()
    }

    #[test]
    fn the_nth_failure_within_the_window_locks_the_address_out() {
        let t = Throttle::new(limits(3));
        let t0 = Instant::now();
        assert_eq!(fail(&t, A, 2, t0), None);
        assert_eq!(t.check_at(A, t0), Ok(()), "two failures of three allowed");
        assert_eq!(t.failed_at(A, t0), Some(Duration::from_secs(300)));
        assert_eq!(t.check_at(A, t0), Err(Duration::from_secs(300)));
    }

    #[test]
    fn the_refusal_says_how_long_is_left_and_ends_after_the_lockout() {
        let t = Throttle::new(limits(3));
        let t0 = Instant::now();
        fail(&t, A, 3, t0);
        let later = t0 + Duration::from_secs(120);
        assert_eq!(t.check_at(A, later), Err(Duration::from_secs(180)));
        let after = t0 + Duration::from_secs(300);
        assert_eq!(t.check_at(A, after), Ok(()));
    }

    #[test]
    fn failures_spread_wider_than_the_window_never_lock() {
        let t = Throttle::new(limits(3));
        let t0 = Instant::now();
        for i in 0..20u64 {
            // Two failures per window: the count starts again each window.
            let now = t0 + Duration::from_secs(61 * i);
            assert_eq!(fail(&t, A, 2, now), None, "window {i}");
            assert_eq!(t.check_at(A, now), Ok(()));
        }
    }

    #[test]
    fn after_a_lockout_the_address_gets_a_fresh_count() {
        let t = Throttle::new(limits(3));
        let t0 = Instant::now();
        fail(&t, A, 3, t0);
        let after = t0 + Duration::from_secs(301);
        assert_eq!(t.check_at(A, after), Ok(()));
        assert_eq!(fail(&t, A, 2, after), None);
        assert_eq!(t.check_at(A, after), Ok(()));
        assert!(
            t.failed_at(A, after).is_some(),
            "the third failure locks again"
        );
    }

    #[test]
    fn failures_during_a_lockout_do_not_extend_it() {
        let t = Throttle::new(limits(2));
        let t0 = Instant::now();
        fail(&t, A, 2, t0);
        assert_eq!(
            fail(&t, A, 5, t0 + Duration::from_secs(100)),
            None,
            "already locked"
        );
        assert_eq!(
            t.check_at(A, t0 + Duration::from_secs(100)),
            Err(Duration::from_secs(200))
        );
    }

    #[test]
    fn one_address_locked_out_leaves_others_alone() {
        let t = Throttle::new(limits(3));
        let t0 = Instant::now();
        fail(&t, A, 3, t0);
        assert!(t.check_at(A, t0).is_err());
        assert_eq!(t.check_at(B, t0), Ok(()));
    }

    #[test]
    fn success_forgets_that_address_only() {
        let t = Throttle::new(limits(3));
        let t0 = Instant::now();
        fail(&t, A, 2, t0);
        fail(&t, B, 2, t0);
        t.succeeded(A);
        assert_eq!(fail(&t, A, 2, t0), None, "A starts again from zero");
        assert!(t.failed_at(B, t0).is_some(), "B's two failures still count");
    }

    #[test]
    fn success_does_not_lift_a_lockout_of_another_address() {
        let t = Throttle::new(limits(2));
        let t0 = Instant::now();
        fail(&t, A, 2, t0);
        t.succeeded(B);
        assert!(t.check_at(A, t0).is_err());
    }

    #[test]
    fn memory_is_bounded_by_max_tracked() {
        let t = Throttle::new(Limits {
            max_tracked: 50,
            ..limits(3)
        });
        let t0 = Instant::now();
        for i in 0..10_000u32 {
            t.failed_at(IpAddr::V4(i.into()), t0);
        }
        assert_eq!(t.tracked(), 50);
    }

    #[test]
    fn the_least_recently_failing_address_is_dropped_first() {
        let t = Throttle::new(Limits {
            max_tracked: 2,
            ..limits(2)
        });
        let t0 = Instant::now();
        fail(&t, A, 2, t0);
        t.failed_at(B, t0);
        // A third address pushes out A, the least recently touched.
        t.failed_at(IpAddr::V4([10, 0, 0, 3].into()), t0);
        assert_eq!(t.check_at(A, t0), Ok(()));
        assert_eq!(t.tracked(), 2);
    }

    #[test]
    fn ipv6_addresses_of_one_64_prefix_count_together() {
        let t = Throttle::new(limits(3));
        let t0 = Instant::now();
        for host in 1..=3u16 {
            t.failed_at(
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, host)),
                t0,
            );
        }
        let same_prefix = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 9, 9, 9, 9));
        let other_prefix = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1));
        assert!(t.check_at(same_prefix, t0).is_err());
        assert_eq!(t.check_at(other_prefix, t0), Ok(()));
    }

    #[test]
    fn an_ipv4_mapped_address_counts_as_its_ipv4_address() {
        let t = Throttle::new(limits(2));
        let t0 = Instant::now();
        fail(&t, A, 2, t0);
        let mapped = IpAddr::V6(std::net::Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert!(t.check_at(mapped, t0).is_err());
    }

    #[test]
    fn zero_limits_are_raised_to_one() {
        let t = Throttle::new(Limits {
            max_failures: 0,
            max_tracked: 0,
            ..limits(0)
        });
        let t0 = Instant::now();
        assert!(t.failed_at(A, t0).is_some(), "the first failure locks");
        assert_eq!(t.tracked(), 1);
    }

    #[test]
    fn concurrent_failures_from_many_threads_are_all_counted() {
        let t = std::sync::Arc::new(Throttle::new(limits(400)));
        let t0 = Instant::now();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || (0..50).filter(|_| t.failed_at(A, t0).is_some()).count())
            })
            .collect();
        let lockouts: usize = threads.into_iter().map(|h| h.join().expect("thread")).sum();
        assert_eq!(lockouts, 1, "the 400th failure, and only it, locks");
        assert!(t.check_at(A, t0).is_err());
    }

    #[test]
    fn the_wall_clock_entry_points_agree() {
        let t = Throttle::new(limits(1));
        assert_eq!(t.check(A), Ok(()));
        assert!(t.failed(A).is_some());
        let left = t.check(A).expect_err("locked");
        assert!(left <= Duration::from_secs(300) && left > Duration::from_secs(290));
    }
}
