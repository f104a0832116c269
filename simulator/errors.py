"""HeyGen's error answers (HTTP status, envelope code, message) as the simulator gives them."""

from __future__ import annotations

from http import HTTPStatus

SUCCESS_CODE = 100
SUCCESS_MESSAGE = "success"

UNAUTHORIZED = 400112
WRONG_STATE = 400006
INVALID_PARAMETER = 40001
NO_API_ACCESS = 400599
# HeyGen's codes for these two were not found stated anywhere: the simulator's own choice.
CONCURRENT_LIMIT = 10013
RATE_LIMITED = 429


class ApiError(Exception):
    """An error answer: HTTP status, HeyGen code and message, optionally a Retry-After."""

    def __init__(
        self, status: int, code: int, message: str, *, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


def unauthorized() -> ApiError:
    return ApiError(401, UNAUTHORIZED, "Unauthorized")


def no_api_access() -> ApiError:
    return ApiError(403, NO_API_ACCESS, "Your account does not have API access")


def wrong_state() -> ApiError:
    return ApiError(400, WRONG_STATE, "Session is not in correct state")


def session_closed() -> ApiError:
    # The reference lists "session state wrong: closed" for calls after HeyGen closed a session
    # (its code is unconfirmed); 400006 keeps clients that only look at the code working.
    return ApiError(400, WRONG_STATE, "Session state wrong: closed")


def invalid_parameter(detail: str) -> ApiError:
    return ApiError(400, INVALID_PARAMETER, f"Invalid parameter: {detail}")


def concurrent_limit() -> ApiError:
    # HeyGen's real code for this answer is unconfirmed; 10013 is the simulator's choice.
    return ApiError(400, CONCURRENT_LIMIT, "Concurrent session limit reached")


def rate_limited(retry_after: float) -> ApiError:
    # HeyGen's rate-limit code is unconfirmed; the HTTP status and Retry-After are what count.
    return ApiError(429, RATE_LIMITED, "Too many requests", retry_after=retry_after)


def for_status(status: int, code: int | None = None, message: str | None = None) -> ApiError:
    """The answer an injected fault gives: HeyGen's usual code and message for that status."""
    usual = {
        400: invalid_parameter("injected fault"),
        401: unauthorized(),
        403: no_api_access(),
        429: rate_limited(0),
    }.get(status)
    default_code = usual.code if usual else status
    default_message = usual.message if usual else _phrase(status)
    return ApiError(
        status,
        default_code if code is None else code,
        default_message if message is None else message,
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
