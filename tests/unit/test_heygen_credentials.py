"""load_api_key: HEYGEN_API_KEY, HEYGEN_API_KEY_FILE, and their clear failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.providers.credentials import ApiKeyError, load_api_key

KEY = "hg-secret-key-123"


def test_neither_variable_set() -> None:
    assert load_api_key({}) is None
    assert load_api_key({"HEYGEN_API_KEY": "  ", "HEYGEN_API_KEY_FILE": ""}) is None


def test_key_from_the_variable() -> None:
    key = load_api_key({"HEYGEN_API_KEY": f" {KEY}\n"})
    assert key is not None
    assert key.get_secret_value() == KEY
    assert KEY not in repr(key)
    assert KEY not in str(key)


def test_key_from_the_file_is_stripped(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(f"{KEY}\n", encoding="utf-8")
    key = load_api_key({"HEYGEN_API_KEY_FILE": str(path)})
    assert key is not None
    assert key.get_secret_value() == KEY


def test_both_set_and_equal_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(KEY, encoding="utf-8")
    key = load_api_key({"HEYGEN_API_KEY": KEY, "HEYGEN_API_KEY_FILE": str(path)})
    assert key is not None
    assert key.get_secret_value() == KEY


def test_both_set_and_different_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("another-key", encoding="utf-8")
    with pytest.raises(ApiKeyError, match="HEYGEN_API_KEY and HEYGEN_API_KEY_FILE") as info:
        load_api_key({"HEYGEN_API_KEY": KEY, "HEYGEN_API_KEY_FILE": str(path)})
    assert KEY not in str(info.value)
    assert "another-key" not in str(info.value)


def test_missing_file_names_the_variable(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ApiKeyError, match=f"HEYGEN_API_KEY_FILE={missing}: cannot read"):
        load_api_key({"HEYGEN_API_KEY_FILE": str(missing)})


def test_empty_file_names_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(" \n", encoding="utf-8")
    with pytest.raises(ApiKeyError, match=r"HEYGEN_API_KEY_FILE=.*the file is empty"):
        load_api_key({"HEYGEN_API_KEY_FILE": str(path)})
