"""The web console of ``mq9 console`` (the ``console`` extra: Starlette, Jinja2, uvicorn).

One module per job, in the order a request meets them:

- ``serve``: the checks before the console listens, and uvicorn serving it; ``settings``: what
  its options hand the application;
- ``app``: the application: its routes, what runs while it is open, the error page;
- ``guard``: the door (a session or the bearer token, the security headers, forms from other
  sites refused); ``auth``: the token, sessions and CSRF;
- ``params``: what a request names (its mailbox, its search, its reply mailbox), checked once;
- ``pages``: the pages a person reads; ``actions``: the forms that change something, and the
  login; ``live``: the event streams of a page left open; ``api``: the read-only JSON API;
- ``reads``: ``Console``, what every request shares, and the reads the pages make of the broker
  (a mailbox's figures and count, a page of messages, the calls followed, the depth sampler);
- ``rendering``: how a value shows on a page; ``charts``: the SVG pictures; ``census``: a
  mailbox counted to its end; ``audit``: the log of writes; ``metrics``: the console's own
  ``/metrics``.

Anything another agent wrote (payloads, cards, reasons, questions) is shown as text: the
templates escape it, the page's script only ever sets ``textContent``, and the Content Security
Policy runs no script but the console's own file.
"""
