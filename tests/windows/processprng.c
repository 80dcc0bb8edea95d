/* ProcessPrng for Wine 8, which lacks it (Wine 9 has it): Rust's standard library calls
 * bcryptprimitives.dll!ProcessPrng since Rust 1.78, so the Rust extensions built from
 * mid-2024 on (cryptography 43 and later, and aiortc's dependencies with it) cannot load
 * under Wine 8. The test bench compiles this with mingw-w64 and puts it beside the
 * bench's python.exe; it is not part of the package. Same contract as Windows': fill the
 * buffer from the system's CSPRNG (RtlGenRandom), TRUE on success. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length); /* RtlGenRandom */

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
