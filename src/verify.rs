//! Checking capture with real connections, as Istio's validation container does: a
//! connection from an application uid to an address routed out of the namespace must land on
//! the proxy's outbound capture port with that address as its original destination, and one
//! from the proxy's uid must not be captured. Run it before the proxy listens on its port.

use crate::{Capture, CaptureError};
use nftmesh_netlink::probe::{accept_within, connect_as, original_dst};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

/// What [`crate::Namespace::verify`] connects to and as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Destination of the probe connections: routed out of the namespace and not excluded
    /// from capture (nothing needs to answer there).
    pub destination: SocketAddr,
    /// The uid (and gid) of the connection that must be captured.
    pub app_uid: u32,
    /// The proxy's uid, whose connection must not be captured.
    pub proxy_uid: u32,
    /// The outbound capture port the application's connection must land on.
    pub proxy_port: u16,
    /// How long the captured connection may take to arrive.
    pub wait: Duration,
}

impl Probe {
    /// A probe of `capture` to `destination` from `app_uid`, which must not be a proxy uid.
    pub fn new(
        capture: &Capture,
        destination: SocketAddr,
        app_uid: u32,
    ) -> Result<Self, CaptureError> {
        if capture.proxy_uids().contains(&app_uid) {
            return Err(CaptureError::Verify(format!(
                "app uid {app_uid} is a proxy uid; pick another"
            )));
        }
        Ok(Probe {
            destination,
            app_uid,
            proxy_uid: capture.proxy_uids().first().copied().unwrap_or(1337),
            proxy_port: capture.proxy_port(),
            wait: Duration::from_secs(2),
        })
    }
}

/// What a successful verification saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// One line saying so.
    pub summary: String,
}

/// Run `probe` in the calling thread's namespace.
pub(crate) fn run(probe: &Probe) -> Result<Verified, CaptureError> {
    let (to, app, proxy, port) = (
        probe.destination,
        probe.app_uid,
        probe.proxy_uid,
        probe.proxy_port,
    );
    let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).map_err(|e| {
        CaptureError::Verify(format!(
            "cannot listen on :{port} (is the proxy already running?): {e}"
        ))
    })?;
    // Client and server run at the same time, so a lost connection costs one wait.
    let wait = probe.wait;
    let client = std::thread::spawn(move || connect_as(app, app, to, wait));
    let got = accept_within(&l, wait).map(|s| original_dst(&s));
    let _ = client.join();
    match got {
        Some(Some(orig)) if orig == to => {}
        Some(orig) => {
            return Err(CaptureError::Verify(format!(
                "uid {app}'s connection to {to} landed on :{port} with original destination {orig:?}, not {to}"
            )))
        }
        None => {
            return Err(CaptureError::Verify(format!(
                "uid {app}'s connection to {to} was not captured to :{port}"
            )))
        }
    }
    let short = Duration::from_millis(500);
    let client = std::thread::spawn(move || connect_as(proxy, proxy, to, short));
    let got = accept_within(&l, short);
    let _ = client.join();
    if got.is_some() {
        return Err(CaptureError::Verify(format!(
            "the proxy uid {proxy}'s connection to {to} was captured to :{port}"
        )));
    }
    Ok(Verified {
        summary: format!(
            "verified: uid {app} to {to} is captured to :{port}; the proxy uid {proxy} is not"
        ),
    })
}
