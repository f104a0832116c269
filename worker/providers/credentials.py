"""Load a provider's API key from a variable (HEYGEN_API_KEY, LIVEAVATAR_API_KEY) or the file its
`_FILE` twin names."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import SecretStr

KEY_VAR = "HEYGEN_API_KEY"
FILE_VAR = "HEYGEN_API_KEY_FILE"


class ApiKeyError(ValueError):
    """The key is configured but unusable; the message names the variable, never the key."""


def load_api_key(
    env: Mapping[str, str] = os.environ, *, key_var: str = KEY_VAR, file_var: str = FILE_VAR
) -> SecretStr | None:
    """The key, or None when neither variable is set (an empty value counts as unset)."""
    direct = env.get(key_var, "").strip()
    file_name = env.get(file_var, "").strip()
    from_file = _read_key_file(file_var, file_name) if file_name else ""
    if direct and from_file and direct != from_file:
        raise ApiKeyError(f"{key_var} and {file_var} are both set and differ; set only one")
    key = direct or from_file
    return SecretStr(key) if key else None


def _read_key_file(file_var: str, file_name: str) -> str:
    try:
        key = Path(file_name).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ApiKeyError(
            f"{file_var}={file_name}: cannot read the file ({exc.strerror})"
        ) from None
    if not key:
        raise ApiKeyError(f"{file_var}={file_name}: the file is empty")
    return key
