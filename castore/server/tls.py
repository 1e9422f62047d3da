"""HTTPS served by castore itself (``castore serve --tls-cert FILE --tls-key FILE``).

For a site without a TLS proxy in front. uvicorn does the TLS (its ``ssl_certfile`` and
``ssl_keyfile``; with several workers, gunicorn's ``certfile`` and ``keyfile`` handed to
each uvicorn worker), on the one listening socket, so every request (``/version`` answered
while a worker starts included) goes over TLS. :meth:`TlsFiles.check` loads the pair once
before anything listens, so that a missing, unreadable or mismatched file is one line at
start-up rather than a traceback in each worker.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass

__all__ = ["TlsFiles", "UnreadableFile"]


class UnreadableFile(ValueError):
    """The certificate or key file is missing or cannot be read."""


@dataclass(frozen=True)
class TlsFiles:
    """A server certificate (PEM, with any intermediate certificates after it) and its private key."""

    cert: str
    key: str

    def check(self) -> None:
        """ValueError, one line, when the pair cannot serve: a file missing or unreadable
        (:class:`UnreadableFile`), not PEM, or a key that is not the certificate's."""
        for option, path in (("--tls-cert", self.cert), ("--tls-key", self.key)):
            try:
                with open(path, "rb"):
                    pass
            except OSError as e:
                raise UnreadableFile(f"{option} {path}: {e.strerror or e}") from None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(self.cert, self.key, password=self._encrypted)  # never a prompt
        except ssl.SSLError as e:
            reason = str(e.reason or e).replace("_", " ").lower()
            raise ValueError(f"--tls-cert {self.cert} with --tls-key {self.key}: cannot be used ({reason}); "
                             "is the key the certificate's, both in PEM?") from None

    def _encrypted(self) -> bytes:
        raise ValueError(f"--tls-key {self.key} is encrypted: castore serve takes an unencrypted key "
                         "(readable by its user only)")

    def absolute(self) -> TlsFiles:
        """The same files named from ``/`` (workers may run elsewhere)."""
        return TlsFiles(os.path.abspath(self.cert), os.path.abspath(self.key))
