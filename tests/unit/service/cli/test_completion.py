"""``pipesentry completion bash|zsh|fish``: scripts generated from the parser; the bash one is run in bash."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from service.cli import build_parser, main
from service.cli.completion_cmd import bash_script, fish_script, walk, zsh_script

BASH = shutil.which("bash")


def complete(script: Path, *words: str) -> list[str]:
    """What the generated bash function offers for the command line ``words`` (the last being typed)."""
    assert BASH is not None
    words_text = " ".join(f"'{w}'" for w in words)
    probe = (f"source {script}\nCOMP_WORDS=({words_text}); COMP_CWORD={len(words) - 1}\n"
             'COMPREPLY=(); _pipesentry; printf "%s\\n" "${COMPREPLY[@]}"\n')
    done = subprocess.run([BASH, "--noprofile", "--norc", "-c", probe], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line]


@pytest.mark.skipif(BASH is None, reason="no bash")
def test_bash_script_completes_commands_options_and_choices(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "bash"]) == 0
    script = tmp_path / "pipesentry.bash"
    script.write_text(capsys.readouterr().out)
    assert subprocess.run([BASH, "-n", str(script)], check=False, timeout=60).returncode == 0
    assert set(complete(script, "pipesentry", "")) >= {"run", "eval", "rules", "alerts", "silences", "completion"}
    assert complete(script, "pipesentry", "sil") == ["silences"]
    assert complete(script, "pipesentry", "silences", "") == ["list", "create", "expire", "-h", "--help"]
    assert complete(script, "pipesentry", "eval", "--format", "") == ["json", "table", "csv"]
    assert complete(script, "pipesentry", "alerts", "list", "--level", "c") == ["critical"]
    assert "--allow-bad-lines" in complete(script, "pipesentry", "eval", "--al")
    assert complete(script, "pipesentry", "eval", "--logsource", "") == []  # free text: nothing offered
    (tmp_path / "events.ndjson").write_text("")
    assert complete(script, "pipesentry", "eval", str(tmp_path / "ev")) == [str(tmp_path / "events.ndjson")]
    assert "--token" not in complete(script, "pipesentry", "alerts", "list", "--tok")  # hidden refusal


def test_zsh_and_fish_scripts() -> None:
    parser = build_parser()
    assert "bashcompinit" in zsh_script(parser) and "_pipesentry()" in zsh_script(parser)
    fish = fish_script(parser)
    assert "complete -c pipesentry -n __fish_use_subcommand -a alerts" in fish
    assert "complete -c pipesentry -n '__fish_seen_subcommand_from eval' -l format -x -a 'json table csv'" in fish
    assert "-l config -r -F" in fish
    assert bash_script(parser).endswith("complete -o filenames -F _pipesentry pipesentry\n")


def test_walk_sees_every_sub_command() -> None:
    paths = {node.path for node in walk(build_parser())}
    assert {"rules/check", "config/schema", "alerts/show", "silences/expire", "anomaly/replay"} <= paths


def test_unknown_shell_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["completion", "tcsh"])
    assert exc.value.code == 2
