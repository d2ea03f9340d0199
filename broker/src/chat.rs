//! The chat pipeline's rules at the gateway, as hooks: what the gateway does for the pipeline
//! beyond routing and authorizing `cc/`. The connection knows none of them; courtchat's server
//! registers them when it builds its broker ([`rules`]), and a broker built without them is a
//! plain MQTT broker with courtchat's authorization.
//!
//! - [`MembershipFeed`]: the pipeline's announcements on `cc/v1/memberships` applied to the
//!   memberships the authorizer reads, before the announcement is acknowledged (`feed`);
//! - [`SubmissionStamp`]: what the pipeline decides stamped with its arrival time, and open
//!   requests with the token's channel and team (`stamp`);
//! - [`ServiceQueue`]: the pipeline's delivery queue waited for rather than overflowed
//!   (`service_queue`).

mod feed;
mod service_queue;
mod stamp;

use std::sync::Arc;

pub use feed::MembershipFeed;
pub use service_queue::ServiceQueue;
pub use stamp::SubmissionStamp;

use crate::hooks::Hook;
use crate::memberships::Memberships;

/// The three rules, the feed applying to `memberships` (the broker's own:
/// [`crate::BrokerBuilder::memberships`]).
pub fn rules(memberships: &Memberships) -> Vec<Arc<dyn Hook>> {
    vec![
        Arc::new(ServiceQueue),
        Arc::new(MembershipFeed::new(memberships.clone())),
        Arc::new(SubmissionStamp),
    ]
}
