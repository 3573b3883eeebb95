//! sluice-core: the event model, acknowledgements, the ledger and the component traits.
//!
//! Everything here is shared by the runtime and the components; nothing here touches the
//! network. The invariants that the rest of sluice relies on:
//!
//! - Events move between tasks as [`Chunk`]s (a `Vec` of events), never one at a time.
//! - Every event that came from an acknowledging source carries an [`ack::EventFinalizer`];
//!   every copy of it must be resolved with an explicit [`ack::Outcome`]. A copy dropped without
//!   one counts as failed and is reported (see [`ack::unresolved_drops`]).
//! - Every component owns a [`ledger::ComponentLedger`]; its counters balance:
//!   `received = sent + discarded + dead_lettered + errored + in_flight`.

pub mod ack;
pub mod codec;
pub mod component;
pub mod dead_letter;
pub mod event;
pub mod json;
pub mod ledger;
pub mod listeners;
pub mod log_limit;
pub mod metric;
pub mod metric_event;
pub mod proxy;
pub mod shutdown;

pub use event::{Chunk, LogEvent};
