"""Every claim, lease and backoff: who may work on a task now, and when it is due again.

- `timing`: the one backoff helper (`Backoff`) and every schedule and lease value; lifecycle
  writes those values in its own UPDATE (one statement a callback), but never makes one up;
- `claims`: dispatch slots (the advisory lock, `slots_free`, `claim_for_dispatch`), poll
  claims and their release, archive claims (with the take-over of dead holders);
- `sweeps`: the recovery sweeps (a send whose process died, tasks past their timeout);
- `deliveries`: outgoing webhook deliveries (issue 11): their claims, leases and retry schedule;
- `accounts`: the account row's turn to read the credit balance (one process, once a minute).

A package rather than one file: `lifecycle` needs `timing` while `claims` and `sweeps` call
`lifecycle` for the state changes a claim makes, so the timing sits below lifecycle and the
claims above it, with no import cycle.
"""
