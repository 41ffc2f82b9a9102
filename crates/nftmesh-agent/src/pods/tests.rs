//! The pod state over a fake kernel: every transition without root.

use super::*;
use crate::identity::IdentityError;
use crate::protocol::Desired;
use nftmesh_model::CaptureConfig;

/// A namespace that does what the test says: its differences from the capture, whether its
/// next operation fails, and every call it got.
#[derive(Debug, Default)]
struct Fake {
    drift: Vec<String>,
    fail: Option<String>,
    calls: Vec<&'static str>,
    owned: bool,
    tables: usize,
}

impl PodKernel for Fake {
    fn repair(&mut self) -> Result<Option<Repaired>, String> {
        self.calls.push("repair");
        if let Some(e) = self.fail.take() {
            return Err(e);
        }
        if self.drift.is_empty() {
            return Ok(None);
        }
        let differences = std::mem::take(&mut self.drift);
        Ok(Some(Repaired {
            summary: format!("{} differences", differences.len()),
            differences,
            owned: self.owned,
        }))
    }

    fn repair_job(&self) -> RepairJob {
        // What the namespace holds now, repaired later on another thread.
        let (drift, fail, owned) = (self.drift.clone(), self.fail.clone(), self.owned);
        Box::new(move || match fail {
            Some(e) => Err(e),
            None if drift.is_empty() => Ok(None),
            None => Ok(Some(Repaired {
                summary: format!("{} differences", drift.len()),
                differences: drift,
                owned,
            })),
        })
    }

    fn remove(&mut self) -> Result<usize, String> {
        self.calls.push("remove");
        match self.fail.take() {
            Some(e) => Err(e),
            None => Ok(std::mem::take(&mut self.tables)),
        }
    }
}

fn id(ino: u64) -> NetnsId {
    NetnsId { dev: 4, ino }
}

fn record(path: &str, proxy_port: u16) -> Record {
    Record {
        network_namespace: path.into(),
        identity: None,
        desired: Desired::Capture(Box::new(CaptureConfig {
            proxy_port,
            ..CaptureConfig::sidecar()
        })),
        container_id: None,
        installed_at: 1.0,
        ebpf: None,
    }
}

fn one(fake: Fake) -> Pods<Fake> {
    let mut pods = Pods::default();
    pods.insert(
        id(1),
        record("/run/netns/p", 15001),
        "f".into(),
        fake,
        false,
    );
    pods
}

#[test]
fn a_clean_pod_is_only_checked() {
    let mut pods = one(Fake::default());
    assert_eq!(
        pods.repair(id(1), "resync", "periodic", 5.0),
        RepairOutcome::Clean
    );
    let p = pods.get(id(1)).unwrap();
    assert_eq!((p.last_check, p.repair_count), (Some(5.0), 0));
    assert_eq!(p.kernel.calls, ["repair"]);
    assert_eq!(
        pods.repair(id(9), "resync", "periodic", 5.0),
        RepairOutcome::Unknown
    );
}

#[test]
fn a_storm_of_marks_is_one_repair_for_the_first_reason() {
    let mut pods = one(Fake::default());
    pods.get_mut(id(1)).unwrap().kernel.drift = vec!["rule gone".into(), "table gone".into()];
    for why in ["first", "second", "third"] {
        pods.mark(id(1), "notification", why.into());
    }
    pods.mark(id(7), "notification", "unknown pods are not marked".into());
    assert_eq!(pods.marked(), vec![id(1)]);
    assert_eq!(
        pods.get(id(1)).unwrap().dirty.as_ref().unwrap().why,
        "first"
    );
    let RepairOutcome::Repaired { repaired, .. } = pods.repair(id(1), "notification", "first", 6.0)
    else {
        panic!("repaired")
    };
    assert_eq!(repaired.differences, ["rule gone", "table gone"]);
    assert!(pods.marked().is_empty(), "the mark is consumed");
    let p = pods.get(id(1)).unwrap();
    assert_eq!(p.repair_count, 1);
    assert_eq!(
        p.repairs[0].cause,
        "notification: first: rule gone; table gone"
    );
    assert_eq!(p.kernel.calls, ["repair"], "one repair for the whole burst");
}

#[test]
fn a_failed_repair_is_kept_as_the_last_error_until_one_succeeds() {
    let mut pods = one(Fake {
        fail: Some("EPERM".into()),
        drift: vec!["rule gone".into()],
        ..Fake::default()
    });
    assert_eq!(
        pods.repair(id(1), "notification", "x", 1.0),
        RepairOutcome::Failed("EPERM".into())
    );
    assert_eq!(
        pods.get(id(1)).unwrap().last_error.as_deref(),
        Some("repair: EPERM")
    );
    assert!(matches!(
        pods.repair(id(1), "resync", "periodic", 2.0),
        RepairOutcome::Repaired { .. }
    ));
    assert_eq!(pods.get(id(1)).unwrap().last_error, None);
}

#[test]
fn the_repair_log_keeps_the_latest_and_the_count_goes_on() {
    let mut pods = one(Fake::default());
    for i in 0..(REPAIR_LOG as u64 + 5) {
        pods.get_mut(id(1)).unwrap().kernel.drift = vec![format!("d{i}")];
        pods.repair(id(1), "notification", "x", i as f64);
    }
    let p = pods.get(id(1)).unwrap();
    assert_eq!(p.repair_count, REPAIR_LOG as u64 + 5);
    assert_eq!(p.repairs.len(), REPAIR_LOG);
    assert!(
        p.repairs.back().unwrap().cause.ends_with("d20"),
        "{:?}",
        p.repairs
    );
}

#[test]
fn one_namespace_is_one_pod_and_a_gone_one_is_found_by_its_path() {
    let mut pods = one(Fake::default());
    // The same namespace registered again (another spelling): still one pod.
    pods.insert(
        id(1),
        record("//run/netns/p", 15001),
        "f".into(),
        Fake::default(),
        false,
    );
    assert_eq!(pods.len(), 1);
    assert_eq!(pods.find_by_path(Path::new("//run/netns/p")), Some(id(1)));
    assert_eq!(pods.find_by_path(Path::new("/run/netns/other")), None);
}

#[test]
fn remove_takes_the_capture_away_and_forget_does_not_touch_the_namespace() {
    let mut pods = one(Fake {
        tables: 2,
        ..Fake::default()
    });
    let (pod, removed) = pods.remove(id(1)).unwrap();
    assert_eq!((removed, pod.kernel.calls), (Ok(2), vec!["remove"]));
    assert!(pods.is_empty() && pods.remove(id(1)).is_none());
    let mut pods = one(Fake::default());
    let pod = pods.forget(id(1)).unwrap();
    assert!(pod.kernel.calls.is_empty());
}

#[test]
fn status_names_every_field() {
    let pods = one(Fake::default());
    let s = pods.status(|_, _| true);
    assert_eq!(s.len(), 1);
    for key in [
        "network_namespace",
        "identity",
        "tables_owned",
        "kind",
        "desired",
        "installed_at",
        "last_check",
        "repairs",
        "recent_repairs",
        "last_error",
    ] {
        assert!(s[0].get(key).is_some(), "{key}: {}", s[0]);
    }
    assert!(pods.status(|i, _| i == id(2)).is_empty());
}

#[test]
fn adoption_keeps_what_it_cannot_examine_and_forgets_only_what_is_gone() {
    let gone = || IdentityError::Gone { path: "/p".into() };
    assert_eq!(adoption(Some(id(1)), Ok(id(1))), Adoption::Adopt(id(1)));
    assert_eq!(
        adoption(None, Ok(id(3))),
        Adoption::Adopt(id(3)),
        "an old record takes it"
    );
    assert!(
        matches!(adoption(Some(id(1)), Ok(id(2))), Adoption::Forget(w) if w.contains("another namespace"))
    );
    assert!(matches!(
        adoption(Some(id(1)), Err(gone())),
        Adoption::Forget(_)
    ));
    let node = IdentityError::Node {
        path: "/proc/1/ns/net".into(),
        whose: "the node's",
        id: id(1),
    };
    assert!(matches!(adoption(None, Err(node)), Adoption::Forget(_)));
    let emfile = IdentityError::Io {
        path: "/p".into(),
        error: "Too many open files".into(),
    };
    assert_eq!(
        adoption(Some(id(1)), Err(emfile)),
        Adoption::Keep("/p: Too many open files".into())
    );
}

#[test]
fn a_repair_on_a_worker_runs_once_at_a_time_and_a_mark_meanwhile_brings_one_more() {
    let mut pods = one(Fake {
        drift: vec!["rule gone".into()],
        ..Fake::default()
    });
    assert!(pods.begin_repair(id(1)).is_none(), "nothing marked");
    pods.mark(id(1), "notification", "flushed".into());
    let (mark, job) = pods.begin_repair(id(1)).expect("begun");
    assert_eq!((mark.kind, mark.why.as_str()), ("notification", "flushed"));
    assert!(pods.in_flight(id(1)) && pods.marked().is_empty());
    // Tampered again while the repair runs: marked, but no second repair starts now.
    pods.mark(id(1), "notification", "again".into());
    assert!(pods.marked().is_empty() && pods.begin_repair(id(1)).is_none());
    let result = std::thread::spawn(job).join().unwrap();
    let RepairOutcome::Repaired { repaired, .. } = pods.end_repair(id(1), &mark, result, 9.0)
    else {
        panic!("repaired")
    };
    assert_eq!(repaired.differences, ["rule gone"]);
    assert!(!pods.in_flight(id(1)));
    assert_eq!(
        pods.marked(),
        vec![id(1)],
        "the mark made meanwhile brings one more check"
    );
    let p = pods.get(id(1)).unwrap();
    assert_eq!((p.repair_count, p.last_check), (1, Some(9.0)));
    assert_eq!(p.repairs[0].cause, "notification: flushed: rule gone");
}

#[test]
fn a_late_repair_result_of_a_forgotten_pod_changes_nothing() {
    let mut pods = one(Fake::default());
    pods.mark(id(1), "resync", "periodic check".into());
    let (mark, job) = pods.begin_repair(id(1)).unwrap();
    // The namespace went away (forgotten) before the worker answered.
    assert!(pods.forget(id(1)).is_some());
    let late = job();
    // The namespace registered again before the old result arrived: not touched by it.
    pods.insert(
        id(1),
        record("/run/netns/p", 15001),
        "f".into(),
        Fake::default(),
        false,
    );
    pods.mark(id(1), "notification", "new".into());
    let (new_mark, _) = pods.begin_repair(id(1)).unwrap();
    assert_eq!(
        pods.end_repair(id(1), &mark, late, 3.0),
        RepairOutcome::Unknown
    );
    assert!(
        pods.in_flight(id(1)),
        "the new keeping's own repair still runs"
    );
    assert_eq!(
        pods.end_repair(id(1), &new_mark, Ok(None), 4.0),
        RepairOutcome::Clean
    );
}

#[test]
fn a_held_pod_starts_no_repair_until_released() {
    let mut pods = one(Fake {
        drift: vec!["rule gone".into()],
        ..Fake::default()
    });
    assert!(pods.hold(id(1)) && !pods.hold(id(1)), "one holder");
    assert!(!pods.hold(id(9)));
    pods.mark(id(1), "notification", "flushed".into());
    assert!(pods.marked().is_empty() && pods.begin_repair(id(1)).is_none());
    pods.replaced(id(1), record("/run/netns/p", 15011), true);
    pods.release(id(1));
    let p = pods.get(id(1)).unwrap();
    assert_eq!(
        (p.record.desired.kind(), p.owned, p.dirty.is_none()),
        ("sidecar", true, true)
    );
    pods.checked(id(1), 7.0);
    assert_eq!(pods.get(id(1)).unwrap().last_check, Some(7.0));
    assert!(
        pods.begin_repair(id(1)).is_none(),
        "the re-add cleared the mark"
    );
}
