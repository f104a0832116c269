"""The mapping from a HeyGen HTTP answer (status, code, message) to the typed provider errors."""

from __future__ import annotations

import re

from worker.providers.base import (
    AuthenticationError,
    CapacityError,
    ForbiddenError,
    InvalidRequestError,
    ProviderError,
    RateLimitedError,
    ServerError,
    SessionClosedError,
)
from worker.providers.retry import parse_retry_after

AUTH_CODES = frozenset({400112})
FORBIDDEN_CODES = frozenset({400562, 400599})
WRONG_STATE_CODES = frozenset({400006})
# HeyGen's own code is unconfirmed; 10013 is what the project's simulator answers.
CAPACITY_CODES = frozenset({10013})

_CAPACITY_MESSAGE = re.compile(r"concurren.*limit|limit.*concurren", re.IGNORECASE)
_WRONG_STATE_MESSAGE = re.compile(r"not in correct state|session state wrong", re.IGNORECASE)


def error_from_answer(
    *,
    endpoint: str,
    http_status: int,
    code: int | None,
    message: str,
    retry_after: str | None = None,
) -> ProviderError:
    """The typed error for an answer that is not a success. Order matters: the capacity code and
    message are checked first because the limit arrives as a plain 400 (or 429/403)."""

    def make(cls: type[ProviderError]) -> ProviderError:
        return cls(message, endpoint=endpoint, code=code, http_status=http_status)

    if code in CAPACITY_CODES or _CAPACITY_MESSAGE.search(message):
        return make(CapacityError)
    if http_status == 401 or code in AUTH_CODES:
        return make(AuthenticationError)
    if http_status == 403 or code in FORBIDDEN_CODES:
        return make(ForbiddenError)
    if http_status == 429:
        return RateLimitedError(
            message,
            endpoint=endpoint,
            code=code,
            http_status=http_status,
            retry_after=parse_retry_after(retry_after),
        )
    if code in WRONG_STATE_CODES or _WRONG_STATE_MESSAGE.search(message):
        return make(SessionClosedError)
    if http_status >= 500:
        return make(ServerError)
    # Other 4xx, and an error code inside a 2xx answer: HeyGen refused this request as sent.
    return make(InvalidRequestError)
