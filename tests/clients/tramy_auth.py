"""Sends tramy's credential with every `requests` call (dicomweb-client uses requests too).

The test harness passes the server's token in TRAMY_TOKEN; importing this module adds
`Authorization: Bearer <token>` to each request that does not name its own Authorization
header. Without TRAMY_TOKEN it does nothing.
"""
import os

import requests

_TOKEN = os.environ.get("TRAMY_TOKEN", "")
_request = requests.Session.request


def _with_token(self, method, url, **kwargs):
    headers = dict(kwargs.pop("headers", None) or {})
    if _TOKEN and not any(k.lower() == "authorization" for k in headers):
        headers["Authorization"] = f"Bearer {_TOKEN}"
    return _request(self, method, url, headers=headers, **kwargs)


if _TOKEN:
    requests.Session.request = _with_token
