//! TCP listeners that outlive the source that bound them, so a source replaced by a reload
//! keeps its socket: connections that arrive while the old version stops and the new one
//! starts wait in the socket's queue instead of being refused.
//!
//! A source takes its listener with [`take`] and holds the returned [`Lease`] while it runs.
//! The registry keeps its own handle on each socket; [`sweep`] (called by the runtime once a
//! reload is done) closes those no running source holds a lease on.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, MutexGuard};

struct Entry {
    listener: TcpListener,
    leases: Arc<()>,
}

static LISTENERS: Mutex<BTreeMap<SocketAddr, Entry>> = Mutex::new(BTreeMap::new());

fn registry() -> MutexGuard<'static, BTreeMap<SocketAddr, Entry>> {
    LISTENERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Held by the source using a listener; the socket stays open while any lease on it lives
/// (and until the next [`sweep`] after that).
#[derive(Debug)]
pub struct Lease(#[allow(dead_code)] Arc<()>);

/// A non-blocking listener on `address`: the socket already bound there by this process
/// (an earlier version of the source), or a new one.
pub fn take(address: SocketAddr) -> std::io::Result<(TcpListener, Lease)> {
    let mut listeners = registry();
    if let Some(entry) = listeners.get(&address) {
        return Ok((entry.listener.try_clone()?, Lease(entry.leases.clone())));
    }
    let listener = TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    let entry = Entry { listener: listener.try_clone()?, leases: Arc::new(()) };
    let lease = Lease(entry.leases.clone());
    // A port chosen by the system (`:0`) is kept under the address it got.
    let key = if address.port() == 0 { listener.local_addr()? } else { address };
    listeners.insert(key, entry);
    Ok((listener, lease))
}

/// Closes the sockets no lease holds any more.
pub fn sweep() {
    registry().retain(|_, entry| Arc::strong_count(&entry.leases) > 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_taken_again_is_the_same_socket_until_swept_without_a_lease() {
        let (first, lease) =
            take("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"))).unwrap_or_else(|e| panic!("{e}"));
        let address = first.local_addr().unwrap_or_else(|e| panic!("{e}"));
        drop(first);
        drop(lease);
        // Between a source's stop and its successor's start: still bound, connections queue.
        assert!(std::net::TcpStream::connect(address).is_ok());
        let (again, lease) = take(address).unwrap_or_else(|e| panic!("{e}"));
        sweep();
        assert!(std::net::TcpStream::connect(address).is_ok(), "a leased socket survives the sweep");
        drop((again, lease));
        sweep();
        assert!(std::net::TcpStream::connect(address).is_err(), "an unleased socket is closed by the sweep");
    }
}
