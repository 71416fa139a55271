//! The schedule, kept apart from the socket so it can be tested without root or a kernel queue.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Items held for a fixed delay and released in arrival order.
pub struct DelayLine<T> {
    delay: Duration,
    held: VecDeque<(Instant, T)>,
}

impl<T> DelayLine<T> {
    pub fn new(delay: Duration) -> Self {
        DelayLine { delay, held: VecDeque::new() }
    }

    pub fn push(&mut self, now: Instant, item: T) {
        // A deadline never precedes the one ahead of it, so deadlines stay sorted and release order
        // is arrival order whatever `now` a caller passes: TCP reads reordering as loss.
        let mut deadline = now + self.delay;
        if let Some(&(last, _)) = self.held.back() {
            deadline = deadline.max(last);
        }
        self.held.push_back((deadline, item));
    }

    /// Removes and yields, oldest first, every item whose deadline is at or before `now`.
    pub fn due(&mut self, now: Instant) -> impl Iterator<Item = T> + '_ {
        let n = self.held.partition_point(|&(deadline, _)| deadline <= now);
        self.held.drain(..n).map(|(_, item)| item)
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.held.front().map(|&(deadline, _)| deadline)
    }

    /// Removes and yields everything held, deadline or not (for shutdown).
    pub fn drain_all(&mut self) -> impl Iterator<Item = T> + '_ {
        self.held.drain(..).map(|(_, item)| item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn holds_until_the_deadline_then_releases_in_arrival_order() {
        let t0 = Instant::now();
        let mut line = DelayLine::new(5 * MS);
        line.push(t0, 'a');
        line.push(t0, 'b');
        line.push(t0 + MS, 'c');
        assert_eq!(line.next_deadline(), Some(t0 + 5 * MS));
        assert_eq!(line.due(t0 + 4 * MS).count(), 0);
        assert_eq!(line.due(t0 + 5 * MS).collect::<String>(), "ab");
        assert_eq!(line.next_deadline(), Some(t0 + 6 * MS));
        assert_eq!(line.due(t0 + 60 * MS).collect::<String>(), "c");
        assert_eq!(line.next_deadline(), None);
    }

    #[test]
    fn many_items_keep_their_order() {
        let t0 = Instant::now();
        let mut line = DelayLine::new(3 * MS);
        for i in 0..1000u32 {
            line.push(t0 + Duration::from_micros(u64::from(i) * 7), i);
        }
        let mut out = Vec::new();
        let mut now = t0;
        while line.next_deadline().is_some() {
            now += Duration::from_micros(250);
            out.extend(line.due(now));
        }
        assert_eq!(out, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn an_earlier_now_does_not_overtake_what_is_held() {
        let t0 = Instant::now();
        let mut line = DelayLine::new(2 * MS);
        line.push(t0 + MS, 'a');
        line.push(t0, 'b');
        assert_eq!(line.due(t0 + 2 * MS).count(), 0, "b waits behind a");
        assert_eq!(line.due(t0 + 3 * MS).collect::<String>(), "ab");
    }

    #[test]
    fn zero_delay_releases_at_once() {
        let t0 = Instant::now();
        let mut line = DelayLine::new(Duration::ZERO);
        line.push(t0, 1);
        line.push(t0, 2);
        assert_eq!(line.next_deadline(), Some(t0));
        assert_eq!(line.due(t0).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(line.next_deadline(), None);
    }

    #[test]
    fn drain_all_ignores_deadlines() {
        let t0 = Instant::now();
        let mut line = DelayLine::new(30 * MS);
        line.push(t0, 'x');
        line.push(t0 + MS, 'y');
        assert_eq!(line.drain_all().collect::<String>(), "xy");
        assert_eq!(line.next_deadline(), None);
    }
}
