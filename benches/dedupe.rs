//! A de-dupe check as the index grows: 10^4 to 10^7 stored conversions, five buyers' rules
//! checked for a caller the index holds and for one it does not. `cargo bench --bench dedupe`
//! (the largest index takes about 1.5 GB and a few seconds to build).

use std::hint::black_box;
use switchboard::fresh::Generate;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use jiff::{SignedDuration, Timestamp};
use switchboard::domain::{
    dedupe::{DedupeIndex, Rule, Scope, Touch},
    ids::Id,
    phone::E164,
    plan::{BuyerId, DuplicateAfter},
};

const BUYERS: usize = 5;

/// The `n`th simulated caller: distinct NANP-shaped numbers.
fn caller(n: u64) -> E164 {
    E164::from_provider(&format!("+1{}", 2_000_000_000 + n)).expect("a number")
}

fn checks(c: &mut Criterion) {
    let at: Timestamp = "2026-11-24T18:00:00Z".parse().expect("a time");
    let buyers: Vec<BuyerId> = (0..BUYERS).map(|_| Id::generate()).collect();
    let rules: Vec<Rule> = (buyers.iter())
        .map(|buyer| Rule {
            buyer: *buyer,
            scope: Scope::Buyer(*buyer),
            window_seconds: 30 * 24 * 3600,
            after: DuplicateAfter::Converted,
        })
        .collect();
    let mut group = c.benchmark_group("de-dupe check, 5 buyers");
    let mut index = DedupeIndex::default();
    let mut stored = 0u64;
    for size in [10_000u64, 100_000, 1_000_000, 10_000_000] {
        // Grow the one index to the next size: each conversion a caller with one of the buyers,
        // over the last month.
        while stored < size {
            let scope = Scope::Buyer(buyers[(stored % BUYERS as u64) as usize]);
            let when = at - SignedDuration::from_secs((stored % (30 * 24 * 3600)) as i64);
            index.record(&caller(stored), &scope, Touch::Converted, when);
            stored += 1;
        }
        // Up to a million callers spread over the whole index, looked up in turn: at the larger
        // sizes more than the CPU caches hold, as a busy network's callers would be.
        let spread = size.min(1 << 20);
        let known: Vec<E164> = (0..spread).map(|i| caller(i * (size / spread))).collect();
        let unknown: Vec<E164> = (0..spread).map(|i| caller(size + i)).collect();
        let mut next = 0;
        group.bench_with_input(BenchmarkId::new("a caller held", size), &size, |b, _| {
            b.iter(|| {
                next = (next + 1) % known.len();
                black_box(index.duplicates(&known[next], &rules, at))
            })
        });
        group.bench_with_input(BenchmarkId::new("a new caller", size), &size, |b, _| {
            b.iter(|| {
                next = (next + 1) % unknown.len();
                black_box(index.duplicates(&unknown[next], &rules, at))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, checks);
criterion_main!(benches);
