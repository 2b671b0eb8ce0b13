"""Calling the CLI in-process and checking its one-line errors (shared by the CLI tests)."""

from streamsep.cli import main


def run_cli(capsys, *args):
    """(exit code, stderr) of main(); main returns normally on success (code 0)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def one_error(code, err, *needles):
    """The single 'error: ...' line of a failed run, which must name every needle."""
    assert code not in (0, None), err
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]
