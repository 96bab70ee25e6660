"""The command line itself: help texts, option placement and argument checks common to the commands."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from faststyle.cli import build_parser, main


def _help(capsys: pytest.CaptureFixture[str], *command: str) -> str:
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_every_command_and_target_has_help_that_ends_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    for name, command in commands.choices.items():
        text = _help(capsys, name)
        assert command.description, f"`faststyle {name}` has no description"
        assert "-v, --verbose" in text
        for action in command._actions:
            if getattr(action, "choices", None) and action.dest in ("action", "target"):
                for child in action.choices:
                    child_text = _help(capsys, name, child)
                    assert "``" not in child_text and "-v, --verbose" in child_text


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(found[0].choices) if found else {}


def test_every_option_the_readme_gives_a_command_exists() -> None:
    """Each ``faststyle COMMAND [TARGET] … --option`` in README.md (inline code and shell blocks) names an option that
    command has: the documentation cannot drift from the parser unnoticed."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = [block.replace("\\\n", " ") for block in re.findall(r"```bash\n(.*?)```", readme, re.S)]
    snippets = re.findall(r"`(faststyle [^`]+)`", readme) + [
        line for block in blocks for line in re.split(r"&&|\n", block) if "faststyle " in line
    ]
    commands = _subparsers(build_parser())
    checked = 0
    for snippet in snippets:
        words = snippet[snippet.index("faststyle ") :].split()[1:]
        if not words or words[0] not in commands:
            assert not words or words[0].startswith(("…", "-")), f"README: unknown command in {snippet!r}"
            continue
        parser, rest = commands[words[0]], words[1:]
        if rest and rest[0] in _subparsers(parser):
            parser, rest = _subparsers(parser)[rest[0]], rest[1:]
        for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", " ".join(rest)):
            if option not in parser._option_string_actions:
                pytest.fail(f"README: {option} is no option of {snippet!r}")
            checked += 1
    assert checked >= 40, checked  # the README's commands were found


def test_defaults_are_shown_as_typed(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys, "compare")
    assert "(default: vgg16,googlenet,alexnet)" in text and "(default: 100,300,500)" in text
    assert "seed of the training runs and of Gatys (default: 0)" in text
    assert "(default: feedforward)" in text


def test_verbose_before_or_after_the_command() -> None:
    parser = build_parser()
    assert parser.parse_args(["stylize", "-v", "--list"]).verbose is True
    assert parser.parse_args(["-v", "weights", "list"]).verbose is True
    assert parser.parse_args(["weights", "get", "vgg16", "--verbose"]).verbose is True
    assert parser.parse_args(["stylize", "--list"]).verbose is False


def test_out_of_range_strength_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as done:
        main(["stylize", "--model", "any", str(tmp_path), "--out", str(tmp_path), "--strength", "1.5"])
    assert done.value.code == 2
    assert "--strength: 1.5 is not between 0 and 1" in capsys.readouterr().err


def test_weights_cache_may_follow_the_action(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weights", "list", "--cache", str(tmp_path)]) == 0
    assert f"cache: {tmp_path}" in capsys.readouterr().out
    assert main(["weights", "--cache", str(tmp_path), "list"]) == 0
    assert f"cache: {tmp_path}" in capsys.readouterr().out


def test_a_kill_that_stopped_a_gatys_run_exits_as_a_kill(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """``gatys.Interrupted`` (Ctrl-C or kill, with the picture so far), reaching ``main`` from a command that does not
    unwrap it (compare's Gatys runs): SIGTERM's exit, not Ctrl-C's."""
    import torch

    import faststyle.commands.weights
    from faststyle.cli import Terminated
    from faststyle.gatys import Interrupted

    for reason, code, said in [(Terminated(), 143, "stopped (SIGTERM)"), (KeyboardInterrupt(), 130, "interrupted")]:
        stop = Interrupted(torch.zeros(1, 3, 4, 4), [{"total": 1.0}], reason)
        monkeypatch.setattr(faststyle.commands.weights, "_list", lambda args, stop=stop: (_ for _ in ()).throw(stop))
        assert main(["weights", "list"]) == code
        assert f"faststyle: {said}" in capsys.readouterr().err


def test_a_train_seed_out_of_lightnings_range_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``--seed $(date +%s%N)`` crashed with ValueError from seed_everything once the style and photos were read."""
    args = ["train", "--style", "s.jpg", "--data", str(tmp_path), "--out", str(tmp_path / "m.safetensors")]
    with pytest.raises(SystemExit) as done:
        main([*args, "--seed", "4294967296"])
    assert done.value.code == 2
    assert "--seed: 4294967296 is not a seed from 0 to 4294967295" in capsys.readouterr().err
