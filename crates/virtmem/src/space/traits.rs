//! [`VirtualSpace`], the object-safe trait of the address space's operations, its
//! implementation by [`AddressSpace`], and by pointers to a space.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::flags::{
    AccessKind, AddressRequirements, AllocationType, FreeType, MemoryBasicInformation, Protection, SystemInfo,
    WriteWatchFlags,
};

use super::{AddressSpace, ResetUndo, SpaceStats};

/// The operations of an address space, object safe, so that code can hold spaces over
/// different backends side by side (`Arc<dyn VirtualSpace>`). Implemented by every
/// [`AddressSpace`]; each method is the inherent method of the same name. Also
/// implemented by `&T`, `Box<T>` and `Arc<T>` of any `T: VirtualSpace` (a trait object
/// too), which pass every call on: `Arc::new(virtmem::current_process())` is an
/// `Arc<dyn VirtualSpace>` as it is. Methods added after the trait's first methods
/// ([`reset`](Self::reset), [`reset_undo`](Self::reset_undo),
/// [`get_write_watch_into`](Self::get_write_watch_into), [`alloc_within`](Self::alloc_within))
/// are provided: their defaults are written with the older methods (`alloc_within`'s,
/// which no older method can do, refuses with `ERROR_NOT_SUPPORTED`), so an
/// implementation made outside this crate goes on compiling.
pub trait VirtualSpace: Send + Sync + std::fmt::Debug {
    /// See [`AddressSpace::alloc`].
    fn alloc(&self, address: usize, size: usize, ty: AllocationType, protect: Protection) -> Result<usize>;
    /// See [`AddressSpace::free`].
    fn free(&self, address: usize, size: usize, ty: FreeType) -> Result<()>;
    /// See [`AddressSpace::query`].
    fn query(&self, address: usize) -> Result<MemoryBasicInformation>;
    /// See [`AddressSpace::try_query`]. An implementation with nothing a thread could
    /// hold across a suspension may simply answer [`VirtualSpace::query`] (the default).
    fn try_query(&self, address: usize) -> Option<Result<MemoryBasicInformation>> {
        Some(self.query(address))
    }
    /// See [`AddressSpace::protect`].
    fn protect(&self, address: usize, size: usize, protect: Protection) -> Result<Protection>;
    /// See [`AddressSpace::protect_detailed`].
    fn protect_detailed(
        &self,
        address: usize,
        size: usize,
        protect: Protection,
    ) -> std::result::Result<Protection, (Error, Option<Protection>)>;
    /// See [`AddressSpace::lock`].
    fn lock(&self, address: usize, size: usize) -> Result<()>;
    /// See [`AddressSpace::unlock`].
    fn unlock(&self, address: usize, size: usize) -> Result<()>;
    /// See [`AddressSpace::get_write_watch`].
    fn get_write_watch(&self, flags: WriteWatchFlags, base: usize, size: usize, max_count: usize)
        -> Result<Vec<usize>>;
    /// See [`AddressSpace::get_write_watch_into`]. The default passes
    /// [`get_write_watch`](Self::get_write_watch)'s answer (with `max_count` the
    /// buffer's length) on, allocating.
    fn get_write_watch_into(
        &self,
        flags: WriteWatchFlags,
        base: usize,
        size: usize,
        addresses: &mut [usize],
    ) -> Result<usize> {
        let found = self.get_write_watch(flags, base, size, addresses.len())?;
        let n = found.len().min(addresses.len());
        addresses[..n].copy_from_slice(&found[..n]);
        Ok(n)
    }
    /// See [`AddressSpace::reset_write_watch`].
    fn reset_write_watch(&self, base: usize, size: usize) -> Result<()>;
    /// See [`AddressSpace::reset`]. The default is the `alloc` form,
    /// `alloc(address, size, AllocationType::RESET, Protection::NOACCESS)` (the protection
    /// is checked, valid, and ignored), so that a space written before this method
    /// existed has it.
    fn reset(&self, address: usize, size: usize) -> Result<()> {
        self.alloc(address, size, AllocationType::RESET, Protection::NOACCESS).map(|_| ())
    }
    /// See [`AddressSpace::reset_undo`]. The default is the `alloc` form, its
    /// `ERROR_BUSY` ([`Error::DataDiscarded`]) answered as [`ResetUndo::Discarded`].
    fn reset_undo(&self, address: usize, size: usize) -> Result<ResetUndo> {
        match self.alloc(address, size, AllocationType::RESET_UNDO, Protection::NOACCESS) {
            Ok(_) => Ok(ResetUndo::Intact),
            Err(Error::DataDiscarded) => Ok(ResetUndo::Discarded),
            Err(e) => Err(e),
        }
    }
    /// See [`AddressSpace::write_watch_pages`].
    fn write_watch_pages(&self, base: usize, size: usize) -> Result<usize>;
    /// See [`AddressSpace::check`].
    fn check(&self, address: usize, len: usize, kind: AccessKind) -> Result<()>;
    /// See [`AddressSpace::check_quiet`]. (Required: a caller that finds a range clear
    /// this way may skip [`check`](Self::check), so an answer that only guesses would let
    /// a copy start on a range that is not entirely accessible.)
    fn check_quiet(&self, address: usize, len: usize, kind: AccessKind) -> Result<()>;
    /// See [`AddressSpace::read`].
    fn read(&self, address: usize, buf: &mut [u8]) -> Result<()>;
    /// See [`AddressSpace::write`].
    fn write(&self, address: usize, data: &[u8]) -> Result<()>;
    /// See [`AddressSpace::execute`].
    fn execute(&self, address: usize, buf: &mut [u8]) -> Result<()>;
    /// See [`AddressSpace::system_info`].
    fn system_info(&self) -> SystemInfo;
    /// See [`AddressSpace::stats`].
    fn stats(&self) -> SpaceStats;
    /// See [`AddressSpace::regions`].
    fn regions(&self) -> Vec<MemoryBasicInformation>;
    /// See [`AddressSpace::set_commit_limit`].
    fn set_commit_limit(&self, limit: Option<usize>);
    /// See [`AddressSpace::commit_limit`].
    fn commit_limit(&self) -> Option<usize>;
    /// See [`AddressSpace::committed_bytes`].
    fn committed_bytes(&self) -> usize;
    /// See [`AddressSpace::reserved_bytes`].
    fn reserved_bytes(&self) -> usize;
    /// See [`AddressSpace::flush_instruction_cache`]. (Required: a space over real memory
    /// that skipped it would run stale code on some processors.)
    fn flush_instruction_cache(&self, address: usize, size: usize);
    /// See [`AddressSpace::alloc_within`]. The default, for an implementation made outside
    /// this crate before the method existed, places nothing: it answers
    /// [`Error::NotSupported`] (`ERROR_NOT_SUPPORTED`, 50), having changed nothing.
    fn alloc_within(
        &self,
        size: usize,
        ty: AllocationType,
        protect: Protection,
        req: AddressRequirements,
    ) -> Result<usize> {
        let _ = (size, ty, protect, req);
        Err(Error::NotSupported)
    }
}

impl<B: Backend> VirtualSpace for AddressSpace<B> {
    fn alloc(&self, address: usize, size: usize, ty: AllocationType, protect: Protection) -> Result<usize> {
        AddressSpace::alloc(self, address, size, ty, protect)
    }
    fn free(&self, address: usize, size: usize, ty: FreeType) -> Result<()> {
        AddressSpace::free(self, address, size, ty)
    }
    fn query(&self, address: usize) -> Result<MemoryBasicInformation> {
        AddressSpace::query(self, address)
    }
    fn try_query(&self, address: usize) -> Option<Result<MemoryBasicInformation>> {
        AddressSpace::try_query(self, address)
    }
    fn protect(&self, address: usize, size: usize, protect: Protection) -> Result<Protection> {
        AddressSpace::protect(self, address, size, protect)
    }
    fn protect_detailed(
        &self,
        address: usize,
        size: usize,
        protect: Protection,
    ) -> std::result::Result<Protection, (Error, Option<Protection>)> {
        AddressSpace::protect_detailed(self, address, size, protect)
    }
    fn lock(&self, address: usize, size: usize) -> Result<()> {
        AddressSpace::lock(self, address, size)
    }
    fn unlock(&self, address: usize, size: usize) -> Result<()> {
        AddressSpace::unlock(self, address, size)
    }
    fn get_write_watch(
        &self,
        flags: WriteWatchFlags,
        base: usize,
        size: usize,
        max_count: usize,
    ) -> Result<Vec<usize>> {
        AddressSpace::get_write_watch(self, flags, base, size, max_count)
    }
    fn get_write_watch_into(
        &self,
        flags: WriteWatchFlags,
        base: usize,
        size: usize,
        addresses: &mut [usize],
    ) -> Result<usize> {
        AddressSpace::get_write_watch_into(self, flags, base, size, addresses)
    }
    fn reset_write_watch(&self, base: usize, size: usize) -> Result<()> {
        AddressSpace::reset_write_watch(self, base, size)
    }
    fn reset(&self, address: usize, size: usize) -> Result<()> {
        AddressSpace::reset(self, address, size)
    }
    fn reset_undo(&self, address: usize, size: usize) -> Result<ResetUndo> {
        AddressSpace::reset_undo(self, address, size)
    }
    fn write_watch_pages(&self, base: usize, size: usize) -> Result<usize> {
        AddressSpace::write_watch_pages(self, base, size)
    }
    fn check(&self, address: usize, len: usize, kind: AccessKind) -> Result<()> {
        AddressSpace::check(self, address, len, kind)
    }
    fn check_quiet(&self, address: usize, len: usize, kind: AccessKind) -> Result<()> {
        AddressSpace::check_quiet(self, address, len, kind)
    }
    fn read(&self, address: usize, buf: &mut [u8]) -> Result<()> {
        AddressSpace::read(self, address, buf)
    }
    fn write(&self, address: usize, data: &[u8]) -> Result<()> {
        AddressSpace::write(self, address, data)
    }
    fn execute(&self, address: usize, buf: &mut [u8]) -> Result<()> {
        AddressSpace::execute(self, address, buf)
    }
    fn system_info(&self) -> SystemInfo {
        AddressSpace::system_info(self)
    }
    fn stats(&self) -> SpaceStats {
        AddressSpace::stats(self)
    }
    fn regions(&self) -> Vec<MemoryBasicInformation> {
        AddressSpace::regions(self)
    }
    fn set_commit_limit(&self, limit: Option<usize>) {
        AddressSpace::set_commit_limit(self, limit)
    }
    fn commit_limit(&self) -> Option<usize> {
        AddressSpace::commit_limit(self)
    }
    fn committed_bytes(&self) -> usize {
        AddressSpace::committed_bytes(self)
    }
    fn reserved_bytes(&self) -> usize {
        AddressSpace::reserved_bytes(self)
    }
    fn flush_instruction_cache(&self, address: usize, size: usize) {
        AddressSpace::flush_instruction_cache(self, address, size)
    }
    fn alloc_within(
        &self,
        size: usize,
        ty: AllocationType,
        protect: Protection,
        req: AddressRequirements,
    ) -> Result<usize> {
        AddressSpace::alloc_within(self, size, ty, protect, req)
    }
}

/// `impl VirtualSpace for $ty` (a pointer to a `T: VirtualSpace`), every method passed on
/// to the space pointed to, `try_query` included (its default would answer
/// [`VirtualSpace::query`] instead of the space's own).
macro_rules! forward_virtual_space {
    ($($ty:ty),* $(,)?) => {$(
        impl<T: VirtualSpace + ?Sized> VirtualSpace for $ty {
            fn alloc(&self, address: usize, size: usize, ty: AllocationType, protect: Protection) -> Result<usize> {
                (**self).alloc(address, size, ty, protect)
            }
            fn free(&self, address: usize, size: usize, ty: FreeType) -> Result<()> {
                (**self).free(address, size, ty)
            }
            fn query(&self, address: usize) -> Result<MemoryBasicInformation> {
                (**self).query(address)
            }
            fn try_query(&self, address: usize) -> Option<Result<MemoryBasicInformation>> {
                (**self).try_query(address)
            }
            fn protect(&self, address: usize, size: usize, protect: Protection) -> Result<Protection> {
                (**self).protect(address, size, protect)
            }
            fn protect_detailed(
                &self,
                address: usize,
                size: usize,
                protect: Protection,
            ) -> std::result::Result<Protection, (Error, Option<Protection>)> {
                (**self).protect_detailed(address, size, protect)
            }
            fn lock(&self, address: usize, size: usize) -> Result<()> {
                (**self).lock(address, size)
            }
            fn unlock(&self, address: usize, size: usize) -> Result<()> {
                (**self).unlock(address, size)
            }
            fn get_write_watch(
                &self,
                flags: WriteWatchFlags,
                base: usize,
                size: usize,
                max_count: usize,
            ) -> Result<Vec<usize>> {
                (**self).get_write_watch(flags, base, size, max_count)
            }
            fn get_write_watch_into(
                &self,
                flags: WriteWatchFlags,
                base: usize,
                size: usize,
                addresses: &mut [usize],
            ) -> Result<usize> {
                (**self).get_write_watch_into(flags, base, size, addresses)
            }
            fn reset_write_watch(&self, base: usize, size: usize) -> Result<()> {
                (**self).reset_write_watch(base, size)
            }
            fn reset(&self, address: usize, size: usize) -> Result<()> {
                (**self).reset(address, size)
            }
            fn reset_undo(&self, address: usize, size: usize) -> Result<ResetUndo> {
                (**self).reset_undo(address, size)
            }
            fn write_watch_pages(&self, base: usize, size: usize) -> Result<usize> {
                (**self).write_watch_pages(base, size)
            }
            fn check(&self, address: usize, len: usize, kind: AccessKind) -> Result<()> {
                (**self).check(address, len, kind)
            }
            fn check_quiet(&self, address: usize, len: usize, kind: AccessKind) -> Result<()> {
                (**self).check_quiet(address, len, kind)
            }
            fn read(&self, address: usize, buf: &mut [u8]) -> Result<()> {
                (**self).read(address, buf)
            }
            fn write(&self, address: usize, data: &[u8]) -> Result<()> {
                (**self).write(address, data)
            }
            fn execute(&self, address: usize, buf: &mut [u8]) -> Result<()> {
                (**self).execute(address, buf)
            }
            fn system_info(&self) -> SystemInfo {
                (**self).system_info()
            }
            fn stats(&self) -> SpaceStats {
                (**self).stats()
            }
            fn regions(&self) -> Vec<MemoryBasicInformation> {
                (**self).regions()
            }
            fn set_commit_limit(&self, limit: Option<usize>) {
                (**self).set_commit_limit(limit)
            }
            fn commit_limit(&self) -> Option<usize> {
                (**self).commit_limit()
            }
            fn committed_bytes(&self) -> usize {
                (**self).committed_bytes()
            }
            fn reserved_bytes(&self) -> usize {
                (**self).reserved_bytes()
            }
            fn flush_instruction_cache(&self, address: usize, size: usize) {
                (**self).flush_instruction_cache(address, size)
            }
            fn alloc_within(
                &self,
                size: usize,
                ty: AllocationType,
                protect: Protection,
                req: AddressRequirements,
            ) -> Result<usize> {
                (**self).alloc_within(size, ty, protect, req)
            }
        }
    )*};
}

// A shared reference, a box or an `Arc` of a space is that space: so that
// `Arc::new(virtmem::current_process())` (a `&'static LinuxSpace`) or a boxed trait object
// goes wherever a `VirtualSpace` is wanted, `Arc<dyn VirtualSpace>` included.
forward_virtual_space!(&T, Box<T>, std::sync::Arc<T>);
