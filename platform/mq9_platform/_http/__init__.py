"""The HTTP floor the waker, the A2A reach and mq9-mcp's webhooks stand on: the SSRF guard
(``ssrf.py``: every address checked, then connected to as checked) and the operator's host
allow-list (``hosts.py``)."""
