"""The training bar: tqdm's widget in a Jupyter kernel (run through nbclient, no browser),
its text bar on a terminal, nothing when off or when stderr is not a terminal."""

from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from mlxp.nn import Dense, MLPClassifier, ReLU, Sequential
from mlxp.nn.callbacks import show_progress

tqdm = pytest.importorskip("tqdm")

ROOT = Path(__file__).resolve().parents[1]
WIDGET = "application/vnd.jupyter.widget-view+json"


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal, and keeps what is written to it."""

    def isatty(self) -> bool:
        return True


def _data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3))
    return X, (X[:, :1] > 0).astype(np.float64)


def _fit(progress, epochs=3, **kw):
    X, y = _data()
    model = Sequential([Dense(3, 4), ReLU(), Dense(4, 1)], seed=0)
    return model.fit(
        X, y, loss="mse", epochs=epochs, batch_size=8, progress=progress, **kw
    )  # 3 batches an epoch


def test_a_terminal_shows_the_bar_with_the_epoch_logs(monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    history = _fit("auto", metrics=("accuracy",))
    text = terminal.getvalue()
    assert "epoch 3/3" in text and "9/9" in text  # 3 epochs of 3 batches
    last = text.rsplit("\r", 1)[-1]
    fmt = tqdm.tqdm.format_num
    assert f"loss={fmt(history['loss'][-1])}" in last
    assert f"accuracy={fmt(history['accuracy'][-1])}" in last
    assert "time=" in last


@pytest.mark.parametrize("progress", [False, "auto"])
def test_no_bar_when_off_or_when_stderr_is_not_a_terminal(capsys, progress):
    _fit(progress)
    assert capsys.readouterr().err == ""


def test_progress_true_shows_the_bar_anywhere(capsys):
    _fit(True, epochs=2)
    assert "epoch 2/2" in capsys.readouterr().err


def test_the_bar_stops_where_early_stopping_stops(monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)

    class StopAtTwo:
        def on_train_begin(self, model):
            pass

        def on_epoch_end(self, model, epoch, logs):
            return epoch == 2

    _fit(True, epochs=5, callbacks=[StopAtTwo()])
    text = terminal.getvalue()
    assert "epoch 2/5" in text and "6/15" in text and "epoch 3/5" not in text


def test_estimators_show_it_with_verbose(monkeypatch):
    X, y = _data()
    for verbose, shown in ((False, False), (True, True), ("auto", True), (0, False)):
        terminal = _Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            MLPClassifier((3,), max_iter=2, verbose=verbose).fit(X, y[:, 0])
        assert ("epoch 2/2" in terminal.getvalue()) is shown, verbose


def test_show_progress_reads_the_setting():
    assert show_progress(True) and not show_progress(False) and not show_progress(0)
    assert show_progress("auto") is sys.stderr.isatty()  # no Jupyter kernel here


def test_a_notebook_shows_the_widget():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("ipywidgets")
    code = (
        "import numpy as np\n"
        "from mlxp.nn import Dense, Sequential\n"
        "from mlxp.nn.callbacks import show_progress\n"
        "X = np.random.default_rng(0).normal(size=(16, 2))\n"
        "history = Sequential([Dense(2, 1)], seed=0).fit(\n"
        "    X, X[:, :1], epochs=2, batch_size=8, progress='auto')\n"
        "print(show_progress('auto'), len(history['loss']))"
    )
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    client = nbclient.NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()
    outputs = notebook.cells[0].outputs
    assert any(WIDGET in out.get("data", {}) for out in outputs), outputs
    widget = next(out["data"][WIDGET] for out in outputs if WIDGET in out.get("data", {}))
    assert widget["model_id"]
    printed = "".join(out.get("text", "") for out in outputs if out.get("name") == "stdout")
    assert printed.strip() == "True 2"
