"""The upstream accounts: whom the tracker talks to the upstream as, and each one's state.

An `Account` is a name, a dialect, a base URL and a key, and its limits; the pool (`pool`) is
every LUMA_ACCOUNT_<NAME>_KEY, or LUMA_API_KEY alone as `default`. What the tracker knows of
an account is keyed by its name: in this process its `Manners` (a Retry-After pause, a batch
endpoint found missing), shared by every thread; in the database its row (enabled, or why
not; its credit balance). The balance is stored because no page may wait on the upstream
for it and Luma is asked at most once a minute however many workers run: the worker calls
`refresh` each pass, which claims the row's turn first (`tasks.claims.claim_credit_check`).
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from dataclasses import dataclass, field

from tracker.settings import (
    ACCOUNT_PREFIX,
    DEFAULT_BASES,
    DIALECTS,
    Settings,
    SettingsError,
    choice,
    http_url,
    number,
)
from tracker.upstream.client import LumaClient

log = logging.getLogger(__name__)

DEFAULT = "default"  # the one account's name, while there is one
BATCH_REPROBE = 600.0  # an upstream without a usable batch endpoint is asked again after this


@dataclass(frozen=True)
class Account:
    name: str
    dialect: str  # one of settings.DIALECTS (LUMA_API_FLAVOR)
    base_url: str
    key: str = field(repr=False)
    max_in_flight: int = 10  # TRACKER_MAX_IN_FLIGHT
    submits_per_minute: int = 20  # TRACKER_SUBMITS_PER_MINUTE
    daily_limit: int | None = None  # creates a UTC day (None: no limit)


def from_settings(settings: Settings) -> Account:
    """The account the settings describe (LUMA_API_FLAVOR, LUMA_API_BASE, LUMA_API_KEY)."""
    return Account(
        name=DEFAULT,
        dialect=settings.luma_api_flavor,
        base_url=settings.luma_api_base,
        key=settings.luma_api_key,
        max_in_flight=settings.max_in_flight,
        submits_per_minute=settings.submits_per_minute,
    )


_SETTING = re.compile(
    rf"{ACCOUNT_PREFIX}([A-Za-z0-9]+)_(KEY|FLAVOR|BASE|MAX_IN_FLIGHT|SUBMITS_PER_MINUTE|DAILY_LIMIT)"
)


@functools.lru_cache(maxsize=16)
def pool(settings: Settings) -> tuple[Account, ...]:
    """Every account the environment names, by name; SettingsError naming the variable.

    `LUMA_ACCOUNT_<NAME>_KEY` defines account `<name>` (letters and digits, lower-cased), with
    its optional `_FLAVOR`, `_BASE`, `_MAX_IN_FLIGHT`, `_SUBMITS_PER_MINUTE` and `_DAILY_LIMIT`;
    the LUMA_API_* and TRACKER_* settings are each one's defaults. Without any, the one
    account `default` is the LUMA_API_* settings' (`from_settings`), as before accounts.
    """
    if not settings.account_env:
        return (from_settings(settings),)
    if settings.luma_api_key:
        raise SettingsError(
            "LUMA_API_KEY cannot be set beside LUMA_ACCOUNT_<NAME>_KEY: name it as an account "
            "(LUMA_ACCOUNT_DEFAULT_KEY, say) or leave the account variables out"
        )
    given: dict[str, dict[str, tuple[str, str]]] = {}
    for variable, value in settings.account_env:
        found = _SETTING.fullmatch(variable)
        if found is None:
            raise SettingsError(
                f"{variable} is not an account setting: LUMA_ACCOUNT_<NAME>_ then KEY, FLAVOR, "
                "BASE, MAX_IN_FLIGHT, SUBMITS_PER_MINUTE or DAILY_LIMIT (<NAME>: letters, digits)"
            )
        name, what = found.group(1).lower(), found.group(2)
        if what in given.setdefault(name, {}):
            raise SettingsError(f"{variable} names account {name} twice (names ignore case)")
        given[name][what] = (variable, value.strip())
    return tuple(_account(name, given[name], settings) for name in sorted(given))


def _account(name: str, given: dict[str, tuple[str, str]], settings: Settings) -> Account:
    prefix = f"{ACCOUNT_PREFIX}{name.upper()}_"
    if not given.get("KEY", ("", ""))[1]:
        raise SettingsError(f"{prefix}KEY must be set: account {name} has settings but no key")
    env = {variable: value for variable, value in given.values()}
    variable = {what: variable for what, (variable, _) in given.items()}
    dialects_ = sorted(DIALECTS, key=lambda dialect: dialect != settings.luma_api_flavor)
    flavor = choice(env, variable.get("FLAVOR", ""), tuple(dialects_))  # LUMA_API_FLAVOR first
    same = flavor == settings.luma_api_flavor
    default_base = settings.luma_api_base if same else DEFAULT_BASES[flavor]
    limit = number(env, variable.get("DAILY_LIMIT", ""), 0, minimum=1) or None
    return Account(
        name=name,
        dialect=flavor,
        base_url=http_url(env, variable.get("BASE", ""), default_base),
        key=given["KEY"][1],
        max_in_flight=number(
            env, variable.get("MAX_IN_FLIGHT", ""), settings.max_in_flight, minimum=1
        ),
        submits_per_minute=number(
            env, variable.get("SUBMITS_PER_MINUTE", ""), settings.submits_per_minute, minimum=1
        ),
        daily_limit=limit,
    )


def client_for(account: Account, settings: Settings) -> LumaClient:
    """The account's client; its pool at least as large as the worker's concurrency."""
    return LumaClient(
        account.base_url,
        account.key,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        pool_size=max(10, settings.poll_concurrency + 2),
        dialect=account.dialect,
        account=account.name,
    )


def named(settings: Settings, name: str | None) -> Account | None:
    """The account of this name in the pool (None: no such account)."""
    return next((account for account in pool(settings) if account.name == name), None)


_clients: dict[Account, LumaClient] = {}
_clients_lock = threading.Lock()


def client_of(settings: Settings, name: str | None, given: LumaClient) -> LumaClient:
    """The client to speak as account `name`: `given` when it is that account's, else this
    process's one client for it (made on first use, kept for the process's life)."""
    if name is None or name == given.account:
        return given
    account = named(settings, name)
    if account is None:  # an account no longer configured: its tasks wait, nothing is sent
        raise LookupError(f"no account {name!r} in LUMA_ACCOUNT_* (or LUMA_API_KEY)")
    with _clients_lock:
        if account not in _clients:
            _clients[account] = client_for(account, settings)
        return _clients[account]


# -- what this process learned about an account -------------------------------------------


@dataclass
class Manners:
    """What this process learned about one account's upstream, shared by every thread."""

    paused_until: dict[str, float] = field(default_factory=dict)  # "query"/"create": monotonic
    batch_off_until: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pause(self, what: str, seconds: float) -> None:
        with self.lock:
            until = max(self.paused_until.get(what, 0.0), time.monotonic() + seconds)
            self.paused_until[what] = until

    def pause_left(self, what: str = "query") -> float:
        return max(0.0, self.paused_until.get(what, 0.0) - time.monotonic())

    def use_batch(self) -> bool:
        return time.monotonic() >= self.batch_off_until

    def no_batch(self) -> None:
        if self.use_batch():
            log.info("the upstream has no usable batch endpoint: asking one task at a time")
        self.batch_off_until = time.monotonic() + BATCH_REPROBE


_manners: dict[str, Manners] = {}
_manners_lock = threading.Lock()


def manners_for(account: str) -> Manners:
    """The account's manners in this process, by its name (`Account.name`)."""
    with _manners_lock:
        return _manners.setdefault(account, Manners())


def forget_manners() -> None:
    """Start afresh, as a new process would (tests)."""
    with _manners_lock:
        _manners.clear()
