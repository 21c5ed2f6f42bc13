"""The upstream, the only code that knows the wire: `client` (transport, typed errors),
`operations` (one typed request per operation), `dialects` (each API's paths and words),
`parse` and `parse_create` (any upstream body, read), `accounts` (per-account state)."""
