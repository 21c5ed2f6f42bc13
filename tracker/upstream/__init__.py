"""The upstream, the only code that knows the wire: `client` (transport, typed errors),
`operations` (one typed request per operation, and what a create's answer says), `dialects`
(each API's paths and words), `parse` (any upstream body about a task, read), `accounts`
(per-account state)."""
