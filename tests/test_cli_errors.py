"""One error handler for every command: a mistake the user can act on is one line on stderr and exit status 1,
whichever package's command made it; a bug keeps its traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tvr_cli import app, user_error_message


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (["ingest", "{tmp}/no-such-folder"], {}, "no-such-folder: no such file or folder"),  # IndexerError
        (["index", "stats", "--database-url", "postgresql+psycopg://u@127.0.0.1:1/x"], {}, "cannot use the catalog"),
        (["serve"], {"TVR_API_KEY": "short"}, "settings: api_key"),  # pydantic ValidationError
        (["ingest", "{tmp}", "--checkpoint", "{tmp}/missing"], {}, "missing' not found"),  # CheckpointError
        (["eval", "--checkpoint", "demo", "--data", "{tmp}/none.jsonl"], {}, "none.jsonl"),  # DatasetError
        (["ingest", "{tmp}", "--checkpoint", "openclip:NoSuchArch/x"], {}, "unknown open_clip architecture"),
    ],
)
def test_user_errors_are_one_line_and_exit_1(tmp_path: Path, args: list[str], env: dict[str, str], words: str) -> None:
    env = {"TVR_DATA_DIR": str(tmp_path / "data"), **env}
    result = CliRunner().invoke(app, [a.replace("{tmp}", str(tmp_path)) for a in args], env=env)
    assert result.exit_code == 1, result.output
    assert "Error: " in result.output and words in result.output and "Traceback" not in result.output


def test_a_bug_is_not_dressed_up_as_a_user_error() -> None:
    assert user_error_message(ZeroDivisionError("division by zero")) is None
