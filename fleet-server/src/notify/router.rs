//! Routing and rate limits (pure): the first route whose severity and labels match wins, else
//! the default route; each route has a [`TokenBucket`], and a notification over its limit is
//! dropped, never queued.

use super::config::{NotifyConfig, Route};
use super::notification::Notification;

/// A token bucket: `burst` tokens, refilled at `per_minute`. Pure: takes `now_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    capacity: f64,
    per_ms: f64,
    tokens: f64,
    last_ms: i64,
}

impl TokenBucket {
    pub fn new(per_minute: u32, burst: u32, now_ms: i64) -> Self {
        let capacity = f64::from(burst.max(1));
        TokenBucket {
            capacity,
            per_ms: f64::from(per_minute) / 60_000.0,
            tokens: capacity,
            last_ms: now_ms,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now_ms: i64) -> bool {
        let elapsed = (now_ms - self.last_ms).max(0) as f64;
        self.tokens = (self.tokens + elapsed * self.per_ms).min(self.capacity);
        self.last_ms = self.last_ms.max(now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Where one notification goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Send {
        route: String,
        channels: Vec<String>,
    },
    /// Over the route's rate limit: dropped.
    RateLimited {
        route: String,
    },
}

/// Routes and their buckets. See the module docs.
#[derive(Debug, Clone)]
pub struct Router {
    routes: Vec<(Route, TokenBucket)>,
    default: (Route, TokenBucket),
}

impl Router {
    pub fn new(cfg: &NotifyConfig, now_ms: i64) -> Self {
        let with_bucket = |r: &Route| (r.clone(), TokenBucket::new(r.per_minute, r.burst, now_ms));
        Router {
            routes: cfg.routes.iter().map(with_bucket).collect(),
            default: with_bucket(&cfg.default),
        }
    }

    pub fn route(&mut self, n: &Notification, now_ms: i64) -> Decision {
        let (route, bucket) = match self.routes.iter_mut().find(|(r, _)| r.matches(n)) {
            Some(found) => found,
            None => &mut self.default,
        };
        if bucket.take(now_ms) {
            Decision::Send {
                route: route.name.clone(),
                channels: route.channels.clone(),
            }
        } else {
            Decision::RateLimited {
                route: route.name.clone(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use common::Severity;

    use super::*;
    use crate::notify::testkit::*;

    #[test]
    fn the_first_matching_route_wins_and_the_default_takes_the_rest() {
        let cfg = build_section(ROUTES).validate("notify").unwrap();
        let mut r = Router::new(&cfg, 0);
        let route_of = |r: &mut Router, n: &Notification| match r.route(n, 0) {
            Decision::Send { route, .. } | Decision::RateLimited { route } => route,
        };
        // critical hardware: the hardware route comes first
        let hw = build_notification(Severity::Critical, &[("team", "hardware")]);
        assert_eq!(route_of(&mut r, &hw), "hardware");
        let crit = build_notification(Severity::Critical, &[("team", "vision")]);
        assert_eq!(
            r.route(&crit, 0),
            Decision::Send {
                route: "pager".into(),
                channels: vec!["hook".into(), "mail".into()]
            }
        );
        let warn = build_notification(Severity::Warning, &[]);
        assert_eq!(route_of(&mut r, &warn), "default");
    }

    #[test]
    fn a_route_over_its_rate_drops_until_tokens_refill() {
        let cfg = build_section(ROUTES).validate("notify").unwrap();
        let mut r = Router::new(&cfg, 0);
        let crit = build_notification(Severity::Critical, &[]);
        assert!(matches!(r.route(&crit, 0), Decision::Send { .. }));
        assert!(matches!(r.route(&crit, 1), Decision::Send { .. }));
        assert_eq!(
            r.route(&crit, 2),
            Decision::RateLimited {
                route: "pager".into()
            }
        );
        // other routes have their own bucket
        assert!(matches!(
            r.route(&build_notification(Severity::Info, &[]), 3),
            Decision::Send { .. }
        ));
        // 2 a minute: one token every 30 s
        assert!(matches!(r.route(&crit, 30_002), Decision::Send { .. }));
        assert!(matches!(r.route(&crit, 30_003), Decision::RateLimited { .. }));
    }

    #[test]
    fn a_token_bucket_allows_a_burst_then_the_rate() {
        let mut b = TokenBucket::new(10, 10, 0);
        assert_eq!((0..20).filter(|_| b.take(0)).count(), 10);
        assert!(!b.take(5_999));
        assert!(b.take(6_000));
        // a clock going back neither refills nor panics
        assert!(!b.take(0));
        let mut b = TokenBucket::new(10, 10, 0);
        assert_eq!(
            (0..20).filter(|_| b.take(3_600_000)).count(),
            10,
            "capped at burst"
        );
    }
}
