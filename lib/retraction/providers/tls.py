"""One verifying TLS context per CA file for the whole process, shared by both providers.

urllib3 (under requests for Graph, directly for Google tokens) and httplib2 build a new
SSLContext and load the CA file for every connection they open; with certifi's bundle that is
~40 ms of CPU per connection, and each chunk's provider opens one per worker thread.
"""
from __future__ import annotations

import ssl
import threading
from typing import Dict, Optional

_contexts: Dict[str, ssl.SSLContext] = {}  # CA file -> its verifying context
_lock = threading.Lock()


def verifying_context(ca_file: str) -> ssl.SSLContext:
    """The context urllib3 would build for a connection verified against `ca_file` (same TLS
    settings, certificates and host names required), built once per process."""
    from urllib3.util.ssl_ import create_urllib3_context

    with _lock:
        context = _contexts.get(ca_file)
        if context is None:
            context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
            context.load_verify_locations(cafile=ca_file)
            _contexts[ca_file] = context
        return context


def shared_context(ca_file: Optional[str]) -> Optional[ssl.SSLContext]:
    """The process's context for `ca_file` if one was built, else None."""
    return _contexts.get(ca_file) if ca_file else None
