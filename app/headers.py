"""Security headers on every answer: a CSP that runs only qcloop's own scripts and styles, no framing,
no MIME sniffing, no referrer leaving the site.

The pages hold no inline script, style or event handler (static/js does that work), so the policy
needs no 'unsafe-inline'. 'wasm-unsafe-eval' lets Niivue compile its WebAssembly decoders; it does
not allow eval of JavaScript. Images include data: and blob: URLs, which the viewer and Swagger UI
draw from.
"""
from __future__ import annotations

from flask import Flask, Response

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'",
    "script-src 'self' 'wasm-unsafe-eval'",
    "style-src 'self'",
    "img-src 'self' data: blob:",
    "font-src 'self' data:",
    "connect-src 'self'",
    "worker-src 'self' blob:",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def init_headers(app: Flask) -> None:
    @app.after_request
    def add_security_headers(response: Response) -> Response:
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response
