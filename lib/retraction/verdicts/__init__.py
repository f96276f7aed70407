"""Verdict sources the sensors read: the Cloudflare Email Security API first.

- `cloudflare`: the API client (cursor and page paging, retries, `CloudflareError`).
- `rows`: raw rows -> checked records in the DESIGN words (disposition mapping, delivered).
- `watch`: the decisions without I/O (new, changed, confirmed) and the datastore encoding.
- `poll`: one poll of each sensor, with its state in the StackStorm datastore and backoff.
"""
