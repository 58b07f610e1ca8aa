"""Staff PIN checks (argon2), one at a time on a thread of their own.

An argon2id verification with the hall's parameters (m=64 MiB, t=3, p=4) allocates 64 MiB for
its ~0.3 s. Run on the loop's default executor (up to cpu+4 threads), a burst of logins (a
250-window hall opening in the morning, keypads and staff pages at once) verified 6 PINs in
parallel: ~400 MB of RSS for nothing, since 2 cores run them no faster in parallel, and the
default executor was full for everything else that uses it. A single dedicated thread bounds
that memory at 64 MiB per process (hence one executor for the process, not per box), keeps the
default executor free, and queues the burst instead; a LAN client cannot make the box allocate
more by logging in faster.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
_argon2 = ThreadPoolExecutor(max_workers=1, thread_name_prefix="argon2")


def _check(pin_hash: str, pin: str) -> bool:
    try:
        return bool(_hasher.verify(pin_hash, pin))
    except (VerificationError, InvalidHashError):
        return False


async def pin_matches(pin_hash: str, pin: str) -> bool:
    """True when `pin` matches the argon2 `pin_hash`; a malformed hash is a mismatch."""
    return await asyncio.get_running_loop().run_in_executor(_argon2, _check, pin_hash, pin)
