//! A map with a fixed capacity, for memos that outside traffic can fill: inserting a new
//! key into a full map evicts the oldest insertion, so the map never holds more than its
//! capacity however many distinct keys arrive. Each value carries the time it was stored.

use std::collections::{HashMap, VecDeque};

pub struct BoundedMap<V> {
    capacity: usize,
    map: HashMap<String, (V, u64)>,
    /// Insertion order. A removed key stays here until it reaches the front (or the queue
    /// is compacted), so it may evict the entry re-inserted under its name early: never
    /// more than the capacity is held, which is what matters.
    order: VecDeque<String>,
}

impl<V> BoundedMap<V> {
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "a bounded map holds something");
        BoundedMap { capacity, map: HashMap::new(), order: VecDeque::new() }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The value and when it was stored.
    pub fn get(&self, key: &str) -> Option<(&V, u64)> {
        self.map.get(key).map(|(v, at)| (v, *at))
    }

    /// The value if it was stored less than `max_age` before `now`.
    pub fn fresh(&self, key: &str, now: u64, max_age: u64) -> Option<&V> {
        self.get(key).filter(|(_, at)| now.saturating_sub(*at) < max_age).map(|(v, _)| v)
    }

    pub fn insert(&mut self, key: &str, value: V, at: u64) {
        if let Some(slot) = self.map.get_mut(key) {
            *slot = (value, at);
            return;
        }
        while self.map.len() >= self.capacity {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.map.remove(&oldest);
                }
                None => break,
            }
        }
        self.map.insert(key.to_string(), (value, at));
        self.order.push_back(key.to_string());
        if self.order.len() > 2 * self.capacity {
            let map = &self.map;
            self.order.retain(|k| map.contains_key(k));
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        self.map.remove(key).map(|(v, _)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_holds_more_than_its_capacity() {
        let mut m = BoundedMap::new(3);
        for i in 0..10_000u64 {
            m.insert(&format!("k{i}"), i, i);
            assert!(m.len() <= 3);
            assert!(m.order.len() <= 6, "the order queue is bounded too");
        }
        // The newest stay.
        assert_eq!(
            (m.get("k9999"), m.get("k9998"), m.get("k9997")),
            (Some((&9999, 9999)), Some((&9998, 9998)), Some((&9997, 9997)))
        );
        assert!(m.get("k0").is_none());
    }

    #[test]
    fn the_oldest_insertion_goes_first() {
        let mut m = BoundedMap::new(2);
        m.insert("a", 1, 10);
        m.insert("b", 2, 20);
        m.insert("a", 3, 30); // an update keeps its place
        m.insert("c", 4, 40);
        assert_eq!((m.get("a"), m.get("b"), m.get("c")), (None, Some((&2, 20)), Some((&4, 40))));
        assert_eq!(m.fresh("c", 45, 10), Some(&4));
        assert_eq!(m.fresh("c", 50, 10), None);
        assert_eq!(m.remove("b"), Some(2));
        assert_eq!(m.len(), 1);
        m.insert("d", 5, 50);
        m.insert("e", 6, 60);
        assert_eq!(m.len(), 2);
        assert!(m.get("e").is_some());
    }

    #[test]
    fn removal_and_reinsertion_stay_bounded() {
        let mut m = BoundedMap::new(4);
        for i in 0..5_000u64 {
            let k = format!("k{}", i % 7);
            m.insert(&k, i, i);
            if i % 3 == 0 {
                m.remove(&k);
            }
            assert!(m.len() <= 4 && m.order.len() <= 8);
        }
    }
}
