"""JetStream as the bundled broker uses it, named once: the API's subjects, headers and error
codes (``api.py``), a key-value bucket read and written by hand (``bucket.py``: deleted keys
handled in one place) and the wait for a JetStream still electing its leader (``ready.py``)."""
