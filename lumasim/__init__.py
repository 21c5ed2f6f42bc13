"""A stand-in for the upstream video API, for development, tests and benchmarks only.

Why a package of its own, beside `tracker` rather than inside it: it is not part of the
service that runs in production, and it serves its own sample media (lumasim/samples/,
under its own /files/ route), so the tracker's public /assets/ holds the dashboard's files
only. It is still installed with the tracker (pyproject.toml), so `tracker simulate` and
`make run` work after a plain `pip install`; `python -m lumasim` runs it too.

- `simulator`: the HTTP server, its clock-driven tasks, callbacks and fault injection
- `luma`: the routes and shapes of Luma's own API (flavor="luma")
"""
