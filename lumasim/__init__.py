"""A stand-in for the upstream video API, for development, tests and benchmarks only.

Why a package of its own, beside `tracker` rather than inside it: it is not part of the
service that runs in production, and it serves its own sample media (lumasim/samples/,
under its own /files/ route), so the tracker's public /assets/ holds the dashboard's files
only. It is still installed with the tracker (pyproject.toml), so `tracker simulate` and
`make run` work after a plain `pip install`; `python -m lumasim` runs it too.

- `simulator`: the `Simulator` (a WSGI app, served in a thread by `start()`) and its test controls
- `routes`: how it answers a request: the route handlers and the raw objects
- `proxy`, `luma`: the two voices (the reseller proxy's API, Luma's own): routes, refusals, objects
- `luma_checks`, `luma_routes`: Luma's operations beside create (upscale, audio, modify,
  reframe, images): what each takes, and their handlers
- `tasks`: tasks whose state follows the clock, and the requests seen
- `accounts`: one upstream account per API key (its tasks, balance, creates; revoking)
- `callbacks`: the scheduler and senders of notify_hook callbacks
- `faults`: the failures a test queues; `media`: the sample files and their presigned links
- `store`: with `--store PATH`, its tasks and balances in a SQLite file, across restarts
- `run`: `tracker simulate` / `python -m lumasim`
"""
