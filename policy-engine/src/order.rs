//! Load-time sorting with one copy of the standard library's sort in the module.
//!
//! `sort_by` is generic over the element and the comparison: each call site with its own
//! closure gets its own copy of driftsort (quicksort, merges, small-sort networks), about 7 KB of
//! Wasm that V8 compiles with TurboFan in every sidecar at start-up. The engine sorts a few small
//! lists once per load, so every site goes through [`sort_stable_by`], which sorts positions
//! with one comparison type (`&dyn Fn`): one copy of the sort for the whole engine.

use std::cmp::Ordering;

/// The positions `0..len` ordered by `cmp`; positions that compare equal stay in their order.
fn stable_order(len: usize, cmp: &dyn Fn(usize, usize) -> Ordering) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    order.sort_by(|&a, &b| cmp(a, b));
    order
}

/// Sorts `items` by `cmp`, keeping equal items in their order (as `slice::sort_by`).
pub(crate) fn sort_stable_by<T>(items: &mut Vec<T>, cmp: impl Fn(&T, &T) -> Ordering) {
    if items.len() < 2 {
        return;
    }
    let order = stable_order(items.len(), &|a, b| match (items.get(a), items.get(b)) {
        (Some(x), Some(y)) => cmp(x, y),
        _ => Ordering::Equal,
    });
    let mut slots: Vec<Option<T>> = items.drain(..).map(Some).collect();
    items.extend(
        order
            .into_iter()
            .filter_map(|i| slots.get_mut(i).and_then(Option::take)),
    );
}

/// Sorts `items` in their natural order and removes repeats.
pub(crate) fn sort_dedup<T: Ord>(items: &mut Vec<T>) {
    sort_stable_by(items, T::cmp);
    items.dedup();
}

#[cfg(test)]
mod tests {
    use super::{sort_dedup, sort_stable_by};

    #[test]
    fn sorts_stably() {
        let mut v = vec![(3, 'a'), (1, 'b'), (3, 'c'), (2, 'd'), (1, 'e')];
        sort_stable_by(&mut v, |x, y| x.0.cmp(&y.0));
        assert_eq!(v, vec![(1, 'b'), (1, 'e'), (2, 'd'), (3, 'a'), (3, 'c')]);
    }

    #[test]
    fn agrees_with_the_standard_sort() {
        // A fixed pseudo-random sequence: many repeats, every length up to 200.
        let mut x: u32 = 12345;
        for len in 0..200 {
            let v: Vec<(u32, usize)> = (0..len)
                .map(|i| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    ((x >> 16) % 7, i)
                })
                .collect();
            let mut ours = v.clone();
            sort_stable_by(&mut ours, |a, b| a.0.cmp(&b.0));
            let mut std = v;
            std.sort_by_key(|a| a.0);
            assert_eq!(ours, std);
        }
    }

    #[test]
    fn sorts_and_removes_repeats() {
        let mut v = vec![8080_u16, 80, 8080, 443, 80];
        sort_dedup(&mut v);
        assert_eq!(v, vec![80, 443, 8080]);
    }
}
