use super::*;

fn factors(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

fn counts(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
    pairs.iter().map(|(a, b)| (a.to_string(), *b)).collect()
}

#[test]
fn the_overlap_rule_by_hand() {
    // W = quorum(old) replicas hold old mail; R = quorum(new) are read; complete iff R + W > new.
    assert!(safe_increase(2, 3), "W 2 + R 2 > 3");
    assert!(safe_increase(1, 2), "W 1 + R 2 > 2");
    assert!(safe_increase(2, 4), "W 2 + R 3 > 4");
    assert!(!safe_increase(1, 3), "W 1 + R 2 = 3: a read may ask the two new replicas only");
    assert!(!safe_increase(3, 5), "W 2 + R 3 = 5");
    assert!(!safe_increase(1, 9));
}

#[test]
fn one_more_replica_is_always_safe_and_steps_are_the_largest_safe_ones() {
    for old in 1..9 {
        assert!(safe_increase(old, old + 1), "{old} -> {}", old + 1);
        for wanted in old + 1..=9 {
            let step = safe_step(old, wanted);
            assert!(step > old && step <= wanted && safe_increase(old, step));
            assert!(
                (step + 1..=wanted).all(|s| !safe_increase(old, s)),
                "{old} -> {wanted}: {step} is not the largest"
            );
        }
    }
    assert_eq!(safe_step(1, 3), 2);
    assert_eq!(safe_step(3, 5), 4);
    assert_eq!(safe_step(2, 4), 4);
}

#[test]
fn a_factor_larger_than_the_nodes_refuses_everything() {
    let p = plan(
        Some(&factors(&[("dc1", "1"), ("dc2", "1")])),
        &counts(&[("dc1", 2), ("dc2", 1)]),
        &counts(&[("dc1", 1), ("dc2", 1)]),
        false,
        &BTreeMap::new(),
    );
    assert_eq!(p.write, None, "not even dc2's unchanged factor or a migration is written");
    assert_eq!(p.holds, [Hold::ExceedsNodes { dc: "dc1".into(), factor: 2, nodes: 1 }]);
    let m = p.holds[0].message("ks");
    assert!(m.contains("dc1") && m.contains("factor 2") && m.contains("1 Cassandra node"), "{m}");
    // A datacenter Cassandra does not know has 0 nodes; a keyspace not created yet is refused too.
    let p = plan(None, &counts(&[("dc3", 1)]), &counts(&[("dc1", 1)]), false, &BTreeMap::new());
    assert_eq!(p.holds, [Hold::ExceedsNodes { dc: "dc3".into(), factor: 1, nodes: 0 }]);
}

#[test]
fn creation_and_additions_are_written_as_asked() {
    let nodes = counts(&[("dc1", 3), ("dc2", 3)]);
    let p = plan(None, &counts(&[("dc1", 3)]), &nodes, false, &BTreeMap::new());
    assert_eq!(p.write, Some(counts(&[("dc1", 3)])));
    let p = plan(Some(&factors(&[("dc1", "3")])), &counts(&[("dc1", 3), ("dc2", 3)]), &nodes, true, &BTreeMap::new());
    assert_eq!(p.write, Some(counts(&[("dc1", 3), ("dc2", 3)])), "an added DC is gated by awaitingData instead");
    assert!(p.holds.is_empty());
}

#[test]
fn a_decrease_is_held_until_exactly_that_factor_is_allowed() {
    let current = factors(&[("dc1", "3"), ("dc2", "3")]);
    let nodes = counts(&[("dc1", 3), ("dc2", 3)]);
    let wanted = counts(&[("dc1", 2), ("dc2", 3)]);
    let p = plan(Some(&current), &wanted, &nodes, false, &BTreeMap::new());
    assert_eq!(p.write, Some(counts(&[("dc2", 3)])), "dc1 left out keeps its factor");
    assert_eq!(p.holds, [Hold::Decrease { dc: "dc1".into(), from: 3, to: 2 }]);
    assert!(p.holds[0].blocking());
    assert!(p.holds[0].message("ks").contains("nodetool cleanup ks"));
    let other = parse_allowed(Some(&"dc1=1".to_string()));
    assert_eq!(plan(Some(&current), &wanted, &nodes, false, &other).holds.len(), 1, "another factor allows nothing");
    let allowed = parse_allowed(Some(&" dc1 = 2 ,junk, dc2=x".to_string()));
    assert_eq!(allowed, counts(&[("dc1", 2)]));
    let p = plan(Some(&current), &wanted, &nodes, false, &allowed);
    assert_eq!(p.write, Some(wanted));
    assert!(p.holds.is_empty());
}

#[test]
fn an_unsafe_increase_goes_in_safe_steps_each_after_a_repair() {
    let nodes = counts(&[("dc1", 5)]);
    let wanted = counts(&[("dc1", 3)]);
    let p = plan(Some(&factors(&[("dc1", "1")])), &wanted, &nodes, false, &BTreeMap::new());
    assert_eq!(p.write, Some(counts(&[("dc1", 2)])));
    assert_eq!(p.holds, [Hold::Increase { dc: "dc1".into(), from: 1, step: 2, to: 3 }]);
    assert!(!p.holds[0].blocking(), "a documented step under way, not a failure");
    // The next reconcile: 2 written, its repair not acknowledged yet: nothing more.
    let p = plan(Some(&factors(&[("dc1", "2")])), &wanted, &nodes, true, &BTreeMap::new());
    assert_eq!(p.write, Some(BTreeMap::new()));
    assert_eq!(p.holds, [Hold::Increase { dc: "dc1".into(), from: 2, step: 2, to: 3 }]);
    // Acknowledged: 2 -> 3 is safe, written in one go.
    let p = plan(Some(&factors(&[("dc1", "2")])), &wanted, &nodes, false, &BTreeMap::new());
    assert_eq!(p.write, Some(wanted));
    assert!(p.holds.is_empty());
    // 3 -> 5: 4 first.
    let p = plan(Some(&factors(&[("dc1", "3")])), &counts(&[("dc1", 5)]), &nodes, false, &BTreeMap::new());
    assert_eq!(p.write, Some(counts(&[("dc1", 4)])));
}
