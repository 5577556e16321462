"""Waiting without the GIL: a thread looks at flags in compiled code until they reach a value.

A thread that polls in Python holds the GIL for every look, and a thread with work to do
then waits for the GIL behind every poller each time it takes it back (after each
kernel or NumPy call that let it go). Measured on 2 cores, 15 helpers polling with
``time.sleep(0)``: a 4096-element ``np.add`` in the caller took 8.7 us instead of 1.6.
``reached`` looks with the GIL released and sleeps between looks as ``time.sleep(0)``
did (``usleep(0)``: about 90 us here, the kernel's timer slack), so polling costs the
other threads nothing. (Yielding instead, a busy loop of ``sched_yield``, made single
passes 5-25% slower on this 2-vCPU VM: the spinning vCPU slows the working one.)

The flags are int64 counters that only grow; the writer sets them while it holds the GIL
(so its earlier writes are visible first), and a reader that sees a flag reach its value
takes the GIL again before it reads anything else.
"""

from __future__ import annotations

import ctypes

from numba import njit


def _usleep():
    """The C library's usleep, or None where there is none (then nothing can spin)."""
    try:
        f = ctypes.CDLL(None).usleep
    except (OSError, AttributeError, TypeError):
        return None
    f.restype, f.argtypes = ctypes.c_int, [ctypes.c_uint]
    return f


_sleep = _usleep()
CAN_SPIN = _sleep is not None


@njit(nogil=True, cache=True)
def _reached(flags, lo, hi, value, looks, sleep):
    for look in range(max(1, looks)):
        done = True
        for i in range(lo, hi):
            if flags[i] < value:
                done = False
                break
        if done:
            return True
        if look + 1 < looks:
            sleep(0)            # opaque to the compiler: the next look reads memory again
    return False


def reached(flags, lo: int, hi: int, value: int, looks: int) -> bool:
    """Whether every flags[lo:hi] >= value, looking up to ``looks`` times (at least once)
    with the GIL released; where there is no usleep, one look with the GIL held."""
    if _sleep is None:
        return bool((flags[lo:hi] >= value).all())
    return _reached(flags, lo, hi, value, looks, _sleep)
