//! The traits a dependent crate relies on, checked when this file compiles: every public
//! type can be printed with `{:?}` (the crate warns on `missing_debug_implementations`;
//! this checks the generic ones with their usual parameters too), and the spaces, their
//! reservations, the host manager and the errors are `Send + Sync`.

use std::fmt::Debug;
use std::sync::Arc;

use virtmem::backend::faulty::Faulty;
use virtmem::{Reservation, SimBackend, SimSpace, VirtualSpace};

/// Compiles only if `T` is `Debug`.
fn debug<T: Debug + ?Sized>() {}

#[test]
fn public_types_are_debug() {
    debug::<SimBackend>();
    debug::<SimSpace>();
    debug::<Faulty<SimBackend>>();
    debug::<virtmem::AddressSpace<Faulty<SimBackend>>>();
    debug::<Reservation<&SimSpace>>();
    debug::<Reservation<Arc<dyn VirtualSpace>>>();
    debug::<virtmem::host::HostMemoryManager>();
    debug::<virtmem::trace::TraceWriter>();
    #[cfg(target_os = "linux")]
    debug::<virtmem::LinuxSpace>();
}

/// The simulated backend's `Debug` shows its configuration (and takes no lock: the
/// contents are left out).
#[test]
fn sim_backend_debug_shows_its_configuration() {
    let config = virtmem::SimConfig { end_address: 0x7FFF_0000, ..virtmem::SimConfig::default() };
    let printed = format!("{:?}", SimBackend::new(config));
    assert!(printed.starts_with("SimBackend"), "{printed}");
    assert!(printed.contains(&format!("{:?}", config)), "{printed}");
    let faulty = format!("{:?}", Faulty::new(SimBackend::new(config)));
    assert!(faulty.contains("fired: false") && faulty.contains(&printed), "{faulty}");
}

/// Compiles only if `T` can be sent to and shared with other threads.
fn send_sync<T: Send + Sync + ?Sized>() {}

/// Compiles only if `E` converts with `?` into `Box<dyn Error + Send + Sync>` (and so into
/// the error types of the usual error crates).
fn thread_safe_error<E: std::error::Error + Send + Sync + 'static>() {}

/// A runtime keeps its spaces, its heap's reservation and its host manager in statics or
/// `Arc`s shared by its threads, and sends errors across them.
#[test]
fn spaces_reservations_and_errors_cross_threads() {
    send_sync::<SimSpace>();
    send_sync::<SimBackend>();
    send_sync::<dyn VirtualSpace>();
    send_sync::<virtmem::AddressSpace<Faulty<SimBackend>>>();
    send_sync::<Reservation<&SimSpace>>();
    send_sync::<Reservation<&dyn VirtualSpace>>();
    send_sync::<Reservation<Arc<dyn VirtualSpace>>>();
    send_sync::<virtmem::host::HostMemoryManager>();
    send_sync::<virtmem::host::HostMalloc>();
    send_sync::<virtmem::trace::TraceWriter>();
    #[cfg(target_os = "linux")]
    {
        send_sync::<virtmem::LinuxSpace>();
        send_sync::<virtmem::LinuxBackend>();
        send_sync::<Reservation<&'static virtmem::LinuxSpace>>();
    }
    thread_safe_error::<virtmem::Error>();
    thread_safe_error::<virtmem::backend::BackendError>();
    thread_safe_error::<virtmem::host::HostError>();
    let _boxed: Box<dyn std::error::Error + Send + Sync> = virtmem::Error::InvalidAddress.into();
}
