"""Outgoing webhooks by the Standard Webhooks spec: the tracker tells the user's software.

- `events`: `enqueue(session, task, what)` writes a `deliveries` row per target in the
  transaction that changed the task (so an event is never lost, and never sent from inside
  the request that caused it); `configure(settings)` names the process's global target.
- `signing`: the secrets (TRACKER_NOTIFY_SECRET, or one generated into instance/ on SQLite),
  the `webhook-*` headers, and the expiring signed media links in a body.
- the claim, lease and backoff of a delivery are the scheduler's (`scheduler.deliveries`).
- `sender`: the worker's delivery thread and the HTTP POST (10 s, no redirects, per-task
  targets through the address guard, connection pinned to the checked address).
"""

from __future__ import annotations

from .events import EVENT_TYPES, configure, enqueue, enqueue_in, global_target, wanted

__all__ = ["EVENT_TYPES", "configure", "enqueue", "enqueue_in", "global_target", "wanted"]
