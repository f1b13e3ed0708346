"""Python client for qcloop's API: ``Client(url, token=...)`` or ``Client.login(url, username, password)``."""
from qcloop_client.client import Client
from qcloop_client.errors import (
    AuthError,
    Conflict,
    ConnectionFailed,
    InvalidInput,
    JobFailed,
    NotFound,
    NotQcloop,
    QcloopError,
    ServerError,
)
from qcloop_client.listing import Listing

__all__ = ["AuthError", "Client", "Conflict", "ConnectionFailed", "InvalidInput", "JobFailed", "Listing", "NotFound",
           "NotQcloop", "QcloopError", "ServerError"]
__version__ = "0.1.0"
