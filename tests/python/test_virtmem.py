"""libvirtmem from Python through ctypes: allocate, write, query and free real memory of
this process, and do the same in a simulated process.

Run: VIRTMEM_LIB=target/release/libvirtmem.so python3 -m unittest discover -s tests/python
"""

import ctypes
import os
import unittest
from ctypes import POINTER, Structure, Union, byref, c_int32, c_size_t, c_uint16, c_uint32, c_uint64, c_void_p, sizeof

DWORD = c_uint32
BOOL = c_int32
SIZE_T = c_size_t
HANDLE = c_void_p
LPVOID = c_void_p

MEM_COMMIT, MEM_RESERVE, MEM_DECOMMIT, MEM_RELEASE, MEM_FREE, MEM_PRIVATE = (
    0x1000, 0x2000, 0x4000, 0x8000, 0x10000, 0x20000)
PAGE_NOACCESS, PAGE_READONLY, PAGE_READWRITE = 0x01, 0x02, 0x04
ERROR_INVALID_HANDLE, ERROR_INVALID_PARAMETER, ERROR_PARTIAL_COPY, ERROR_INVALID_ADDRESS = 6, 87, 299, 487
ERROR_NOT_ENOUGH_MEMORY = 8
MEM_TOP_DOWN = 0x100000
MemExtendedParameterAddressRequirements, MemExtendedParameterNumaNode = 1, 2


class MEMORY_BASIC_INFORMATION(Structure):
    _fields_ = [
        ("BaseAddress", c_void_p),
        ("AllocationBase", c_void_p),
        ("AllocationProtect", DWORD),
        ("PartitionId", c_uint16),
        ("RegionSize", SIZE_T),
        ("State", DWORD),
        ("Protect", DWORD),
        ("Type", DWORD),
    ]


class MEM_ADDRESS_REQUIREMENTS(Structure):
    _fields_ = [
        ("LowestStartingAddress", c_void_p),
        ("HighestEndingAddress", c_void_p),
        ("Alignment", SIZE_T),
    ]


class _MEM_EXTENDED_PARAMETER_VALUE(Union):
    _fields_ = [("ULong64", c_uint64), ("Pointer", c_void_p), ("Size", SIZE_T), ("ULong", DWORD)]


class MEM_EXTENDED_PARAMETER(Structure):
    """winnt.h's layout: a 64-bit word whose low 8 bits are the type, then the value."""
    _fields_ = [("TypeAndReserved", c_uint64), ("u", _MEM_EXTENDED_PARAMETER_VALUE)]


class SYSTEM_INFO(Structure):
    _fields_ = [
        ("wProcessorArchitecture", c_uint16),
        ("wReserved", c_uint16),
        ("dwPageSize", DWORD),
        ("lpMinimumApplicationAddress", c_void_p),
        ("lpMaximumApplicationAddress", c_void_p),
        ("dwActiveProcessorMask", SIZE_T),
        ("dwNumberOfProcessors", DWORD),
        ("dwProcessorType", DWORD),
        ("dwAllocationGranularity", DWORD),
        ("wProcessorLevel", c_uint16),
        ("wProcessorRevision", c_uint16),
    ]


class VIRTMEM_PROCESS_CONFIG(Structure):
    _fields_ = [
        ("cbSize", DWORD),
        ("ResetPolicy", DWORD),
        ("MinimumApplicationAddress", SIZE_T),
        ("MaximumApplicationAddress", SIZE_T),
        ("LargePageSize", SIZE_T),
    ]


def load():
    path = os.environ.get("VIRTMEM_LIB") or os.path.join(
        os.path.dirname(__file__), "..", "..", "target", "release", "libvirtmem.so")
    lib = ctypes.CDLL(path)
    sig = {
        "VirtualAlloc": (LPVOID, [LPVOID, SIZE_T, DWORD, DWORD]),
        "VirtualAllocEx": (LPVOID, [HANDLE, LPVOID, SIZE_T, DWORD, DWORD]),
        "VirtualFree": (BOOL, [LPVOID, SIZE_T, DWORD]),
        "VirtualFreeEx": (BOOL, [HANDLE, LPVOID, SIZE_T, DWORD]),
        "VirtualQuery": (SIZE_T, [c_void_p, POINTER(MEMORY_BASIC_INFORMATION), SIZE_T]),
        "VirtualQueryEx": (SIZE_T, [HANDLE, c_void_p, POINTER(MEMORY_BASIC_INFORMATION), SIZE_T]),
        "VirtualProtect": (BOOL, [LPVOID, SIZE_T, DWORD, POINTER(DWORD)]),
        "ReadProcessMemory": (BOOL, [HANDLE, c_void_p, LPVOID, SIZE_T, POINTER(SIZE_T)]),
        "WriteProcessMemory": (BOOL, [HANDLE, LPVOID, c_void_p, SIZE_T, POINTER(SIZE_T)]),
        "GetCurrentProcess": (HANDLE, []),
        "VirtmemCreateProcess": (HANDLE, []),
        "CloseHandle": (BOOL, [HANDLE]),
        "GetLastError": (DWORD, []),
        "SetLastError": (None, [DWORD]),
        "VirtualAlloc2": (LPVOID, [HANDLE, LPVOID, SIZE_T, DWORD, DWORD, POINTER(MEM_EXTENDED_PARAMETER), DWORD]),
        "VirtmemProcessConfigInit": (None, [POINTER(VIRTMEM_PROCESS_CONFIG)]),
        "VirtmemCreateProcessEx": (HANDLE, [POINTER(VIRTMEM_PROCESS_CONFIG)]),
        "VirtmemGetProcessSystemInfo": (BOOL, [HANDLE, POINTER(SYSTEM_INFO)]),
        "FlushProcessWriteBuffers": (None, []),
    }
    for name, (res, args) in sig.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = res, args
    return lib


class CurrentProcessTest(unittest.TestCase):
    """VirtualAlloc returns ordinary memory of this process."""

    lib = load()

    def test_mbi_is_48_bytes(self):
        self.assertEqual(sizeof(MEMORY_BASIC_INFORMATION), 48)

    def test_allocate_write_query_free(self):
        lib = self.lib
        size = 0x20000
        base = lib.VirtualAlloc(None, size, MEM_RESERVE, PAGE_NOACCESS)
        self.assertTrue(base, lib.GetLastError())
        self.assertEqual(base % 0x10000, 0)
        self.assertEqual(lib.VirtualAlloc(base, 0x3000, MEM_COMMIT, PAGE_READWRITE), base)

        # Fresh commits read as zero; then the memory is ours to write directly.
        self.assertEqual(ctypes.string_at(base, 0x3000), bytes(0x3000))
        data = bytes(range(256)) * 48
        ctypes.memmove(base, data, len(data))
        self.assertEqual(ctypes.string_at(base, len(data)), data)

        mbi = MEMORY_BASIC_INFORMATION()
        self.assertEqual(lib.VirtualQuery(base + 0x1234, byref(mbi), sizeof(mbi)), 48)
        self.assertEqual(mbi.BaseAddress, base + 0x1000)
        self.assertEqual(mbi.AllocationBase, base)
        self.assertEqual(mbi.AllocationProtect, PAGE_NOACCESS)
        self.assertEqual(mbi.RegionSize, 0x2000)
        self.assertEqual((mbi.State, mbi.Protect, mbi.Type), (MEM_COMMIT, PAGE_READWRITE, MEM_PRIVATE))
        self.assertEqual(lib.VirtualQuery(base + 0x3000, byref(mbi), sizeof(mbi)), 48)
        self.assertEqual((mbi.State, mbi.Protect, mbi.RegionSize), (MEM_RESERVE, 0, size - 0x3000))

        old = DWORD(0)
        self.assertTrue(lib.VirtualProtect(base, 0x1000, PAGE_READONLY, byref(old)))
        self.assertEqual(old.value, PAGE_READWRITE)
        self.assertEqual(ctypes.string_at(base, 16), data[:16], "data survives a protection change")

        # ReadProcessMemory on this process copies through the engine's checks.
        out = ctypes.create_string_buffer(0x100)
        n = SIZE_T(0)
        self.assertTrue(lib.ReadProcessMemory(lib.GetCurrentProcess(), base + 0x100, out, 0x100, byref(n)))
        self.assertEqual((n.value, out.raw), (0x100, data[0x100:0x200]))
        self.assertFalse(lib.ReadProcessMemory(lib.GetCurrentProcess(), base + 0x2f00, out, 0x200, byref(n)))
        self.assertEqual((lib.GetLastError(), n.value), (ERROR_PARTIAL_COPY, 0))

        self.assertTrue(lib.VirtualFree(base, 0, MEM_RELEASE))
        self.assertEqual(lib.VirtualQuery(base, byref(mbi), sizeof(mbi)), 48)
        self.assertEqual(mbi.State, MEM_FREE)

    def test_foreign_memory_is_never_freed(self):
        lib = self.lib
        block = ctypes.create_string_buffer(b"python owns this", 0x10000)
        self.assertFalse(lib.VirtualFree(ctypes.addressof(block), 0, MEM_RELEASE))
        self.assertEqual(lib.GetLastError(), ERROR_INVALID_ADDRESS)
        self.assertEqual(block.value, b"python owns this")

    def test_errors_set_last_error(self):
        lib = self.lib
        lib.SetLastError(0)
        self.assertIsNone(lib.VirtualAlloc(None, 0, MEM_RESERVE, PAGE_READWRITE))
        self.assertEqual(lib.GetLastError(), ERROR_INVALID_PARAMETER)
        self.assertIsNone(lib.VirtualAllocEx(None, None, 0x1000, MEM_COMMIT, PAGE_READWRITE))
        self.assertEqual(lib.GetLastError(), ERROR_INVALID_HANDLE)


class SimulatedProcessTest(unittest.TestCase):
    """A simulated process: memory that exists only inside libvirtmem."""

    lib = load()

    def test_round_trip(self):
        lib = self.lib
        h = lib.VirtmemCreateProcess()
        self.assertTrue(h)
        try:
            base = lib.VirtualAllocEx(h, None, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE)
            self.assertTrue(base)
            n = SIZE_T(0)
            self.assertTrue(lib.WriteProcessMemory(h, base + 10, b"hello", 5, byref(n)))
            self.assertEqual(n.value, 5)
            out = ctypes.create_string_buffer(5)
            self.assertTrue(lib.ReadProcessMemory(h, base + 10, out, 5, None))
            self.assertEqual(out.raw, b"hello")
            mbi = MEMORY_BASIC_INFORMATION()
            self.assertEqual(lib.VirtualQueryEx(h, base, byref(mbi), sizeof(mbi)), 48)
            self.assertEqual((mbi.State, mbi.RegionSize), (MEM_COMMIT, 0x10000))
            self.assertTrue(lib.VirtualFreeEx(h, base, 0, MEM_RELEASE))
        finally:
            self.assertTrue(lib.CloseHandle(h))
        self.assertFalse(lib.CloseHandle(h))
        self.assertEqual(lib.GetLastError(), ERROR_INVALID_HANDLE)


class ExtensionsTest(unittest.TestCase):
    """VirtualAlloc2's address window, a guest process's own system information and
    FlushProcessWriteBuffers, called with ctypes' own layouts of the C structures."""

    lib = load()

    def window(self, lowest, highest, alignment=0):
        req = MEM_ADDRESS_REQUIREMENTS(lowest, highest, alignment)
        param = MEM_EXTENDED_PARAMETER(MemExtendedParameterAddressRequirements)
        param.u.Pointer = ctypes.cast(byref(req), c_void_p)
        return param, req

    def test_layouts(self):
        self.assertEqual(sizeof(MEM_EXTENDED_PARAMETER), 16)
        self.assertEqual(sizeof(MEM_ADDRESS_REQUIREMENTS), 24)
        self.assertEqual(sizeof(SYSTEM_INFO), 48)
        self.assertEqual(sizeof(VIRTMEM_PROCESS_CONFIG), 32)

    def test_a_32_bit_guest_places_by_window_and_reports_its_range(self):
        lib = self.lib
        config = VIRTMEM_PROCESS_CONFIG()
        lib.VirtmemProcessConfigInit(byref(config))
        config.MaximumApplicationAddress = 0x7FFEFFFF
        h = lib.VirtmemCreateProcessEx(byref(config))
        self.assertTrue(h, lib.GetLastError())
        try:
            info = SYSTEM_INFO()
            self.assertTrue(lib.VirtmemGetProcessSystemInfo(h, byref(info)))
            self.assertEqual((info.lpMinimumApplicationAddress, info.lpMaximumApplicationAddress),
                             (0x10000, 0x7FFEFFFF))
            self.assertEqual((info.dwPageSize, info.dwAllocationGranularity), (0x1000, 0x10000))

            lo, hi = 0x20000000, 0x2FFFFFFF
            param, req = self.window(lo, hi, 0x100000)
            bottom = lib.VirtualAlloc2(h, None, 0x10000, MEM_RESERVE, PAGE_READWRITE, byref(param), 1)
            self.assertEqual(bottom, lo, lib.GetLastError())
            second = lib.VirtualAlloc2(h, None, 0x10000, MEM_RESERVE, PAGE_READWRITE, byref(param), 1)
            self.assertEqual(second, lo + 0x100000, "the window's alignment")
            top = lib.VirtualAlloc2(h, None, 0x10000, MEM_RESERVE | MEM_TOP_DOWN, PAGE_READWRITE, byref(param), 1)
            self.assertEqual(top, hi + 1 - 0x100000)

            # A window too small for the block: 8, and nothing placed there.
            tight, tight_req = self.window(0x30000000, 0x3000FFFF)
            lib.SetLastError(0)
            self.assertIsNone(lib.VirtualAlloc2(h, None, 0x20000, MEM_RESERVE, PAGE_READWRITE, byref(tight), 1))
            self.assertEqual(lib.GetLastError(), ERROR_NOT_ENOUGH_MEMORY)
            mbi = MEMORY_BASIC_INFORMATION()
            self.assertEqual(lib.VirtualQueryEx(h, 0x30000000, byref(mbi), sizeof(mbi)), 48)
            self.assertEqual(mbi.State, MEM_FREE)
            # A NUMA node other than 0: 87.
            numa = MEM_EXTENDED_PARAMETER(MemExtendedParameterNumaNode)
            numa.u.ULong = 1
            self.assertIsNone(lib.VirtualAlloc2(h, None, 0x10000, MEM_RESERVE, PAGE_READWRITE, byref(numa), 1))
            self.assertEqual(lib.GetLastError(), ERROR_INVALID_PARAMETER)
        finally:
            self.assertTrue(lib.CloseHandle(h))
        self.assertFalse(lib.VirtmemGetProcessSystemInfo(h, byref(SYSTEM_INFO())))
        self.assertEqual(lib.GetLastError(), ERROR_INVALID_HANDLE)

    def test_a_null_process_is_this_one(self):
        lib = self.lib
        base = lib.VirtualAlloc2(None, None, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, None, 0)
        self.assertTrue(base, lib.GetLastError())
        ctypes.memmove(base, b"ours", 4)
        self.assertEqual(ctypes.string_at(base, 4), b"ours")
        lib.FlushProcessWriteBuffers()
        self.assertTrue(lib.VirtualFree(base, 0, MEM_RELEASE))


if __name__ == "__main__":
    unittest.main()
