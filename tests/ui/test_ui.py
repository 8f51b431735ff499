"""plw.ui: the one progress bar is silent when disabled and shows an ETA column when enabled."""

from plw.ui import progress_bar, table


def test_disabled_bar_prints_nothing(capsys):
    with progress_bar(False, "work", 10) as bar:
        bar.advance(3)
        bar.update(completed=5, info="x", description="y")
    assert capsys.readouterr() == ("", "")


def test_enabled_bar_goes_to_stderr_with_an_eta_column(capsys):
    with progress_bar(True, "work", 4, transient=False) as bar:
        for _ in range(4):
            bar.advance(1)
        cols = [type(c).__name__ for c in bar._bar.columns]
    out, err = capsys.readouterr()
    assert out == "" and "work" in err and "4/4" in err
    assert "TimeRemainingColumn" in cols


def test_table_has_the_given_columns():
    t = table("a", "b", title="T")
    assert [c.header for c in t.columns] == ["a", "b"] and t.title == "T"
