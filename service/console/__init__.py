"""The analyst console: server-rendered pages at ``/`` for triaging alerts in a browser (docs/console.md).

:mod:`.sessions` exchanges a named API token for a cookie session with a CSRF
token; :mod:`.pages` serves the pages, the packaged static files and the offline
``/docs``; :mod:`.views` computes what the pages show without I/O;
:mod:`.headers` adds the Content-Security-Policy and the other security headers.
Kept import-light: :mod:`service.api.auth` imports :mod:`.sessions`.
"""
