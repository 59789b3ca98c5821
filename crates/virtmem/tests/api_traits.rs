//! The traits a dependent crate relies on, checked when this file compiles: every public
//! type can be printed with `{:?}` (the crate denies `missing_debug_implementations`; this
//! checks the generic ones with their usual parameters too).

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
