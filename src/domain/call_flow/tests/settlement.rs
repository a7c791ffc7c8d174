//! What a call settles: the publisher's payout.

use super::*;

#[test]
fn a_publisher_is_paid_once_per_caller_inside_its_window() {
    for (paid_before, silent, payout) in [
        (false, false, Some("5.00")),
        (true, false, Some("0.00")),
        (false, true, None),
    ] {
        let mut world = World::new();
        world.paid_before = paid_before;
        let (record, _) = world.call([incoming()]);
        world.silent = silent;
        let record = record.unwrap();
        let payout = payout.map(|p| Money::parse(p).unwrap());
        assert_eq!(
            record.publisher_payout.filter(|_| !silent),
            payout.filter(|_| !silent)
        );
        if silent {
            // Unknown now: nothing is settled (the next request asks again).
            let mut world = World::new();
            world.silent = true;
            world.full.clear();
            let applied = world.apply(None, incoming());
            assert_eq!(applied.record.unwrap().publisher_payout, None);
        } else {
            assert_eq!(record.publisher_duplicate, Some(paid_before));
        }
    }
}
