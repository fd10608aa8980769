"""JetStream as the bundled broker uses it, named once: the API's subjects, headers and error
codes (``api.py``), the broker's one JetStream client (``requests.py``, what its reads may
bring at once in ``window.py``), a key-value bucket made, read and written by hand
(``bucket.py``: deleted keys handled in one place), the wait for a JetStream still electing
its leader (``ready.py``), and nats-py's ``nats.js`` where a stream must be followed
(``consumers.py``: watches, ordered reads; the one module that imports it)."""
