//! A client's subscriptions: each filter it holds, with its options.
//!
//! A short list rather than a map (issue 22: memory per idle connection): a client holds a few
//! filters (a desk three, and seven per session it follows), every delivery looks at all of
//! them anyway (`connection::delivery`), and the smallest `HashMap` of three filters took
//! twice the memory of a list of three, plus 48 bytes in every session for an empty one.

use super::SubOptions;

#[derive(Default)]
pub(crate) struct Subscriptions {
    /// In the order they were first subscribed.
    entries: Vec<(Box<str>, SubOptions)>,
}

impl Subscriptions {
    /// Sets `filter`'s options; the ones it replaces, if it was held.
    pub fn insert(&mut self, filter: String, options: SubOptions) -> Option<SubOptions> {
        if let Some((_, held)) = self.entries.iter_mut().find(|(held, _)| **held == *filter) {
            return Some(std::mem::replace(held, options));
        }
        // Exact room while the list is short; beyond it, growth in proportion, so that many
        // subscribes stay linear.
        if self.entries.len() == self.entries.capacity() {
            self.entries.reserve_exact((self.entries.len() / 2).max(1));
        }
        self.entries.push((filter.into_boxed_str(), options));
        None
    }

    /// Stops holding `filter`; its options, if it was held.
    pub fn remove(&mut self, filter: &str) -> Option<SubOptions> {
        let at = self
            .entries
            .iter()
            .position(|(held, _)| **held == *filter)?;
        let (_, options) = self.entries.remove(at);
        if self.entries.len() <= self.entries.capacity() / 4 {
            self.entries.shrink_to_fit();
        }
        Some(options)
    }

    /// The filters held.
    pub fn filters(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(filter, _)| &**filter)
    }

    /// The filters held, with their options.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &SubOptions)> {
        self.entries
            .iter()
            .map(|(filter, options)| (&**filter, options))
    }
}

#[cfg(test)]
mod tests {
    use rumqttc::v5::mqttbytes::QoS;

    use super::*;

    fn options(qos: QoS) -> SubOptions {
        SubOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            identifier: None,
        }
    }

    #[test]
    fn a_filter_is_held_once_with_its_latest_options() {
        let mut subscriptions = Subscriptions::default();
        assert!(
            subscriptions
                .insert("a/b".into(), options(QoS::AtMostOnce))
                .is_none()
        );
        assert!(
            subscriptions
                .insert("c/+".into(), options(QoS::AtLeastOnce))
                .is_none()
        );
        let replaced = subscriptions.insert("a/b".into(), options(QoS::ExactlyOnce));
        assert_eq!(replaced.map(|o| o.qos), Some(QoS::AtMostOnce));
        let held: Vec<_> = subscriptions.iter().map(|(f, o)| (f, o.qos)).collect();
        assert_eq!(held, [("a/b", QoS::ExactlyOnce), ("c/+", QoS::AtLeastOnce)]);
        assert_eq!(
            subscriptions.remove("a/b").map(|o| o.qos),
            Some(QoS::ExactlyOnce)
        );
        assert!(subscriptions.remove("a/b").is_none());
        assert_eq!(subscriptions.filters().collect::<Vec<_>>(), ["c/+"]);
    }

    #[test]
    fn a_short_list_has_no_spare_room_and_gives_room_back() {
        let mut subscriptions = Subscriptions::default();
        for i in 0..3 {
            subscriptions.insert(format!("f/{i}"), options(QoS::AtLeastOnce));
        }
        assert_eq!(subscriptions.entries.capacity(), 3);
        for i in 3..100 {
            subscriptions.insert(format!("f/{i}"), options(QoS::AtLeastOnce));
        }
        for i in 0..99 {
            subscriptions.remove(&format!("f/{i}"));
        }
        assert!(subscriptions.entries.capacity() < 8);
    }
}
