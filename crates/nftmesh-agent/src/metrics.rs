//! The agent's metrics in Prometheus' text format: pods kept, applies, repairs by cause,
//! errors, and apply and repair latency histograms; served on `--metrics-addr` by a small
//! HTTP responder thread ([`serve`]).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Histogram bucket bounds, in seconds.
const BUCKETS: [f64; 10] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0];

/// A latency histogram.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    /// Count one observation.
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += s;
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} histogram\n"));
        for (i, b) in BUCKETS.iter().enumerate() {
            out.push_str(&format!("{name}_bucket{{le=\"{b}\"}} {}\n", self.counts[i]));
        }
        out.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {}\n", self.count));
        out.push_str(&format!(
            "{name}_sum {}\n{name}_count {}\n",
            self.sum, self.count
        ));
    }
}

/// Everything counted.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Pods kept now.
    pub pods: u64,
    /// Captures installed on request (`add`).
    pub applies: u64,
    /// Repairs, by cause (`notification`, `resync`, `adopt`).
    pub repairs: BTreeMap<&'static str, u64>,
    /// Failed operations, by operation.
    pub errors: BTreeMap<&'static str, u64>,
    /// Namespaces forgotten because they disappeared.
    pub forgotten: u64,
    /// Requests refused for their peer's credentials.
    pub refused_peers: u64,
    /// Apply latency.
    pub apply_seconds: Histogram,
    /// Repair latency: from the notification (or resync) to the committed repair.
    pub repair_seconds: Histogram,
}

impl Metrics {
    /// The text exposition.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, kind: &str, v: u64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            ));
        };
        gauge(
            &mut out,
            "nftmesh_agent_pods",
            "Pods whose capture the agent keeps.",
            "gauge",
            self.pods,
        );
        gauge(
            &mut out,
            "nftmesh_agent_applies_total",
            "Captures installed on request.",
            "counter",
            self.applies,
        );
        gauge(
            &mut out,
            "nftmesh_agent_forgotten_total",
            "Pods forgotten because their namespace disappeared.",
            "counter",
            self.forgotten,
        );
        gauge(
            &mut out,
            "nftmesh_agent_refused_peers_total",
            "Connections refused for their peer's credentials.",
            "counter",
            self.refused_peers,
        );
        out.push_str("# HELP nftmesh_agent_repairs_total Captures repaired, by cause.\n# TYPE nftmesh_agent_repairs_total counter\n");
        for cause in ["notification", "resync", "adopt"] {
            let v = self.repairs.get(cause).copied().unwrap_or(0);
            out.push_str(&format!(
                "nftmesh_agent_repairs_total{{cause=\"{cause}\"}} {v}\n"
            ));
        }
        out.push_str("# HELP nftmesh_agent_errors_total Failed operations, by operation.\n# TYPE nftmesh_agent_errors_total counter\n");
        for (op, v) in &self.errors {
            out.push_str(&format!(
                "nftmesh_agent_errors_total{{operation=\"{op}\"}} {v}\n"
            ));
        }
        self.apply_seconds.write(
            &mut out,
            "nftmesh_agent_apply_seconds",
            "Time to install a capture on request.",
        );
        self.repair_seconds.write(
            &mut out,
            "nftmesh_agent_repair_seconds",
            "Time from a detected change to the committed repair.",
        );
        out
    }
}

/// Scrapes served at once at most; more are closed at once (a scraper retries).
const MAX_SCRAPES: usize = 16;

/// Serve `GET /metrics` (any path) on `listener`: each connection on a short-lived thread of
/// its own, bounded in time (2 s to read the request, 2 s to write the reply), so a client
/// that stalls delays no other scrape.
pub fn serve(listener: TcpListener, metrics: Arc<Mutex<Metrics>>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let busy = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            if busy.fetch_add(1, Ordering::SeqCst) >= MAX_SCRAPES {
                busy.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            let (metrics, done) = (metrics.clone(), busy.clone());
            let spawned = std::thread::Builder::new()
                .name("nftmesh-metrics".into())
                .spawn(move || {
                    scrape(conn, &metrics);
                    done.fetch_sub(1, Ordering::SeqCst);
                });
            if spawned.is_err() {
                busy.fetch_sub(1, Ordering::SeqCst);
            }
        }
    });
}

/// Answer one scrape.
fn scrape(mut conn: std::net::TcpStream, metrics: &Mutex<Metrics>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
    // The request line and headers, up to the blank line (at most 8 KiB).
    let mut reader = BufReader::new((&conn).take_limited());
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    let body = metrics
        .lock()
        .map(|m| m.text())
        .unwrap_or_else(|p| p.into_inner().text());
    let _ = write!(
        conn,
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
}

/// A reader of at most 8 KiB.
trait TakeLimited: std::io::Read + Sized {
    fn take_limited(self) -> std::io::Take<Self> {
        self.take(8 * 1024)
    }
}

impl<R: std::io::Read> TakeLimited for R {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_that_stalls_delays_no_other_scrape() {
        use std::io::Read;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        serve(l, Arc::new(Mutex::new(Metrics::default())));
        // Connected, and silent: its request never ends.
        let _stalled = std::net::TcpStream::connect(addr).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        // Well under the stalled client's 2 s read timeout.
        c.set_read_timeout(Some(Duration::from_millis(1000)))
            .unwrap();
        c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut body = String::new();
        c.read_to_string(&mut body).unwrap();
        assert!(body.contains("nftmesh_agent_pods 0"), "{body}");
    }

    #[test]
    fn the_text_has_every_family_and_the_histograms_add_up() {
        let mut m = Metrics {
            pods: 3,
            ..Metrics::default()
        };
        m.repairs.insert("notification", 2);
        m.apply_seconds.observe(Duration::from_micros(700));
        m.apply_seconds.observe(Duration::from_millis(30));
        let t = m.text();
        assert!(t.contains("nftmesh_agent_pods 3\n"));
        assert!(t.contains("nftmesh_agent_repairs_total{cause=\"notification\"} 2\n"));
        assert!(t.contains("nftmesh_agent_repairs_total{cause=\"resync\"} 0\n"));
        assert!(t.contains("nftmesh_agent_apply_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(t.contains("nftmesh_agent_apply_seconds_bucket{le=\"0.05\"} 2\n"));
        assert!(t.contains("nftmesh_agent_apply_seconds_count 2\n"));
    }
}
