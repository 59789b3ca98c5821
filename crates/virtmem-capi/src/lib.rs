//! libvirtmem: the Win32 virtual-memory API as a C library.
