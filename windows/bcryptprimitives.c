/* A stand-in for Windows' bcryptprimitives.dll, for running dbmirror.exe under Wine 8 in tests
 * only; it is never shipped. Rust's standard library (1.78 and later) draws its randomness from
 * ProcessPrng in bcryptprimitives.dll, which every supported Windows (10 and later) has and
 * Wine 8 lacks, so without it the exe does not start (status c0000135). This exports the same
 * function over RtlGenRandom (SystemFunction036 in advapi32), which Wine has. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length) {
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk)) return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
