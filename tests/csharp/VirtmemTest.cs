// VirtmemTest.cs - libvirtmem from C# through the P/Invoke declarations C# programs
// already carry for kernel32 (VirtualAlloc/VirtualFree/VirtualQuery/VirtualProtect and their
// Ex forms with [Flags] enums, GetWriteWatch/ResetWriteWatch as a garbage collector calls
// them, GetSystemInfo, SetLastError = true). Nothing in them changes: a Mono dllmap
// (VirtmemTest.exe.config) points "kernel32.dll" at libvirtmem.so.
//
// Build and run: mcs VirtmemTest.cs && mono VirtmemTest.exe   (with the .config beside it)
using System;
using System.Runtime.InteropServices;

static class Kernel32
{
    [Flags]
    public enum AllocationType : uint
    {
        Commit = 0x1000,
        Reserve = 0x2000,
        Decommit = 0x4000,
        Release = 0x8000,
        Reset = 0x80000,
        TopDown = 0x100000,
        WriteWatch = 0x200000,
        Physical = 0x400000,
        ResetUndo = 0x1000000,
        LargePages = 0x20000000,
    }

    [Flags]
    public enum MemoryProtection : uint
    {
        NoAccess = 0x01,
        ReadOnly = 0x02,
        ReadWrite = 0x04,
        WriteCopy = 0x08,
        Execute = 0x10,
        ExecuteRead = 0x20,
        ExecuteReadWrite = 0x40,
        ExecuteWriteCopy = 0x80,
        Guard = 0x100,
        NoCache = 0x200,
        WriteCombine = 0x400,
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct MEMORY_BASIC_INFORMATION
    {
        public IntPtr BaseAddress;
        public IntPtr AllocationBase;
        public uint AllocationProtect;
        public ushort PartitionId;
        public IntPtr RegionSize;
        public uint State;
        public uint Protect;
        public uint Type;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct SYSTEM_INFO
    {
        public ushort wProcessorArchitecture;
        public ushort wReserved;
        public uint dwPageSize;
        public IntPtr lpMinimumApplicationAddress;
        public IntPtr lpMaximumApplicationAddress;
        public UIntPtr dwActiveProcessorMask;
        public uint dwNumberOfProcessors;
        public uint dwProcessorType;
        public uint dwAllocationGranularity;
        public ushort wProcessorLevel;
        public ushort wProcessorRevision;
    }

    [DllImport("kernel32.dll", SetLastError = true, ExactSpelling = true)]
    public static extern IntPtr VirtualAlloc(IntPtr lpAddress, UIntPtr dwSize, AllocationType flAllocationType,
        MemoryProtection flProtect);

    [DllImport("kernel32.dll", SetLastError = true, ExactSpelling = true)]
    public static extern bool VirtualFree(IntPtr lpAddress, UIntPtr dwSize, AllocationType dwFreeType);

    [DllImport("kernel32.dll", SetLastError = true)]
    public static extern UIntPtr VirtualQuery(IntPtr lpAddress, out MEMORY_BASIC_INFORMATION lpBuffer,
        UIntPtr dwLength);

    [DllImport("kernel32.dll", SetLastError = true)]
    public static extern bool VirtualProtect(IntPtr lpAddress, UIntPtr dwSize, MemoryProtection flNewProtect,
        out MemoryProtection lpflOldProtect);

    // A UINT result: 0 on success, 0xFFFFFFFF on failure (not a BOOL).
    [DllImport("kernel32.dll", SetLastError = true)]
    public static extern uint GetWriteWatch(uint dwFlags, IntPtr lpBaseAddress, UIntPtr dwRegionSize,
        [Out] IntPtr[] lpAddresses, ref UIntPtr lpdwCount, out uint lpdwGranularity);

    [DllImport("kernel32.dll", SetLastError = true)]
    public static extern uint ResetWriteWatch(IntPtr lpBaseAddress, UIntPtr dwRegionSize);

    [DllImport("kernel32.dll")]
    public static extern void GetSystemInfo(out SYSTEM_INFO lpSystemInfo);

    [DllImport("kernel32.dll", SetLastError = true, ExactSpelling = true)]
    public static extern IntPtr VirtualAllocEx(IntPtr hProcess, IntPtr lpAddress, UIntPtr dwSize,
        AllocationType flAllocationType, MemoryProtection flProtect);

    [DllImport("kernel32.dll", SetLastError = true, ExactSpelling = true)]
    public static extern bool VirtualFreeEx(IntPtr hProcess, IntPtr lpAddress, UIntPtr dwSize,
        AllocationType dwFreeType);

    [DllImport("kernel32.dll", SetLastError = true)]
    public static extern UIntPtr VirtualQueryEx(IntPtr hProcess, IntPtr lpAddress,
        out MEMORY_BASIC_INFORMATION lpBuffer, UIntPtr dwLength);

    [DllImport("kernel32.dll", SetLastError = true)]
    public static extern bool VirtualProtectEx(IntPtr hProcess, IntPtr lpAddress, UIntPtr dwSize,
        MemoryProtection flNewProtect, out MemoryProtection lpflOldProtect);

    [DllImport("kernel32.dll", SetLastError = true)]
    public static extern bool ReadProcessMemory(IntPtr hProcess, IntPtr lpBaseAddress, [Out] byte[] lpBuffer,
        IntPtr nSize, out IntPtr lpNumberOfBytesRead);

    [DllImport("kernel32.dll", SetLastError = true)]
    public static extern bool WriteProcessMemory(IntPtr hProcess, IntPtr lpBaseAddress, byte[] lpBuffer,
        IntPtr nSize, out IntPtr lpNumberOfBytesWritten);

    [DllImport("kernel32.dll")]
    public static extern IntPtr GetCurrentProcess();

    [DllImport("kernel32.dll", SetLastError = true)]
    public static extern bool CloseHandle(IntPtr hObject);

    // The libvirtmem extension (declared against the library's own name).
    [DllImport("virtmem", SetLastError = true)]
    public static extern IntPtr VirtmemCreateProcess();

    public const uint MEM_COMMIT = 0x1000, MEM_RESERVE = 0x2000, MEM_FREE = 0x10000, MEM_PRIVATE = 0x20000;
    public const uint PAGE_GUARD = 0x100, WRITE_WATCH_FLAG_RESET = 1;
    public const int ERROR_INVALID_HANDLE = 6, ERROR_INVALID_PARAMETER = 87, ERROR_INVALID_ADDRESS = 487;
}

static class VirtmemTest
{
    static int passed, failed;

    static void Check(bool ok, string what)
    {
        if (ok) {
            passed++;
        } else {
            failed++;
            Console.Error.WriteLine("check failed: " + what);
        }
    }

    static UIntPtr U(long v) { return new UIntPtr((ulong)v); }

    static void CurrentProcess()
    {
        IntPtr self = Kernel32.GetCurrentProcess();
        Check(self == new IntPtr(-1), "GetCurrentProcess() is (HANDLE)-1");
        const int size = 0x20000;
        IntPtr p = Kernel32.VirtualAllocEx(self, IntPtr.Zero, U(size), Kernel32.AllocationType.Reserve,
            Kernel32.MemoryProtection.NoAccess);
        Check(p != IntPtr.Zero, "reserve 128 KiB: error " + Marshal.GetLastWin32Error());
        IntPtr c = Kernel32.VirtualAllocEx(self, p, U(0x2000), Kernel32.AllocationType.Commit,
            Kernel32.MemoryProtection.ReadWrite);
        Check(c == p, "commit the first two pages");

        // Ordinary memory: write and read it through Marshal.
        byte[] data = new byte[0x2000];
        for (int i = 0; i < data.Length; i++) data[i] = (byte)(i * 7);
        Marshal.Copy(data, 0, p, data.Length);
        byte[] back = new byte[0x2000];
        Marshal.Copy(p, back, 0, back.Length);
        Check(Equal(data, back), "memory written through Marshal.Copy reads back");

        Kernel32.MEMORY_BASIC_INFORMATION mbi;
        UIntPtr n = Kernel32.VirtualQueryEx(self, p, out mbi, U(Marshal.SizeOf(typeof(Kernel32.MEMORY_BASIC_INFORMATION))));
        Check(n.ToUInt64() == 48, "VirtualQueryEx returns 48, got " + n);
        Check(mbi.BaseAddress == p && mbi.AllocationBase == p && mbi.RegionSize.ToInt64() == 0x2000
              && mbi.State == Kernel32.MEM_COMMIT && mbi.Protect == 4 && mbi.Type == Kernel32.MEM_PRIVATE,
              "committed region: size 0x" + mbi.RegionSize.ToString("x") + " state 0x" + mbi.State.ToString("x"));
        Kernel32.VirtualQueryEx(self, p + 0x2000, out mbi, U(48));
        Check(mbi.State == Kernel32.MEM_RESERVE && mbi.RegionSize.ToInt64() == size - 0x2000, "reserved rest");

        Kernel32.MemoryProtection old;
        Check(Kernel32.VirtualProtectEx(self, p, U(0x1000), Kernel32.MemoryProtection.ReadOnly, out old)
              && old == Kernel32.MemoryProtection.ReadWrite, "VirtualProtectEx reports the old protection");

        // Errors come back through SetLastError = true / Marshal.GetLastWin32Error().
        Check(!Kernel32.VirtualFreeEx(self, p + 0x1000, UIntPtr.Zero, Kernel32.AllocationType.Release)
              && Marshal.GetLastWin32Error() == Kernel32.ERROR_INVALID_ADDRESS, "release at a non-base: 487");
        Check(Kernel32.VirtualAllocEx(self, IntPtr.Zero, UIntPtr.Zero, Kernel32.AllocationType.Reserve,
              Kernel32.MemoryProtection.ReadWrite) == IntPtr.Zero
              && Marshal.GetLastWin32Error() == Kernel32.ERROR_INVALID_PARAMETER, "size 0: 87");
        Check(Kernel32.VirtualAllocEx(IntPtr.Zero, IntPtr.Zero, U(0x1000), Kernel32.AllocationType.Commit,
              Kernel32.MemoryProtection.ReadWrite) == IntPtr.Zero
              && Marshal.GetLastWin32Error() == Kernel32.ERROR_INVALID_HANDLE, "NULL handle: 6");
        IntPtr managed = Marshal.AllocHGlobal(64);
        Check(!Kernel32.VirtualFreeEx(self, managed, UIntPtr.Zero, Kernel32.AllocationType.Release)
              && Marshal.GetLastWin32Error() == Kernel32.ERROR_INVALID_ADDRESS, "memory it did not allocate: 487");
        Marshal.FreeHGlobal(managed);

        Check(Kernel32.VirtualFreeEx(self, p, UIntPtr.Zero, Kernel32.AllocationType.Release), "release");
        Kernel32.VirtualQueryEx(self, p, out mbi, U(48));
        Check(mbi.State == Kernel32.MEM_FREE, "released memory is free");
    }

    static void SimulatedProcess()
    {
        IntPtr h = Kernel32.VirtmemCreateProcess();
        Check(h != IntPtr.Zero, "VirtmemCreateProcess");
        IntPtr p = Kernel32.VirtualAllocEx(h, IntPtr.Zero, U(0x10000),
            Kernel32.AllocationType.Reserve | Kernel32.AllocationType.Commit, Kernel32.MemoryProtection.ReadWrite);
        Check(p != IntPtr.Zero, "alloc in the simulated process");
        byte[] hello = System.Text.Encoding.ASCII.GetBytes("hello, simulated world");
        IntPtr done;
        Check(Kernel32.WriteProcessMemory(h, p + 100, hello, new IntPtr(hello.Length), out done)
              && done.ToInt64() == hello.Length, "WriteProcessMemory");
        byte[] back = new byte[hello.Length];
        Check(Kernel32.ReadProcessMemory(h, p + 100, back, new IntPtr(back.Length), out done) && Equal(hello, back),
              "ReadProcessMemory reads it back");
        Check(Kernel32.VirtualFreeEx(h, p, UIntPtr.Zero, Kernel32.AllocationType.Release), "release");
        Check(Kernel32.CloseHandle(h), "CloseHandle");
        Check(!Kernel32.CloseHandle(h) && Marshal.GetLastWin32Error() == Kernel32.ERROR_INVALID_HANDLE,
              "a closed handle is invalid");
    }

    // The calls without a process handle, as most C# code makes them: GetSystemInfo's
    // figures, then a write-watched heap the way a garbage collector uses one (write into
    // it, ask which pages were written, reset them), a guard page and the errors.
    static void ThisProcess()
    {
        Kernel32.SYSTEM_INFO si;
        Kernel32.GetSystemInfo(out si);
        Check(Marshal.SizeOf(typeof(Kernel32.SYSTEM_INFO)) == 48, "SYSTEM_INFO is 48 bytes");
        Check(si.dwPageSize == 4096 && si.dwAllocationGranularity == 0x10000,
              "page 4096, granularity 64 KiB: " + si.dwPageSize + ", " + si.dwAllocationGranularity);
        ulong mask = si.dwActiveProcessorMask.ToUInt64();
        int bits = 0;
        for (; mask != 0; mask &= mask - 1) bits++;
        Check(si.wProcessorArchitecture == 9 && si.dwNumberOfProcessors >= 1
              && bits == Math.Min((int)si.dwNumberOfProcessors, 64),
              "AMD64, one mask bit per processor: " + si.wProcessorArchitecture + ", " + si.dwNumberOfProcessors
              + ", 0x" + si.dwActiveProcessorMask.ToUInt64().ToString("x"));
        Check(si.lpMinimumApplicationAddress.ToInt64() == 0x10000
              && si.lpMaximumApplicationAddress.ToInt64() > si.lpMinimumApplicationAddress.ToInt64(),
              "application addresses from 64 KiB up");

        const int page = 4096, pages = 16;
        IntPtr heap = Kernel32.VirtualAlloc(IntPtr.Zero, U(pages * page),
            Kernel32.AllocationType.Reserve | Kernel32.AllocationType.Commit | Kernel32.AllocationType.WriteWatch,
            Kernel32.MemoryProtection.ReadWrite);
        Check(heap != IntPtr.Zero, "write-watched heap: error " + Marshal.GetLastWin32Error());
        Check(heap.ToInt64() % 0x10000 == 0, "a reservation starts on a 64 KiB boundary");
        Marshal.WriteByte(heap + 3 * page, 1);
        Marshal.WriteInt64(heap + 8 * page - 4, -1); // straddles pages 7 and 8
        Marshal.WriteByte(heap + 12 * page + 100, 2);

        IntPtr[] written = new IntPtr[pages];
        UIntPtr count = U(pages);
        uint granularity;
        Check(Kernel32.GetWriteWatch(0, heap, U(pages * page), written, ref count, out granularity) == 0,
              "GetWriteWatch: error " + Marshal.GetLastWin32Error());
        Check(count.ToUInt64() == 4 && granularity == page, "four pages written: " + count + ", granularity "
              + granularity);
        Check(written[0] == heap + 3 * page && written[1] == heap + 7 * page && written[2] == heap + 8 * page
              && written[3] == heap + 12 * page, "the written pages, ascending");

        // A capped count with the reset flag resets only the pages it reported.
        count = U(2);
        Check(Kernel32.GetWriteWatch(Kernel32.WRITE_WATCH_FLAG_RESET, heap, U(pages * page), written, ref count,
              out granularity) == 0 && count.ToUInt64() == 2 && written[0] == heap + 3 * page
              && written[1] == heap + 7 * page, "capped at two, with reset");
        count = U(pages);
        Check(Kernel32.GetWriteWatch(0, heap, U(pages * page), written, ref count, out granularity) == 0
              && count.ToUInt64() == 2 && written[0] == heap + 8 * page && written[1] == heap + 12 * page,
              "the two not reported are still dirty: " + count);
        Check(Kernel32.ResetWriteWatch(heap, U(pages * page)) == 0, "ResetWriteWatch");
        count = U(pages);
        written[0] = new IntPtr(-1);
        Check(Kernel32.GetWriteWatch(0, heap, U(pages * page), written, ref count, out granularity) == 0
              && count.ToUInt64() == 0 && written[0] == new IntPtr(-1),
              "nothing dirty after the reset, and nothing written into the array");

        // Errors: 0xFFFFFFFF (GetWriteWatch) or non-zero (ResetWriteWatch), with the code.
        count = U(0);
        Check(Kernel32.GetWriteWatch(0, heap, U(page), written, ref count, out granularity) == 0xFFFFFFFF
              && Marshal.GetLastWin32Error() == Kernel32.ERROR_INVALID_PARAMETER, "*lpdwCount 0: 87");
        count = U(pages);
        Check(Kernel32.GetWriteWatch(2, heap, U(page), written, ref count, out granularity) == 0xFFFFFFFF
              && Marshal.GetLastWin32Error() == Kernel32.ERROR_INVALID_PARAMETER, "unknown flag: 87");
        Check(Kernel32.GetWriteWatch(0, heap, U((pages + 1) * page), written, ref count, out granularity)
              == 0xFFFFFFFF && Marshal.GetLastWin32Error() == Kernel32.ERROR_INVALID_PARAMETER,
              "a range past the reservation: 87");
        IntPtr plain = Kernel32.VirtualAlloc(IntPtr.Zero, U(page),
            Kernel32.AllocationType.Reserve | Kernel32.AllocationType.Commit, Kernel32.MemoryProtection.ReadWrite);
        Check(Kernel32.GetWriteWatch(0, plain, U(page), written, ref count, out granularity) == 0xFFFFFFFF
              && Marshal.GetLastWin32Error() == Kernel32.ERROR_INVALID_PARAMETER, "no MEM_WRITE_WATCH: 87");
        Check(Kernel32.ResetWriteWatch(plain, U(page)) != 0
              && Marshal.GetLastWin32Error() == Kernel32.ERROR_INVALID_PARAMETER, "ResetWriteWatch there: 87");

        // A guard page: reported with PAGE_GUARD by VirtualQuery and as the old protection.
        Kernel32.MemoryProtection old;
        Check(Kernel32.VirtualProtect(plain, U(page),
              Kernel32.MemoryProtection.ReadWrite | Kernel32.MemoryProtection.Guard, out old)
              && old == Kernel32.MemoryProtection.ReadWrite, "VirtualProtect to a guard page");
        Kernel32.MEMORY_BASIC_INFORMATION mbi;
        Check(Kernel32.VirtualQuery(plain, out mbi, U(48)).ToUInt64() == 48
              && mbi.Protect == (4 | Kernel32.PAGE_GUARD) && mbi.AllocationProtect == 4,
              "VirtualQuery shows PAGE_GUARD: 0x" + mbi.Protect.ToString("x"));
        Check(Kernel32.VirtualProtect(plain, U(page), Kernel32.MemoryProtection.ReadOnly, out old)
              && (uint)old == (4 | Kernel32.PAGE_GUARD), "the old protection includes PAGE_GUARD");

        Check(!Kernel32.VirtualFree(heap, U(page), Kernel32.AllocationType.Release)
              && Marshal.GetLastWin32Error() == Kernel32.ERROR_INVALID_PARAMETER,
              "MEM_RELEASE with a non-zero size: 87");
        Check(Kernel32.VirtualFree(heap, U(page), Kernel32.AllocationType.Decommit), "decommit the first page");
        Check(Kernel32.VirtualQuery(heap, out mbi, U(48)).ToUInt64() == 48 && mbi.State == Kernel32.MEM_RESERVE
              && mbi.RegionSize.ToInt64() == page, "decommitted page reserved");
        Check(Kernel32.VirtualFree(heap, UIntPtr.Zero, Kernel32.AllocationType.Release)
              && Kernel32.VirtualFree(plain, UIntPtr.Zero, Kernel32.AllocationType.Release), "release both");
        Check(Kernel32.VirtualQuery(heap, out mbi, U(48)).ToUInt64() == 48 && mbi.State == Kernel32.MEM_FREE,
              "released heap is free");
    }

    static bool Equal(byte[] a, byte[] b)
    {
        if (a.Length != b.Length) return false;
        for (int i = 0; i < a.Length; i++) if (a[i] != b[i]) return false;
        return true;
    }

    static int Main()
    {
        Check(Marshal.SizeOf(typeof(Kernel32.MEMORY_BASIC_INFORMATION)) == 48, "MEMORY_BASIC_INFORMATION is 48 bytes");
        CurrentProcess();
        ThisProcess();
        SimulatedProcess();
        Console.WriteLine(passed + " passed, " + failed + " failed");
        return failed == 0 ? 0 : 1;
    }
}
