"""Typed async client for HeyGen's Streaming Avatar API, its errors, retry policy and models."""

from worker.heygen.client import DEFAULT_BASE_URL, ENDPOINT_EXTENSION, HeyGenClient, endpoint_name
from worker.heygen.credentials import ApiKeyError, load_api_key
from worker.heygen.errors import (
    AuthenticationError,
    CapacityError,
    ForbiddenError,
    HeyGenError,
    HeyGenTimeoutError,
    InvalidRequestError,
    RateLimitedError,
    ServerError,
    SessionClosedError,
    TransportError,
)
from worker.heygen.models import (
    Avatar,
    IceCandidate,
    IceServer,
    NewSession,
    NewSessionRequest,
    RemoteSession,
    SdpAnswer,
    SdpOffer,
    SttSettings,
    TaskResult,
    Voice,
)
from worker.heygen.retry import ENDPOINT_SAFETY, RetryPolicy, Safety, is_retried
from worker.heygen.transport import default_transport

__all__ = [
    "DEFAULT_BASE_URL",
    "ENDPOINT_EXTENSION",
    "ENDPOINT_SAFETY",
    "ApiKeyError",
    "AuthenticationError",
    "Avatar",
    "CapacityError",
    "ForbiddenError",
    "HeyGenClient",
    "HeyGenError",
    "HeyGenTimeoutError",
    "IceCandidate",
    "IceServer",
    "InvalidRequestError",
    "NewSession",
    "NewSessionRequest",
    "RateLimitedError",
    "RemoteSession",
    "RetryPolicy",
    "Safety",
    "SdpAnswer",
    "SdpOffer",
    "ServerError",
    "SessionClosedError",
    "SttSettings",
    "TaskResult",
    "TransportError",
    "Voice",
    "default_transport",
    "endpoint_name",
    "is_retried",
    "load_api_key",
]
