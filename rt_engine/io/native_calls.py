"""C functions called from Numba code by address: libc's clock_gettime, and the addresses of
libc functions, looked up once.

Compiled callers store an address (`libc_address(name)`) in one of their arrays at run time and
call through it, so their machine code caches on disk (no address is baked into it).

Public API: `CLOCK_REALTIME`, `CLOCK_MONOTONIC`, `call_clock_gettime` (a Numba intrinsic),
`clock_seconds(function, clock_id, timespec) -> float` (Numba), `libc_address(name) -> int`.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

import numba
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

CLOCK_REALTIME, CLOCK_MONOTONIC = 0, 1


@intrinsic
def call_clock_gettime(typingctx, function, clock_id, timespec):
    """`clock_gettime(clock_id, (struct timespec *) timespec)` through its address."""
    def codegen(context, builder, signature, args):
        int32, int64 = context.get_value_type(types.int32), context.get_value_type(types.int64)
        fnty = ir.FunctionType(int32, [int32, int64.as_pointer()])
        fn = builder.inttoptr(args[0], fnty.as_pointer())
        clock = context.cast(builder, args[1], signature.args[1], types.int32)
        return builder.call(fn, [clock, builder.inttoptr(args[2], int64.as_pointer())])

    return types.int32(function, clock_id, timespec), codegen


@numba.njit(cache=True, nogil=True)
def clock_seconds(function, clock_id, timespec):
    """The time of `clock_id` (s), through clock_gettime at address `function`, with `timespec`
    (int64 [2], a caller's preallocated scratch: seconds, nanoseconds) as its struct timespec."""
    call_clock_gettime(function, clock_id, timespec.ctypes.data)
    return timespec[0] + 1e-9 * timespec[1]


@functools.lru_cache(maxsize=None)
def libc_address(name: str) -> int:
    """The address of libc's function `name` (AttributeError when libc has none)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    return ctypes.cast(getattr(libc, name), ctypes.c_void_p).value
