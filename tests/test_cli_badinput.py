"""Bad input is one message and exit 2, never a traceback: usage errors, user text that looks
like rich markup, bad revisions, broken task YAMLs, oversized campaign files, fix texts that
name real commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main

from evallab.campaign.raw import stored_later
from evallab.cli.app import app
from evallab.errors import DatabaseError
from evallab.runtimes.process import free_port
from tests.cli_inproc import cli, one_paragraph_error
from tests.helpers import REPO, evallab

SHA = "0123456789abcdef0123456789abcdef01234567"


def campaign(tmp_path: Path, models: str, tasks: str = "[demo_mc]", extra: str = "") -> Path:
    path = tmp_path / "campaign.yaml"
    path.write_text(
        f"name: c\ntasks_dir: {REPO / 'tasks_custom'}\n{extra}models:\n{models}"
        f"benchmarks:\n  - {{name: b, tasks: {tasks}}}\n"
    )
    return path


# ------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["nosuch"], "No such command 'nosuch'"),
        (["db", "nosuch"], "No such command 'nosuch'"),
        (["run"], "Missing argument 'campaign'"),
        (["pins", "check"], "Missing argument 'campaign'"),
        (["compare", "a"], "Missing argument 'run_b'"),
        (["run", "--bogus", "x.yaml"], "No such option: --bogus"),
        (["results", "--limit", "abc"], "Invalid value for '--limit'"),
    ],
)
def test_usage_errors_are_one_message_and_exit_2(args: list[str], says: str) -> None:
    rc, out = cli(args)
    assert rc == 2, out
    assert "Traceback" not in out
    assert out.count("Error:") == 1 and says in out
    assert "Try 'evallab" in out  # typer's usage hint, with the program's name


def test_usage_error_from_the_console_script() -> None:
    res = evallab(["run", "--bogus", "x.yaml"])
    assert res.returncode == 2
    assert "No such option: --bogus" in res.stderr and "Traceback" not in res.stderr


# --------------------------------------------------------------- user text is not markup


@pytest.mark.parametrize("value", ["[/x]", "[bold]", "model=[/x]"])
def test_values_that_look_like_markup_print_as_written(tmp_path: Path, value: str) -> None:
    # A missing campaign file, for `run`, `run --check`, `pins check` and `prefetch`.
    for args in (["run", value], ["run", "--check", value], ["pins", "check", value]):
        rc, out = cli(args)
        assert rc == 2
        assert f"Value: {value}." in one_paragraph_error(out)
    rc, out = cli(["prefetch", value])
    assert rc == 2 and f"Value: {value}." in one_paragraph_error(out)
    # Inside a campaign file: a repository id is quoted back in the validation error.
    path = campaign(
        tmp_path, f"  - {{name: m, source: hf, repo: '{value}/a/b', revision: {SHA}}}\n"
    )
    rc, out = cli(["run", "--check", str(path)])
    assert rc == 2 and f"'{value}/a/b'" in one_paragraph_error(out)


def test_compare_with_markup_in_a_selector(migrated_dsn: str) -> None:
    res = evallab(["compare", "model=[/x]", "model=[bold]"], dsn=migrated_dsn)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and res.stderr.startswith("error: ")


# -------------------------------------------------------------------------- revisions


def test_a_40_character_revision_that_is_not_hex_is_refused_up_front(tmp_path: Path) -> None:
    bad = "z" * 40
    path = campaign(tmp_path, f"  - {{name: m, source: hf, repo: org/model, revision: {bad}}}\n")
    for args in (["run", str(path)], ["pins", "check", str(path)], ["run", "--check", str(path)]):
        rc, out = cli(args)
        assert rc == 2
        text = one_paragraph_error(out)
        assert f"revision '{bad}' is not a commit sha" in text
        assert "40-character hex commit sha" in text


def test_a_branch_revision_is_refused_by_run_without_the_network(tmp_path: Path) -> None:
    path = campaign(tmp_path, "  - {name: m, source: hf, repo: org/model, revision: main}\n")
    rc, out = cli(["run", str(path)])
    assert rc == 2
    text = one_paragraph_error(out)
    assert "revision 'main' is not a commit sha" in text
    assert "m (org/model@main)" in text
    assert f"`evallab pins check {path}`" in text and "allow_unpinned: true" in text
    assert not (tmp_path / ".evallab").exists()


def test_pins_check_of_a_branch_with_the_hub_down_names_the_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    path = campaign(tmp_path, "  - {name: m, source: hf, repo: org/model, revision: main}\n")
    res = evallab(
        ["pins", "check", str(path)],
        env={"HF_ENDPOINT": url, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "0"},
    )
    assert res.returncode == 2
    text = one_paragraph_error(res.stderr)
    assert f"the Hugging Face hub at {url} can't be reached" in text and "org/model@main" in text


# ---------------------------------------------------------------- task YAMLs, file size


def test_a_task_yaml_with_a_syntax_error_is_named_with_its_line(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "mine.yaml").write_text("task: mine\ndataset_path: json\n  bad: [\n")
    path = tmp_path / "c.yaml"
    path.write_text(
        f"name: c\ntasks_dir: {tasks}\nmodels:\n  - {{name: t, source: tiny}}\n"
        "benchmarks:\n  - {name: b, tasks: [mine]}\n"
    )
    rc, out = cli(["run", "--check", str(path)])
    assert rc == 2
    text = one_paragraph_error(out)
    assert f"{tasks / 'mine.yaml'}, line 3, column 6: mapping values are not allowed" in text
    assert "did you mean" not in text and "unknown task" not in text


def test_a_campaign_file_over_the_limit_is_refused_before_parsing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("a: " + "x" * (1024 * 1024 + 10) + "\n")
    rc, out = cli(["run", "--check", str(big)])
    assert rc == 2
    text = one_paragraph_error(out)
    assert "1,048,590 bytes, over the limit of 1,048,576 bytes" in text
    assert "EVALLAB_MAX_CAMPAIGN_BYTES" in text
    ok = campaign(tmp_path, "  - {name: t, source: tiny}\n")
    monkeypatch.setenv("EVALLAB_MAX_CAMPAIGN_BYTES", "50")
    rc, out = cli(["run", "--check", str(ok)])
    assert rc == 2 and "over the limit of 50 bytes" in one_paragraph_error(out)
    monkeypatch.setenv("EVALLAB_MAX_CAMPAIGN_BYTES", "lots")
    rc, out = cli(["run", "--check", str(ok)])
    assert rc == 2 and "Value: lots." in one_paragraph_error(out)
    monkeypatch.delenv("EVALLAB_MAX_CAMPAIGN_BYTES")
    rc, out = cli(["run", "--check", str(ok)])
    assert rc == 0 and "campaign c is valid: 1 model(s)" in out


def test_a_campaign_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"name: \xff\xfe\n")
    rc, out = cli(["run", "--check", str(path)])
    assert rc == 2 and "not UTF-8 text (byte 6" in one_paragraph_error(out)


# ------------------------------------------------------------- texts name real commands


def _command_paths() -> dict[tuple[str, ...], set[str]]:
    """Every command path of the app (``("pins", "check")``) -> its option names."""
    found: dict[tuple[str, ...], set[str]] = {}

    def walk(cmd: object, path: tuple[str, ...]) -> None:
        params = getattr(cmd, "params", [])
        found[path] = {
            o
            for p in params
            for o in [*getattr(p, "opts", []), *getattr(p, "secondary_opts", [])]
            if o.startswith("-")
        }
        found[path] |= {"--help"}
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return found


# A command in backticks or quotes, or at the start of a shell line in the docs; the rest of
# the quoted span (its options) up to the closing quote.
_MENTION = re.compile(
    r"(?:[`'\"]|^\s*\$?\s*)evallab ((?:[a-z][a-z-]*)(?: [a-z][a-z-]*)?)([^`'\"\n]*)", re.M
)


def test_every_evallab_command_named_in_texts_exists() -> None:
    commands = _command_paths()
    files = [
        *sorted((REPO / "src").rglob("*.py")),
        *sorted((REPO / "docs").rglob("*.md")),
        REPO / "README.md",
    ]
    checked, wrong = 0, []
    for file in files:
        for match in _MENTION.finditer(file.read_text()):
            words = tuple(match.group(1).split())
            where = f"{file.relative_to(REPO)}: {match.group(0).strip()}"
            is_group = (words[0],) in commands and any(
                len(p) == 2 and p[0] == words[0] for p in commands
            )
            path = words if is_group else words[:1]
            if path not in commands:
                wrong.append(where)
                continue
            rest = match.group(2) if is_group or len(words) == 1 else words[1] + match.group(2)
            for option in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", rest):
                if option not in commands[path]:
                    wrong.append(f"{where} (no option {option})")
            checked += 1
    assert checked > 40  # the walk does find the docs' and fix texts' commands
    assert wrong == []


def test_the_walk_catches_commands_that_do_not_exist() -> None:
    commands = _command_paths()
    assert ("runs",) not in commands and ("pins", "check") in commands
    assert "--secret" not in commands[("webhook", "serve")]
    assert "--offline" in commands[("run",)] and ("prefetch",) in commands


def test_results_help_says_what_json_prints() -> None:
    rc, out = cli(["results", "--help"])
    assert rc == 0
    assert "JSON lines" not in out and "JSON array" in out


# ------------------------------------------------------------------ database went away


def test_a_failed_store_names_the_run_folder_and_evallab_ingest(tmp_path: Path) -> None:
    folder = tmp_path / "runs" / "abc"
    lost = DatabaseError("lost the connection to the results database: ConnectionResetError")
    err = stored_later(lost, folder)
    assert type(err) is DatabaseError
    assert f"kept in its folder {folder}" in err.message
    assert f"`evallab ingest {folder}`" in err.message
