//! Budgets against abusive or unlucky clients: token buckets (per connection and per client
//! address), per-subject connection counts, and the back-off for subjects whose updates the
//! database refuses. Pure bookkeeping: no I/O, so it is tested with plain `#[test]`s.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

use crate::fanout::lock;

/// A token bucket: `burst` tokens, refilled at `per_sec`. `per_sec <= 0` means unlimited.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    burst: f64,
    per_sec: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    pub fn new(burst: u32, per_sec: f64) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            burst,
            per_sec,
            tokens: burst,
            at: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.per_sec).min(self.burst);
        self.at = now;
    }

    /// Takes a token if there is one.
    pub fn try_take(&mut self) -> bool {
        self.try_take_at(Instant::now())
    }

    pub fn try_take_at(&mut self, now: Instant) -> bool {
        if self.per_sec <= 0.0 {
            return true;
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until a token is there (zero if one is).
    pub fn wait_time(&mut self) -> Duration {
        if self.per_sec <= 0.0 {
            return Duration::ZERO;
        }
        self.refill(Instant::now());
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec)
        }
    }

    /// Whether the bucket is full again (so an idle key can be forgotten).
    fn is_full_at(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// Token buckets per key (client addresses), forgetting keys whose bucket is full again.
pub struct KeyedLimiter<K> {
    burst: u32,
    per_sec: f64,
    buckets: Mutex<HashMap<K, TokenBucket>>,
    last_sweep: Mutex<Instant>,
}

impl<K: Eq + Hash + Clone> KeyedLimiter<K> {
    pub fn new(burst: u32, per_sec: f64) -> Self {
        KeyedLimiter {
            burst,
            per_sec,
            buckets: Mutex::new(HashMap::new()),
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    pub fn try_take(&self, key: &K) -> bool {
        if self.per_sec <= 0.0 {
            return true;
        }
        let now = Instant::now();
        let mut buckets = lock(&self.buckets);
        {
            // Bounded memory under a flood of addresses: full buckets carry no information.
            let mut last = lock(&self.last_sweep);
            if now.saturating_duration_since(*last) > Duration::from_secs(10) {
                buckets.retain(|_, b| !b.is_full_at(now));
                *last = now;
            }
        }
        buckets
            .entry(key.clone())
            .or_insert_with(|| TokenBucket::new(self.burst, self.per_sec))
            .try_take_at(now)
    }
}

/// The client address of a request: the TCP peer, or (behind a trusted proxy) the last entry
/// of the configured header, which is the one that proxy wrote.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted_header: Option<&str>) -> IpAddr {
    let from_header = trusted_header.and_then(|name| {
        let value = headers.get_all(name).iter().next_back()?.to_str().ok()?;
        let last = value.rsplit(',').next()?.trim();
        last.parse::<IpAddr>()
            .ok()
            .or_else(|| last.parse::<SocketAddr>().ok().map(|a| a.ip()))
    });
    from_header.unwrap_or_else(|| peer.ip())
}

/// Open connections per token subject, with a cap.
#[derive(Default)]
pub struct SubjectCounts {
    counts: Mutex<HashMap<Arc<str>, usize>>,
}

/// One subject's place, given back on drop.
pub struct SubjectSlot {
    owner: Arc<SubjectCounts>,
    subject: Arc<str>,
}

impl Drop for SubjectSlot {
    fn drop(&mut self) {
        let mut counts = lock(&self.owner.counts);
        if let Some(n) = counts.get_mut(&self.subject) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.subject);
            }
        }
    }
}

impl SubjectCounts {
    /// A place for `subject`, or None when it already has `max` connections (0: no cap).
    pub fn try_take(self: &Arc<Self>, subject: &str, max: usize) -> Option<SubjectSlot> {
        let mut counts = lock(&self.counts);
        let subject: Arc<str> = Arc::from(subject);
        let n = counts.entry(subject.clone()).or_insert(0);
        if max > 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(SubjectSlot {
            owner: self.clone(),
            subject,
        })
    }
}

/// Subjects whose updates the database refused: each refusal doubles how long the subject's
/// new connections are turned away (1 s, 2 s, ... up to 5 min), so a client that resends the
/// same bad update on every reconnect does not make the database refuse it in a tight loop.
#[derive(Default)]
pub struct Refusals {
    by_subject: Mutex<HashMap<String, (u32, Instant)>>,
}

const REFUSAL_MAX: Duration = Duration::from_secs(300);
/// A subject with no refusal for this long starts again from the first step.
const REFUSAL_FORGET: Duration = Duration::from_secs(900);

impl Refusals {
    pub fn refused(&self, subject: &str) {
        self.refused_at(subject, Instant::now())
    }

    fn refused_at(&self, subject: &str, now: Instant) {
        let mut m = lock(&self.by_subject);
        m.retain(|_, (_, until)| now.saturating_duration_since(*until) < REFUSAL_FORGET);
        let e = m.entry(subject.to_string()).or_insert((0, now));
        e.0 = e.0.saturating_add(1);
        let wait = Duration::from_secs(1u64 << (e.0 - 1).min(9)).min(REFUSAL_MAX);
        e.1 = now + wait;
    }

    /// How long `subject` must still wait, if it must.
    pub fn wait(&self, subject: &str) -> Option<Duration> {
        self.wait_at(subject, Instant::now())
    }

    fn wait_at(&self, subject: &str, now: Instant) -> Option<Duration> {
        let m = lock(&self.by_subject);
        let (_, until) = m.get(subject)?;
        (*until > now).then(|| *until - now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate() {
        let mut b = TokenBucket::new(3, 2.0);
        let t0 = Instant::now();
        assert!(b.try_take_at(t0));
        assert!(b.try_take_at(t0));
        assert!(b.try_take_at(t0));
        assert!(!b.try_take_at(t0));
        assert!(b.try_take_at(t0 + Duration::from_millis(500)));
        assert!(!b.try_take_at(t0 + Duration::from_millis(600)));
    }

    #[test]
    fn a_zero_rate_is_unlimited() {
        let mut b = TokenBucket::new(1, 0.0);
        for _ in 0..100 {
            assert!(b.try_take());
        }
    }

    #[test]
    fn the_trusted_header_wins_only_when_configured() {
        let peer: SocketAddr = "10.0.0.1:5000".parse().expect("addr");
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "1.2.3.4, 5.6.7.8".parse().expect("header"),
        );
        assert_eq!(client_ip(peer, &h, None), peer.ip());
        assert_eq!(
            client_ip(peer, &h, Some("x-forwarded-for")),
            "5.6.7.8".parse::<IpAddr>().expect("ip")
        );
        h.insert("x-forwarded-for", "garbage".parse().expect("header"));
        assert_eq!(client_ip(peer, &h, Some("x-forwarded-for")), peer.ip());
    }

    #[test]
    fn subject_caps_count_and_give_back() {
        let c = Arc::new(SubjectCounts::default());
        let a = c.try_take("ada", 2).expect("first");
        let _b = c.try_take("ada", 2).expect("second");
        assert!(c.try_take("ada", 2).is_none());
        assert!(c.try_take("bob", 2).is_some());
        drop(a);
        assert!(c.try_take("ada", 2).is_some());
    }

    #[test]
    fn refusals_back_off_exponentially() {
        let r = Refusals::default();
        let t0 = Instant::now();
        assert!(r.wait_at("ada", t0).is_none());
        r.refused_at("ada", t0);
        assert_eq!(r.wait_at("ada", t0), Some(Duration::from_secs(1)));
        r.refused_at("ada", t0);
        assert_eq!(r.wait_at("ada", t0), Some(Duration::from_secs(2)));
        r.refused_at("ada", t0);
        assert_eq!(r.wait_at("ada", t0), Some(Duration::from_secs(4)));
        assert!(r.wait_at("bob", t0).is_none());
        assert!(r.wait_at("ada", t0 + Duration::from_secs(5)).is_none());
    }
}
