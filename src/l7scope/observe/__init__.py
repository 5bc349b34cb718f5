"""Terminal views over the server's query API: `l7scope observe` (records, with Hubble-style
filters, `--follow`, several output formats, and the same filters over saved JSON lines) and
`l7scope top` (a live table of the busiest edges or routes).

Modules: `client` (HTTP client for the API), `filters` (flags -> selector, and local matching),
`printer` (output formats), `follow` (exactly-once streaming cursor), `cli`, `top`.
"""
